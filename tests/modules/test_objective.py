"""The objective: terms averaged over the rows they cover and weighted; a term defined here, in the test file alone,
trains through the plain and the chunked vocabulary path with equal losses and gradients."""

import functools

import pytest
import torch

from distil.modules.distillation import DistillationModule
from distil.modules.losses import reverse_kl_loss
from distil.modules.objective import (
    OBJECTIVE_KEYS,
    RENAMED_KEYS,
    TERMS,
    LogitsTerm,
    objective_weights,
    weighted_logits_loss,
)
from distil.modules.student import build_student
from distil.perf.step_speed import StepSpeed
from tests.conftest import compose_config, masked_batch, tiny_masked_lm


def test_terms_are_averaged_over_the_rows_they_cover_then_weighted():
    # Two terms on 4 rows, one masked row (row 2): row losses 1, 2, 3, 4 and 10, 20, 30, 40.
    first = LogitsTerm("first", 0.5, lambda s, t, y: torch.tensor([1.0, 2.0, 3.0, 4.0]))
    masked = LogitsTerm("masked", 2.0, lambda s, t, y: torch.tensor([10.0, 20.0, 30.0, 40.0]), masked_only=True)
    labels = torch.tensor([-100, -100, 7, -100])
    total, contributions = weighted_logits_loss([first, masked], None, None, labels, rows=4, masked_rows=1)
    assert contributions.tolist() == [2.5, 30.0]  # mean over all 4 rows; the masked row alone
    assert total.item() == 0.5 * 2.5 + 2.0 * 30.0
    _, of_a_chunk = weighted_logits_loss([first, masked], None, None, labels, rows=8, masked_rows=2)
    assert of_a_chunk.tolist() == [10 / 8, 30 / 2]  # a chunk's share of a batch of 8 rows, 2 masked


def make_module(vocab_chunk_rows, **kwargs) -> DistillationModule:
    teacher = tiny_masked_lm()
    torch.manual_seed(1)
    return DistillationModule(
        teacher=teacher,
        student=build_student(teacher),
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-2),
        extra_terms=[LogitsTerm("reverse_kl", 1.5, reverse_kl_loss)],
        speed=StepSpeed(vocab_chunk_rows=vocab_chunk_rows),
        **kwargs,
    )


@pytest.mark.parametrize("kl_positions", ["all", "masked"])
def test_a_new_term_trains_equally_through_the_plain_and_the_chunked_path(kl_positions):
    plain, chunked = make_module(None, kl_positions=kl_positions), make_module(5, kl_positions=kl_positions)
    chunked.student.load_state_dict(plain.student.state_dict())
    optimizers = [module.optimizer_factory(module.student.parameters()) for module in (plain, chunked)]
    for step in range(3):
        batch = masked_batch(seed=step)
        losses = []
        for module, optimizer in zip((plain, chunked), optimizers):
            torch.manual_seed(step)  # the same dropout in both
            losses.append(module.distillation_losses(batch))
            optimizer.zero_grad()
            losses[-1]["loss"].backward()
        for name in ("reverse_kl", "kl", "label", "cos", "loss"):
            assert losses[1][name].item() == pytest.approx(losses[0][name].item(), rel=1e-5), (step, name)
        for (name, got), expected in zip(chunked.student.named_parameters(), plain.student.parameters()):
            torch.testing.assert_close(got.grad, expected.grad, rtol=1e-4, atol=1e-6, msg=f"step {step}: {name}")
        for optimizer in optimizers:
            optimizer.step()
    assert losses[0]["reverse_kl"].item() > 0


def test_the_new_term_is_its_weighted_mean_over_the_kl_rows():
    module = make_module(None, kl_positions="all", alpha_kl=0.0, alpha_label=0.0, alpha_cos=0.0).eval()
    batch = masked_batch()
    with torch.no_grad():
        losses = module.distillation_losses(batch)
        real = batch["attention_mask"].bool()
        args = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        expected = reverse_kl_loss(
            module.student(**args).logits[real], module.teacher(**args).logits[real], None
        ).mean()
    assert set(losses) == {"reverse_kl", "loss"}  # a term of weight 0 is neither computed nor logged
    assert losses["reverse_kl"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert losses["loss"].item() == pytest.approx(1.5 * expected.item(), rel=1e-5)


@pytest.mark.parametrize(
    ("section", "old", "new"),
    [
        ("distill", "alpha_ce", "alpha_kl"),
        ("distill", "alpha_mlm", "alpha_label"),
        ("task_distillation", "alpha_soft", "alpha_kl"),
        ("task_distillation", "alpha_hard", "alpha_label"),
        ("task_distillation", "alpha_hidden", "alpha_cos"),
    ],
)
def test_a_key_of_the_previous_release_is_taken_under_its_new_name_with_a_warning(section, old, new):
    config = "train" if section == "distill" else "finetune"
    cfg = compose_config(config, f"{section}.{old}=0.25", *(["model=x"] if config == "finetune" else []))
    weights = {key: cfg[section][key] for key in (*OBJECTIVE_KEYS, *RENAMED_KEYS) if key in cfg[section]}
    with pytest.warns(FutureWarning, match=rf"{section}.{old} is renamed {section}.{new} .* this run uses {new}=0.25"):
        built = objective_weights(section, **weights)
    assert built.weight(new.removeprefix("alpha_")) == 0.25


def test_both_entry_points_name_the_terms_alike():
    """Pretraining and task distillation weigh and log the same terms under the same names."""
    train, finetune = compose_config("train").distill, compose_config("finetune", "model=x").task_distillation
    assert {key for key in train if key.startswith("alpha_")} >= {f"alpha_{name}" for name in TERMS}
    assert {key for key in finetune if key.startswith("alpha_")} - set(RENAMED_KEYS) == {
        "alpha_kl",
        "alpha_label",
        "alpha_cos",
    }
