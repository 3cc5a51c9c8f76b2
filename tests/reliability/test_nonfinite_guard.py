"""NonFiniteLossGuard: NaN/inf steps leave weights and Adam state untouched, are counted, and a streak stops
training. Each behaviour is checked with a plain AdamW (gradients dropped after a host check) and a fused AdamW
(the step skipped by the fused kernel's found_inf flag, the counts read back a step later without waiting)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from distil.modules.distillation import DistillationModule
from distil.run.callbacks.nonfinite_guard import NonFiniteLossError, NonFiniteLossGuard
from distil.train import train
from tests.reliability.test_config_checks import compose_tiny
from tests.reliability.toy import OnStep, ToyRegression, WeightsPerStep, toy_loader, toy_trainer

SKIP_PATHS = pytest.mark.parametrize("fused", [False, True], ids=["host_check", "fused_found_inf"])


@SKIP_PATHS
def test_nan_loss_steps_are_skipped_and_counted(tmp_path, fused):
    model, weights = ToyRegression(nan_steps={2, 3}, fused=fused), WeightsPerStep()
    guard = NonFiniteLossGuard(max_consecutive=3)
    trainer = toy_trainer(tmp_path, 8, [guard, weights])
    trainer.fit(model, toy_loader())

    assert trainer.global_step == 8  # skipped steps still count towards max_steps
    assert torch.equal(weights.weights[2], weights.weights[1]) and torch.equal(weights.weights[3], weights.weights[1])
    assert not torch.equal(weights.weights[4], weights.weights[3])  # training resumes after the bad steps
    assert torch.isfinite(model.layer.weight).all()
    adam_state = trainer.optimizers[0].state[model.layer.weight]
    assert int(adam_state["step"]) == 6  # 8 steps, 2 skipped: the moments never saw the bad steps
    assert float(trainer.callback_metrics["train/nonfinite_steps"]) == 2.0
    assert (guard.skipped_steps, guard.consecutive) == (2, 0)
    assert guard.state_dict() == {"skipped_steps": 2, "consecutive": 0}
    assert hasattr(trainer.optimizers[0], "found_inf") == fused  # which of the two skip paths ran


@SKIP_PATHS
def test_the_same_run_without_bad_steps_matches_the_guarded_run_up_to_the_first_bad_step(tmp_path, fused):
    """The guard changes nothing on good steps: the first two steps equal those of an unguarded run."""
    guarded, unguarded = WeightsPerStep(), WeightsPerStep()
    toy_trainer(tmp_path / "a", 4, [NonFiniteLossGuard(), guarded]).fit(
        ToyRegression(nan_steps={2}, fused=fused), toy_loader()
    )
    toy_trainer(tmp_path / "b", 4, [unguarded]).fit(ToyRegression(fused=fused), toy_loader())
    assert torch.equal(guarded.weights[1], unguarded.weights[1])
    assert not torch.equal(guarded.weights[3], unguarded.weights[3])  # step 2 was skipped in the guarded run only


@SKIP_PATHS
def test_non_finite_gradients_with_a_finite_loss_are_skipped(tmp_path, fused):
    def poison_gradient(trainer, pl_module):
        pl_module.layer.bias.register_hook(lambda grad: torch.full_like(grad, float("inf")))

    model, weights, guard = ToyRegression(fused=fused), WeightsPerStep(), NonFiniteLossGuard(max_consecutive=2)
    trainer = toy_trainer(tmp_path, 6, [guard, weights, OnStep(2, poison_gradient)])
    with pytest.raises(NonFiniteLossError, match=r"steps 2\.\.3"):
        trainer.fit(model, toy_loader())
    assert guard.skipped_steps == 2
    read_back_delay = 1 if fused else 0  # the fused path learns of step 3's skip at step 4
    assert len(weights.weights) == 3 + read_back_delay
    assert all(torch.equal(w, weights.weights[1]) for w in weights.weights[2:])  # steps 2 (and 3) skipped
    assert torch.isfinite(model.layer.weight).all()


@SKIP_PATHS
def test_a_streak_of_max_consecutive_bad_steps_stops_with_a_clear_error(tmp_path, fused):
    model = ToyRegression(nan_steps=range(3, 100), fused=fused)
    trainer = toy_trainer(tmp_path, 20, [NonFiniteLossGuard(max_consecutive=4)])
    with pytest.raises(NonFiniteLossError) as error:
        trainer.fit(model, toy_loader())
    message = str(error.value)
    assert "4 optimizer steps in a row" in message and "max_consecutive=4" in message and "steps 3..6" in message
    # steps 0, 1, 2 trained; 3, 4, 5 skipped; the 4th bad step (6) stopped it, or step 7 when read back a step later
    assert trainer.global_step == (7 if fused else 6)
    assert torch.isfinite(model.layer.weight).all()


def test_a_streak_that_ends_the_run_is_still_caught_on_the_fused_path(tmp_path):
    """The last steps' counts are read back at the end of training."""
    model, guard = ToyRegression(nan_steps={4, 5}, fused=True), NonFiniteLossGuard(max_consecutive=2)
    trainer = toy_trainer(tmp_path, 6, [guard])
    with pytest.raises(NonFiniteLossError, match=r"steps 4\.\.5"):
        trainer.fit(model, toy_loader())


