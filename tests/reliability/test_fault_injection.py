"""Fault injection: each failure the reliability features guard against is provoked, and nothing that was already
written (checkpoints, their contents, the run directory) is lost or damaged by it.

Faults: SIGTERM mid-run; damaged newest checkpoints at resume; a checkpoint write interrupted midway; a streak of
NaN losses; a code-carrying checkpoint in the run directory; a bad config or a damaged ckpt_path on an existing run.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from distil.run.callbacks.nonfinite_guard import NonFiniteLossError, NonFiniteLossGuard
from distil.run.checkpoint_io import CheckpointError, atomic_torch_save, read_checkpoint
from distil.run.resume import find_resume_checkpoint
from distil.train import train
from tests.reliability.runs import CHECKPOINT_EVERY, MAX_STEPS, file_digests, run_in_dir, train_losses
from tests.reliability.test_checkpoint_io import corrupt, lightning_like
from tests.reliability.test_config_checks import compose_tiny
from tests.reliability.toy import OnStep, ToyRegression, toy_loader, toy_trainer


def checkpoint_digests(directory: Path) -> dict[str, str]:
    return {name: digest for name, digest in file_digests(directory).items() if name.endswith(".ckpt")}


def test_sigterm_keeps_every_file_written_before_it(preempted_run):
    after = file_digests(preempted_run.run_dir)
    written = {name for name in preempted_run.digests_at_signal if not name.endswith(".tmp")}  # .tmp: being written
    assert written <= set(after)
    for name, digest in preempted_run.digests_at_signal.items():
        if name.startswith("checkpoints/step"):
            assert after[name] == digest, name  # periodic checkpoints are never rewritten
    for path in (preempted_run.run_dir / "checkpoints").glob("*.ckpt"):
        read_checkpoint(path)  # every checkpoint on disk is complete
    assert not list(preempted_run.run_dir.rglob("*.tmp"))


@pytest.fixture(scope="module")
def resumed_over_damage(
    preempted_run, overrides, tmp_path_factory
) -> tuple[Path, dict[str, str], subprocess.CompletedProcess]:
    """The preempted run with its two newest checkpoints damaged (preempted.ckpt truncated, one byte of a weight
    in last.ckpt flipped), then resumed with resume=auto."""
    run_dir = tmp_path_factory.mktemp("damaged") / "run"
    shutil.copytree(preempted_run.run_dir, run_dir)
    corrupt(run_dir / "checkpoints" / "preempted.ckpt", "truncated")
    corrupt(run_dir / "checkpoints" / "last.ckpt", "flipped byte")
    before = checkpoint_digests(run_dir)
    return run_dir, before, run_in_dir(run_dir, [*overrides, "resume=auto"])


def test_resume_auto_skips_damaged_checkpoints_and_still_resumes_exactly(resumed_over_damage, uninterrupted_run):
    run_dir, before, result = resumed_over_damage
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    fallback = run_dir / "checkpoints" / f"step{CHECKPOINT_EVERY:07d}.ckpt"
    assert f"resume=auto skips {run_dir / 'checkpoints' / 'preempted.ckpt'}: " in output
    assert f"resume=auto skips {run_dir / 'checkpoints' / 'last.ckpt'}: " in output
    assert f"resume=auto: resuming from {fallback}" in output
    assert checkpoint_digests(run_dir)[f"checkpoints/{fallback.name}"] == before[f"checkpoints/{fallback.name}"]
    expected, resumed = train_losses(uninterrupted_run), train_losses(run_dir)
    after = range(CHECKPOINT_EVERY, MAX_STEPS)
    assert [resumed[step] for step in after] == [expected[step] for step in after]


def test_after_resuming_past_damaged_checkpoints_last_ckpt_is_the_final_step_and_alone(resumed_over_damage):
    run_dir, _, result = resumed_over_damage
    assert result.returncode == 0
    names = sorted(path.name for path in (run_dir / "checkpoints").iterdir())
    assert [name for name in names if name.startswith("last")] in (["last.ckpt"], ["last.ckpt", "last.ckpt.rewound"])
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == MAX_STEPS


def test_resuming_keeps_the_metrics_logged_before_the_interruption(resumed_over_damage):
    run_dir, _, result = resumed_over_damage
    assert result.returncode == 0
    assert set(range(CHECKPOINT_EVERY)) <= set(train_losses(run_dir))


def test_an_interrupted_checkpoint_write_keeps_the_checkpoints_already_written(tmp_path, monkeypatch):
    save = torch.save
    saves = {"count": 0}

    def fail_on_the_third_save(obj, file):
        saves["count"] += 1
        if saves["count"] == 3:
            file.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(28, "No space left on device")
        save(obj, file)

    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1, filename="{step}")
    monkeypatch.setattr(torch, "save", fail_on_the_third_save)
    with pytest.raises(OSError, match="No space left"):
        toy_trainer(tmp_path, 10, [checkpoints]).fit(ToyRegression(), toy_loader())
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step=2.ckpt", "step=4.ckpt"]
    assert [read_checkpoint(tmp_path / "ckpt" / f"step={s}.ckpt")["global_step"] for s in (2, 4)] == [2, 4]


def test_a_nan_streak_stops_training_and_keeps_every_checkpoint_already_written(tmp_path):
    digests: dict[str, str] = {}
    checkpoints = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1, save_last=True, filename="{step}"
    )
    record = OnStep(5, lambda trainer, pl_module: digests.update(checkpoint_digests(tmp_path / "ckpt")))
    with pytest.raises(NonFiniteLossError, match="3 optimizer steps in a row"):
        toy_trainer(tmp_path, 20, [NonFiniteLossGuard(max_consecutive=3), checkpoints, record]).fit(
            ToyRegression(nan_steps=range(5, 100)), toy_loader()
        )
    assert sorted(digests) == ["last.ckpt", "step=2.ckpt", "step=4.ckpt"]
    after = checkpoint_digests(tmp_path / "ckpt")
    assert all(after[name] == digest for name, digest in digests.items() if name != "last.ckpt")
    for path in (tmp_path / "ckpt").glob("*.ckpt"):  # including those written during the streak
        state = read_checkpoint(path)["state_dict"]
        assert all(torch.isfinite(tensor).all() for tensor in state.values()), path


def test_a_checkpoint_carrying_code_is_skipped_by_resume_auto_and_never_run(tmp_path):
    sentinel = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (sentinel, "ran"))

    atomic_torch_save(lightning_like(4), tmp_path / "step0000004.ckpt")
    torch.save({**lightning_like(9), "hyper_parameters": Payload()}, tmp_path / "last.ckpt")
    assert find_resume_checkpoint(tmp_path) == tmp_path / "step0000004.ckpt"
    assert not sentinel.exists()


@pytest.mark.parametrize(
    "fault", ["trainer.precision=16-mixed", "damaged ckpt_path", "no resume", "a student of 3 layers"]
)
def test_a_failing_relaunch_leaves_the_existing_run_untouched(
    fault, uninterrupted_run, tiny_teacher_dir, tiny_corpus_dir, tmp_path
):
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted_run, run_dir)
    damaged = tmp_path / "damaged.ckpt"
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", damaged)
    corrupt(damaged, "truncated")
    before = file_digests(run_dir)
    overrides, expected = {
        "trainer.precision=16-mixed": (["trainer.precision=16-mixed", "resume=auto"], "16-mixed"),
        "damaged ckpt_path": ([f"ckpt_path={damaged}"], str(damaged)),
        "no resume": ([], f"the run folder {run_dir / 'checkpoints'} already holds checkpoints"),
        "a student of 3 layers": (
            ["student.num_layers=3", "resume=auto"],
            "checkpoint has student.num_layers=None, the config 3 (student config distil_layer_map: checkpoint [0, 3]",
        ),
    }[fault]
    cfg = compose_tiny(tiny_teacher_dir, tiny_corpus_dir, run_dir, *overrides)
    with pytest.raises((ValueError, CheckpointError, FileExistsError)) as error:
        train(cfg)
    assert expected in str(error.value)
    assert file_digests(run_dir) == before
