"""Gradient accumulation: the LR schedule and the progress bar count optimizer steps (`trainer.max_steps`), not
micro-batches, and the `distil.optimizer_steps` resolver turns a budget of micro-batches into optimizer steps."""

import functools

import lightning.pytorch as pl
import pytest
import torch
from omegaconf import OmegaConf
from transformers import get_scheduler

from distil.run.callbacks.progress_bar import StepProgressBar
from tests.conftest import masked_batch
from tests.modules.test_distillation import make_module


class RecordStepLearningRate(pl.Callback):
    """The LR of each optimizer step, and how many micro-batches were trained."""

    def __init__(self) -> None:
        self.rates: dict[int, float] = {}
        self.micro_batches = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.micro_batches += 1

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.rates[trainer.global_step] = optimizer.param_groups[0]["lr"]


def test_the_lr_schedule_and_the_progress_bar_count_optimizer_steps_after_accumulation(tmp_path):
    module = make_module(scheduler=functools.partial(get_scheduler, "linear"), warmup_fraction=0.0)
    recorder, progress_bar = RecordStepLearningRate(), StepProgressBar()
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        max_steps=4,
        accumulate_grad_batches=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[recorder, progress_bar],
    )
    batches = [masked_batch(seed=seed) for seed in range(20)]
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    assert module.schedule_steps == 4 and recorder.micro_batches == 12
    assert recorder.rates == pytest.approx({0: 1e-2, 1: 0.75e-2, 2: 0.5e-2, 3: 0.25e-2})  # decays to 0 at step 4
    assert (progress_bar.train_progress_bar.n, progress_bar.train_progress_bar.total) == (4, 4)  # not 12 of 4


def test_a_budget_of_micro_batches_is_a_whole_number_of_optimizer_steps():
    cfg = OmegaConf.create(
        {"budget": 100, "accumulate": 4, "steps": "${distil.optimizer_steps:${budget},${accumulate}}"}
    )
    assert cfg.steps == 25
    cfg.accumulate = 3
    with pytest.raises(ValueError, match=r"100 micro-batches are not a whole number of optimizer steps of accumulate"):
        _ = cfg.steps