@SKIP_PATHS
def test_a_run_whose_every_step_was_skipped_fails_instead_of_finishing(tmp_path, fused):
    trainer = toy_trainer(tmp_path, 3, [NonFiniteLossGuard(max_consecutive=10)])
    with pytest.raises(NonFiniteLossError, match=r"no optimizer step was applied: all 3 steps of the run"):
        trainer.fit(ToyRegression(nan_steps=range(100), fused=fused), toy_loader())


def test_train_applying_no_step_fails_and_exports_no_student(tiny_teacher_dir, tiny_corpus_dir, tmp_path, monkeypatch):
    training_step = DistillationModule.training_step

    def nan_loss(self, batch, batch_idx):  # every loss NaN, as with distill.temperature=inf
        return training_step(self, batch, batch_idx) * float("nan")

    monkeypatch.setattr(DistillationModule, "training_step", nan_loss)
    run = ["trainer.max_steps=3", "trainer.val_check_interval=3", "data.num_workers=0", "data.batch_size=4"]
    cfg = compose_tiny(tiny_teacher_dir, tiny_corpus_dir, tmp_path, *run, "data.val_documents=5")
    with pytest.raises(NonFiniteLossError, match="no optimizer step was applied: all 3 steps"):
        train(cfg)
    assert not (tmp_path / "student").exists()


def test_counts_are_saved_in_checkpoints_and_restored():
    guard = NonFiniteLossGuard(max_consecutive=5)
    guard.skipped_steps, guard.consecutive = 7, 2
    restored = NonFiniteLossGuard(max_consecutive=5)
    restored.load_state_dict(guard.state_dict())
    assert (restored.skipped_steps, restored.consecutive) == (7, 2)


@pytest.mark.parametrize("value", [0, -1, 2.5])
def test_max_consecutive_must_be_a_positive_integer(value):
    with pytest.raises(ValueError, match=f"callbacks.nonfinite_guard.max_consecutive={value}"):
        NonFiniteLossGuard(max_consecutive=value)


def test_with_an_fp16_grad_scaler_overflowing_gradients_are_left_to_the_scaler():
    trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=torch.amp.GradScaler("cpu")), global_step=0)
    weight = torch.nn.Parameter(torch.ones(2))
    weight.grad = torch.tensor([float("inf"), 1.0])
    optimizer = torch.optim.AdamW([weight])
    guard = NonFiniteLossGuard(max_consecutive=3)

    guard.on_before_backward(trainer, None, torch.tensor(1.5))
    guard.on_before_optimizer_step(trainer, None, optimizer)
    assert guard.skipped_steps == 0 and weight.grad is not None  # the scaler will skip this step and lower its scale

    guard.on_before_backward(trainer, None, torch.tensor(float("nan")))
    guard.on_before_optimizer_step(trainer, None, optimizer)
    assert guard.skipped_steps == 1 and weight.grad is None  # a NaN loss is still caught
