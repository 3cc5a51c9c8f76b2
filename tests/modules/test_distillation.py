"""DistillationModule: the optimised step equals a plain full-logits reference; the teacher stays frozen."""

import functools

import pytest
import torch

from distil.modules.distillation import DistillationModule
from distil.modules.losses import cosine_hidden_loss, mlm_loss, soft_target_loss
from distil.modules.row_index import IndexedBatch, RowIndex
from distil.modules.student import build_student
from tests.conftest import masked_batch, tiny_masked_lm


def make_module(teacher=None, **kwargs) -> DistillationModule:
    teacher = teacher if teacher is not None else tiny_masked_lm()
    student = build_student(teacher)
    optimizer = functools.partial(torch.optim.AdamW, lr=1e-2)
    return DistillationModule(teacher=teacher, student=student, optimizer=optimizer, **kwargs)


def reference_losses(module: DistillationModule, batch, kl_positions: str) -> dict[str, float]:
    """The loss terms from the models' full outputs (every position projected to the vocabulary), then selected."""
    real = batch["attention_mask"].bool()
    masked = batch["labels"] != -100
    with torch.no_grad():
        t_out = module.teacher(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
        )
        s_out = module.student(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
        )
    kl_rows = real if kl_positions == "all" else masked
    temperature = module.hparams.temperature
    return {
        "kl": soft_target_loss(s_out.logits[kl_rows], t_out.logits[kl_rows], temperature).mean().item(),
        "label": mlm_loss(s_out.logits[masked], batch["labels"][masked]).mean().item(),
        "cos": cosine_hidden_loss(s_out.hidden_states[-1][real], t_out.hidden_states[-1][real]).mean().item(),
    }


@pytest.mark.parametrize("kl_positions", ["all", "masked"])
def test_losses_equal_full_logits_reference(kl_positions):
    module = make_module(kl_positions=kl_positions, temperature=3.0).eval()  # eval: no dropout, comparable
    batch = masked_batch()
    with torch.no_grad():
        losses = module.distillation_losses(batch)
    expected = reference_losses(module, batch, kl_positions)
    for name in ("kl", "label", "cos"):
        assert losses[name].item() == pytest.approx(expected[name], rel=1e-5, abs=1e-6), name
    weighted = 5.0 * expected["kl"] + 2.0 * expected["label"] + 1.0 * expected["cos"]
    assert losses["loss"].item() == pytest.approx(weighted, rel=1e-5)
    assert "mse" not in losses  # alpha_mse = 0: not computed


def test_kl_positions_change_the_soft_target_term():
    batch = masked_batch()
    all_positions = make_module(kl_positions="all").eval().distillation_losses(batch)["kl"]
    masked_only = make_module(kl_positions="masked").eval().distillation_losses(batch)["kl"]
    assert not torch.isclose(all_positions, masked_only)


def test_zero_alpha_terms_are_left_out_of_the_sum():
    module = make_module(alpha_kl=0.0, alpha_label=1.0, alpha_cos=0.0).eval()
    losses = module.distillation_losses(masked_batch())
    assert "kl" not in losses
    assert losses["loss"].item() == pytest.approx(losses["label"].item())


def test_teacher_frozen_in_eval_mode_and_unchanged_by_training():
    module = make_module()
    teacher_before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in module.student.state_dict().items()}
    module.train()
    assert module.student.training and not module.teacher.training
    assert not any(p.requires_grad for p in module.teacher.parameters())
    optimizer = module.optimizer_factory(module.student.parameters())
    for seed in range(3):
        loss = module.distillation_losses(masked_batch(seed=seed))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(torch.equal(v, teacher_before[k]) for k, v in module.teacher.state_dict().items())
    assert all(p.grad is None for p in module.teacher.parameters())
    assert not all(torch.equal(v, student_before[k]) for k, v in module.student.state_dict().items())
    optimized = sum(p.numel() for group in optimizer.param_groups for p in group["params"])
    assert optimized == sum(p.numel() for p in module.student.parameters())


def test_checkpoint_leaves_out_the_teacher_and_restores_strictly():
    module = make_module()
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert set(checkpoint["state_dict"]) == {f"student.{k}" for k in module.student.state_dict()}
    assert checkpoint["student_config"]["n_layers"] == 2
    restored = make_module(teacher=tiny_masked_lm(seed=0))
    restored.on_load_checkpoint(checkpoint)
    restored.load_state_dict(checkpoint["state_dict"], strict=True)
    for k, v in module.student.state_dict().items():
        assert torch.equal(restored.student.state_dict()[k], v)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": 0.0}, r"distill.temperature=0.0 is not allowed: it must be a finite number > 0"),
        ({"temperature": -1.0}, r"distill.temperature=-1.0"),
        ({"temperature": float("inf")}, r"distill.temperature=inf is not allowed: it must be a finite number > 0"),
        ({"temperature": "abc"}, r"distill.temperature='abc' is not allowed: it must be a finite number > 0"),
        ({"alpha_kl": -0.5}, r"distill.alpha_kl=-0.5 is not allowed: loss weights must be finite numbers >= 0"),
        ({"alpha_cos": float("nan")}, r"distill.alpha_cos=nan is not allowed"),
        ({"alpha_kl": 0.0, "alpha_label": 0.0, "alpha_cos": 0.0}, r"loss weights are all zero"),
        ({"kl_positions": "some"}, r"distill.kl_positions='some' is not allowed"),
        ({"warmup_fraction": 1.0}, r"distill.warmup_fraction=1.0 is not allowed: a number in \[0, 1\)"),
    ],
)
def test_bad_objective_values_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_module(**kwargs)


def test_validation_metrics_compare_student_and_teacher():
    module = make_module().eval()
    batch = masked_batch()
    logged = {}
    module.log_dict = lambda metrics, **_: logged.update({k: float(v) for k, v in metrics.items()})
    with torch.no_grad():
        module.validation_step(IndexedBatch(batch, RowIndex.of(batch)), 0)
    module.on_validation_epoch_end()
    masked = batch["labels"] != -100
    with torch.no_grad():
        t_logits = module.teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[masked]
        s_logits = module.student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[masked]
    labels = batch["labels"][masked]
    assert logged["val/teacher_mlm_loss"] == pytest.approx(mlm_loss(t_logits, labels).mean().item(), rel=1e-5)
    assert logged["val/student_mlm_acc"] == pytest.approx((s_logits.argmax(-1) == labels).float().mean().item())
    agreement = (s_logits.argmax(-1) == t_logits.argmax(-1)).float().mean().item()
    assert logged["val/top1_agreement"] == pytest.approx(agreement)
    assert logged["val/student_ppl"] == pytest.approx(torch.exp(mlm_loss(s_logits, labels).mean()).item(), rel=1e-5)
