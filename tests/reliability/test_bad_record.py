"""A record that cannot be read: named before training by the prescan; without it, the run stops at the step that
reaches it, writing that step's checkpoint first, and resumes from it exactly once the file is fixed."""

from __future__ import annotations

import json
import random

import pytest
from hydra.errors import InstantiationException

from distil.run.checkpoint_io import read_checkpoint
from distil.train import train
from tests.conftest import compose_config
from tests.reliability.runs import train_losses
from tests.reliability.test_config_checks import compose_tiny
from tests.tiny_assets import WORDS

STEPS = 14
BAD_LINE = 40  # line of the record that is not JSON: read some steps into the run


def write_corpus(path, with_bad_record: bool) -> None:
    """60 short documents as .jsonl, the 40th line replaced by a broken record (which holds no document)."""
    rng = random.Random(0)
    lines = [json.dumps({"text": " ".join(rng.choices(WORDS, k=rng.randint(20, 40))) + "."}) for _ in range(60)]
    if with_bad_record:
        lines.insert(BAD_LINE - 1, '{"text": "cut short')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def overrides(teacher_dir, corpus: str, *extra: str) -> list[str]:
    return [
        f"teacher.name_or_path={teacher_dir}",
        "data=local_files",
        f"data.sources.0.paths={corpus}",
        "data.max_length=32",
        "data.batch_size=4",
        "data.val_batch_size=4",
        "data.num_workers=0",
        "data.val_documents=5",
        "data.documents_per_block=4",
        f"trainer.max_steps={STEPS}",
        "trainer.val_check_interval=100",
        "trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=1",
        "callbacks.model_checkpoint.every_n_train_steps=100",  # no periodic checkpoint before the failure
        "callbacks.progress_bar.refresh_rate=0",
        "logger=csv",
        *extra,
    ]


def test_the_prescan_names_the_bad_record_before_any_weights_load(tiny_teacher_dir, tmp_path, monkeypatch):
    from distil.modules import teacher as teacher_module

    write_corpus(tmp_path / "corpus.jsonl", with_bad_record=True)
    monkeypatch.setattr(teacher_module, "load_teacher", lambda *a, **k: pytest.fail("teacher loaded first"))
    cfg = compose_tiny(
        tiny_teacher_dir, tmp_path, tmp_path / "run", "data=local_files", f"data.sources.0.paths={tmp_path}/*.jsonl"
    )
    with pytest.raises(InstantiationException, match=rf"corpus.jsonl:{BAD_LINE} is not valid JSON"):  # Hydra wraps it
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_without_prescan_the_run_saves_the_step_it_reached_and_resumes_exactly_once_fixed(tiny_teacher_dir, tmp_path):
    """The runs are `distil.train`'s `train` in this process, as the 2000-step resume test runs them."""
    corpus = tmp_path / "corpus.jsonl"
    write_corpus(corpus, with_bad_record=True)
    run_dir = tmp_path / "run"

    def run(directory, *extra: str) -> None:
        train(compose_config("train", *overrides(tiny_teacher_dir, corpus, *extra), f"paths.output_dir={directory}"))

    with pytest.raises(ValueError, match=rf"corpus.jsonl:{BAD_LINE} is not valid JSON"):
        run(run_dir, "data.prescan=false")
    reached = max(train_losses(run_dir)) + 1  # steps completed (logged steps count from 0)
    assert 0 < reached < STEPS, reached
    saved = read_checkpoint(run_dir / "checkpoints" / "on_exception.ckpt")
    assert saved["global_step"] == reached
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["on_exception.ckpt"]

    write_corpus(corpus, with_bad_record=False)  # the same documents: the broken line held none
    run(run_dir, "data.prescan=false", "resume=auto")
    run(tmp_path / "reference")
    assert train_losses(run_dir) == pytest.approx(train_losses(tmp_path / "reference"), rel=1e-6)
