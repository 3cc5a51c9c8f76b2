"""The LR schedule (transformers' linear warm-up and decay, warm-up as a fraction of the run) and how a resume with
another run length continues it."""

import functools
import logging

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from transformers import get_scheduler

from tests.conftest import masked_batch
from tests.modules.test_distillation import make_module

LR = 1e-2


class RecordLearningRate(pl.Callback):
    """The LR each optimizer step uses, by global step."""

    def __init__(self) -> None:
        self.rates: dict[int, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.rates[trainer.global_step] = trainer.optimizers[0].param_groups[0]["lr"]


def fit(root, max_steps: int, ckpt_path=None, warmup_fraction: float = 0.0) -> dict[int, float]:
    """Train `max_steps` steps (checkpoints `step=N.ckpt` every 2 under `root`); the LR of each step trained."""
    module = make_module(scheduler=functools.partial(get_scheduler, "linear"), warmup_fraction=warmup_fraction)
    module.optimizer_factory = functools.partial(torch.optim.AdamW, lr=LR)
    recorder = RecordLearningRate()
    trainer = pl.Trainer(
        default_root_dir=root,
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder, ModelCheckpoint(root, "{step}", every_n_train_steps=2, save_top_k=-1)],
    )
    batches = [masked_batch(seed=seed) for seed in range(max_steps)]
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None), ckpt_path=ckpt_path)
    return recorder.rates


def test_the_warm_up_is_its_fraction_of_the_optimizer_steps_then_the_lr_decays_to_zero(tmp_path):
    # 8 steps, 25% warm-up = 2 steps: LR x 0, 1/2, then (8 - s) / 6 for s = 2 .. 7
    expected = {0: 0.0, 1: 0.5 * LR} | {step: (8 - step) / 6 * LR for step in range(2, 8)}
    assert fit(tmp_path, 8, warmup_fraction=0.25) == pytest.approx(expected, rel=1e-12)


def test_a_longer_resumed_run_follows_its_own_schedule_from_the_first_step_with_a_warning(tmp_path, caplog):
    assert fit(tmp_path, 4) == pytest.approx({0: LR, 1: 0.75 * LR, 2: 0.5 * LR, 3: 0.25 * LR})

    with caplog.at_level(logging.WARNING, logger="distil.modules.distillation"):
        resumed = fit(tmp_path / "longer", 6, ckpt_path=tmp_path / "step=4.ckpt")

    # the 6-step schedule at steps 4 and 5, not the 0.0 the 4-step schedule left in the optimizer
    assert resumed == pytest.approx({4: 2 / 6 * LR, 5: 1 / 6 * LR}, rel=1e-12)
    assert "LR schedule length changed since the checkpoint (saved 4 optimizer steps, now 6" in caplog.text


def test_a_resume_of_the_same_length_keeps_the_schedule_exactly_and_warns_nothing(tmp_path, caplog):
    uninterrupted = fit(tmp_path, 4)
    with caplog.at_level(logging.WARNING, logger="distil.modules.distillation"):
        resumed = fit(tmp_path / "resumed", 4, ckpt_path=tmp_path / "step=2.ckpt")
    assert resumed == {2: uninterrupted[2], 3: uninterrupted[3]} == {2: 0.5 * LR, 3: 0.25 * LR}  # bitwise
    assert "LR schedule length changed" not in caplog.text
