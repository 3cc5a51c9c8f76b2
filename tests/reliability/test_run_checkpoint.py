"""The run's checkpoint callback as configured (conf/callbacks/default.yaml): the final step is always saved, and a
resumed run keeps one last.ckpt, the newest state (never a last-v1.ckpt beside a stale last.ckpt)."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate

from distil.run.checkpoint_io import peek_checkpoint
from distil.run.resume import tidy_checkpoint_folder
from tests.conftest import compose_config
from tests.reliability.toy import ToyRegression, toy_loader, toy_trainer


def configured_checkpoints(directory: Path, every: int):
    cfg = compose_config(
        "train",
        f"callbacks.model_checkpoint.dirpath={directory}",
        f"callbacks.model_checkpoint.every_n_train_steps={every}",
    )
    return instantiate(cfg.callbacks.model_checkpoint)


def steps_on_disk(directory: Path) -> dict[str, int]:
    return {path.name: int(peek_checkpoint(path)["global_step"]) for path in sorted(directory.glob("*.ckpt"))}


def test_the_final_step_is_checkpointed_when_max_steps_is_not_a_multiple_of_the_interval(tmp_path):
    toy_trainer(tmp_path, 6, [configured_checkpoints(tmp_path / "ckpt", every=4)]).fit(ToyRegression(), toy_loader())
    assert steps_on_disk(tmp_path / "ckpt") == {"last.ckpt": 6, "step0000004.ckpt": 4}


def test_a_resume_from_an_older_checkpoint_keeps_one_last_ckpt_with_the_newest_state(tmp_path):
    directory = tmp_path / "ckpt"
    toy_trainer(tmp_path, 8, [configured_checkpoints(directory, every=4)]).fit(ToyRegression(), toy_loader())
    resumed = str(directory / "step0000004.ckpt")  # written before any last.ckpt existed
    tidy_checkpoint_folder(directory, resumed)  # what distil.train does before fitting
    toy_trainer(tmp_path, 10, [configured_checkpoints(directory, every=4)]).fit(
        ToyRegression(), toy_loader(), ckpt_path=resumed
    )
    assert steps_on_disk(directory) == {"last.ckpt": 10, "step0000004.ckpt": 4, "step0000008.ckpt": 8}
