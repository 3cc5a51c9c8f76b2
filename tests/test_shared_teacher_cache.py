"""The README's teacher-cache commands on the shared BERT teacher, on shards of a small slice of the shared text:
`distil.cache_teacher` writes the teacher's top-32 outputs at the masked positions, and `distil.train data=shards
distill.teacher_cache=...` trains a student from them (2 steps), whose soft-target term is the cached KL."""

from __future__ import annotations

import pytest

from distil.data.sources import LocalFiles
from distil.prepare import prepare
from distil.topk_cache.store import read_cache_metadata
from distil.train import train
from tests.conftest import assert_logged_terms_weigh_into_the_loss, compose_config, run_cli, shared_assets_dir

pytestmark = pytest.mark.shared
TEACHER = "models/bert-teacher-12x256"
TEXT = "data/corpus/wikipedia/wikitext2-valid.txt"


def test_cache_the_shared_teacher_then_train_from_the_cache(tmp_path):
    teacher, text = shared_assets_dir() / TEACHER, shared_assets_dir() / TEXT
    if not teacher.is_dir() or not text.is_file():
        pytest.skip(f"shared teacher or text not found under {shared_assets_dir()} (set DISTIL_SHARED)")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(text.read_text(encoding="utf-8").splitlines()[:300]), encoding="utf-8")
    shards, cache = tmp_path / "shards", tmp_path / "cache"
    prepare(str(teacher), [LocalFiles(str(corpus))], [], str(shards), val_documents=2, seed=0, num_proc=1)
    settings = ["max_length=64", "mlm_smoothing=null", "kl_positions=masked", "num_workers=0"]
    arguments = [f"shards={shards}", f"teacher.name_or_path={teacher}", "topk=32", f"out={cache}", *settings]
    result = run_cli(tmp_path, *arguments, f"hydra.run.dir={tmp_path / 'log'}", module="distil.cache_teacher")
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_cache_metadata(cache)["shape"]["k"] == 32

    run_dir = tmp_path / "run"
    overrides = [
        "experiment=demo", "data=shards", f"data.shards_dir={shards}", "data.max_length=64", "data.batch_size=4",
        "data.val_batch_size=4", "data.num_workers=0", "data.mlm_smoothing=null", f"distill.teacher_cache={cache}",
        "distill.alpha_cos=0", "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=1", "logger=csv", f"paths.output_dir={run_dir}",
    ]  # fmt: skip
    train(compose_config("train", *overrides))
    assert_logged_terms_weigh_into_the_loss(run_dir, 2, {"kl": 5.0, "label": 2.0})
    assert (run_dir / "student" / "config.json").is_file()
