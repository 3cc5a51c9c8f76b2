"""The LR schedule (linear warm-up, linear decay to 0) and how a resume with another run length continues it."""

import functools
import logging

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from distil.modules.schedule import warmup_linear_decay
from tests.conftest import masked_batch
from tests.modules.test_distillation import make_module

LR = 1e-2


def one_parameter_optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)


def learning_rates(total_steps: int, warmup_fraction: float, steps: int) -> list[float]:
    """The LR of each of the first `steps` optimizer steps."""
    optimizer = one_parameter_optimizer()
    scheduler = warmup_linear_decay(optimizer, total_steps, warmup_fraction)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_warms_up_linearly_then_decays_linearly_to_zero_at_the_last_step():
    # 20 steps, 10% warm-up = 2 steps: LR x 1/2, 2/2, then (20 - s) / 18 for s = 2 .. 19
    expected = [0.5, 1.0] + [(20 - step) / 18 for step in range(2, 20)] + [0.0]
    assert learning_rates(20, 0.1, 21) == pytest.approx([LR * m for m in expected], rel=1e-12)


def test_no_warm_up_starts_at_the_peak():
    assert learning_rates(4, 0.0, 4) == pytest.approx([LR, 0.75 * LR, 0.5 * LR, 0.25 * LR], rel=1e-12)


@pytest.mark.parametrize(("total_steps", "warmup_fraction"), [(0, 0.05), (10, 1.0), (10, -0.1)])
def test_bad_arguments_are_refused(total_steps, warmup_fraction):
    with pytest.raises(ValueError, match=rf"{'total_steps' if total_steps < 1 else 'warmup_fraction'}="):
        warmup_linear_decay(one_parameter_optimizer(), total_steps, warmup_fraction)


class RecordLearningRate(pl.Callback):
    """The LR each optimizer step uses, by global step."""

    def __init__(self) -> None:
        self.rates: dict[int, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.rates[trainer.global_step] = trainer.optimizers[0].param_groups[0]["lr"]


def fit(root, max_steps: int, ckpt_path=None) -> dict[int, float]:
    """Train `max_steps` steps (checkpoints `step=N.ckpt` every 2 under `root`); the LR of each step trained."""
    module = make_module(scheduler=functools.partial(warmup_linear_decay, warmup_fraction=0.0))
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
