"""`distill.low_precision_layer_norm`: LayerNorms in the autocast dtype, so the residual stream stays bf16."""

import pytest
import torch
from torch import nn

from distil.modules.low_precision_layer_norm import LowPrecisionLayerNorm, use_low_precision_layer_norm
from distil.modules.student import build_student
from tests.conftest import masked_batch, tiny_masked_lm
from tests.modules.test_distillation import make_module, reference_losses

BF16_AUTOCAST = {"device_type": "cpu", "dtype": torch.bfloat16}


def layer_norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.LayerNorm)]


def test_replaces_every_layer_norm_of_both_models_and_keeps_their_parameters():
    teacher = tiny_masked_lm()
    student = build_student(teacher)
    expected_counts = (2 * teacher.config.num_hidden_layers + 2, 2 * student.config.n_layers + 2)
    for model, expected in zip((teacher, student), expected_counts, strict=True):
        before = model.state_dict(keep_vars=True)
        assert use_low_precision_layer_norm(model) == expected  # embeddings, 2 per layer, the MLM head's
        after = model.state_dict(keep_vars=True)
        assert after.keys() == before.keys()
        assert all(after[name] is tensor for name, tensor in before.items())  # the same Parameter objects
        assert [type(m) for m in layer_norms(model)] == [LowPrecisionLayerNorm] * expected


def test_is_plain_layer_norm_outside_autocast_and_bf16_inside():
    plain = nn.LayerNorm(8)
    nn.init.normal_(plain.weight), nn.init.normal_(plain.bias)
    low = nn.Sequential(plain)
    use_low_precision_layer_norm(low)
    hidden = torch.randn(4, 8)
    assert torch.equal(low(hidden), plain.forward(hidden))
    with torch.autocast(**BF16_AUTOCAST):
        assert plain(hidden).dtype == torch.float32  # nn.LayerNorm keeps an fp32 input's fp32 under autocast
        out = low(hidden)
    assert out.dtype == torch.bfloat16
    expected = nn.functional.layer_norm(hidden.bfloat16(), (8,), plain.weight.bfloat16(), plain.bias.bfloat16())
    assert torch.equal(out, expected)


@pytest.mark.parametrize("low_precision", [False, True])
def test_encoders_return_bf16_hidden_states_under_autocast_only_when_on(low_precision):
    module = make_module(low_precision_layer_norm=low_precision).eval()
    batch = masked_batch()
    with torch.no_grad(), torch.autocast(**BF16_AUTOCAST):
        student = module.student_encoder(batch["input_ids"], batch["attention_mask"])
        teacher = module.teacher_encoder(batch["input_ids"], batch["attention_mask"])
    expected = torch.bfloat16 if low_precision else torch.float32
    assert (student.dtype, teacher.dtype) == (expected, expected)


def perturbed_student_state(module, seed: int = 5) -> dict[str, torch.Tensor]:
    """The student's weights plus noise, so that the KL and cosine terms are not ~0 as at initialisation."""
    generator = torch.Generator().manual_seed(seed)
    return {
        name: value + 0.02 * torch.randn(value.shape, generator=generator) if value.is_floating_point() else value
        for name, value in module.student.state_dict().items()
    }


@pytest.mark.parametrize("kl_positions", ["all", "masked"])
def test_losses_and_gradients_stay_within_bf16_rounding_of_fp32(kl_positions):
    fp32 = make_module(kl_positions=kl_positions).eval()
    low = make_module(kl_positions=kl_positions, low_precision_layer_norm=True, vocab_chunk_rows=7).eval()
    state = perturbed_student_state(fp32)
    fp32.student.load_state_dict(state)
    low.student.load_state_dict(state)
    batch = masked_batch()
    expected = reference_losses(fp32, batch, kl_positions)
    with torch.autocast(**BF16_AUTOCAST):
        losses = low.distillation_losses(batch)
    for name in ("ce", "mlm", "cos"):
        # 1 - cos of nearly parallel bf16 vectors moves by ~1e-4 (measured 3e-4 at most of 0 ... 2)
        assert losses[name].item() == pytest.approx(expected[name], rel=0.03, abs=5e-4), name

    losses["loss"].backward()
    fp32.distillation_losses(batch)["loss"].backward()
    assert all(p.grad.dtype == torch.float32 for p in low.student.parameters())  # fp32 weights, fp32 gradients
    got = torch.cat([p.grad.flatten() for p in low.student.parameters()])
    want = torch.cat([p.grad.flatten() for p in fp32.student.parameters()])
    assert (got - want).norm() / want.norm() < 0.02  # measured 0.9% (bf16 autocast alone: 0.5%)


def test_compiles_as_one_graph_under_autocast():
    module = make_module(low_precision_layer_norm=True).eval()
    batch = masked_batch()
    with torch.autocast(**BF16_AUTOCAST):
        explained = torch._dynamo.explain(module.student_encoder)(batch["input_ids"], batch["attention_mask"])
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
