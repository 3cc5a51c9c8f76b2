"""The optimised training step (host row index, no attention mask on full rows, chunked vocab loss) computes the same
losses and gradients as the plain reference (full logits of every position, fp32, eager), for every model family."""

import pytest
import torch

from distil.modules.row_index import row_index_of, with_row_index
from tests.conftest import FAMILY_TYPES, masked_batch, tiny_masked_lm
from tests.modules.test_distillation import make_module, reference_losses

OPTIMISED = {"row_index_on_host": True, "skip_full_attention_mask": True, "vocab_chunk_rows": 7}
PLAIN = {"row_index_on_host": False, "skip_full_attention_mask": False, "vocab_chunk_rows": None}


def full_rows_batch(seed: int = 1) -> dict[str, torch.Tensor]:
    batch = masked_batch(seed=seed)
    batch["attention_mask"] = torch.ones_like(batch["attention_mask"])
    return batch


def student_gradients(module, batch) -> dict[str, torch.Tensor]:
    module.student.zero_grad()
    module.distillation_losses(batch)["loss"].backward()
    return {name: p.grad.clone() for name, p in module.student.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
@pytest.mark.parametrize("kl_positions", ["all", "masked"])
@pytest.mark.parametrize("make_batch", [masked_batch, full_rows_batch], ids=["padded", "full_rows"])
def test_optimised_losses_equal_full_logits_reference(model_type, kl_positions, make_batch):
    teacher = tiny_masked_lm(model_type)
    module = make_module(teacher, kl_positions=kl_positions, temperature=2.0, **OPTIMISED).eval()
    batch = make_batch()
    with torch.no_grad():
        losses = module.distillation_losses(with_row_index(batch))
    expected = reference_losses(module, batch, kl_positions)
    for name in ("ce", "mlm", "cos"):
        assert losses[name].item() == pytest.approx(expected[name], rel=1e-5, abs=1e-6), name
    weighted = 5.0 * expected["ce"] + 2.0 * expected["mlm"] + 1.0 * expected["cos"]
    assert losses["loss"].item() == pytest.approx(weighted, rel=1e-5)


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
@pytest.mark.parametrize("kl_positions", ["all", "masked"])
def test_optimised_gradients_equal_plain_path(model_type, kl_positions):
    optimised = make_module(tiny_masked_lm(model_type), kl_positions=kl_positions, alpha_mse=0.5, **OPTIMISED).eval()
    plain = make_module(tiny_masked_lm(model_type), kl_positions=kl_positions, alpha_mse=0.5, **PLAIN).eval()
    plain.student.load_state_dict(optimised.student.state_dict())
    for batch in (masked_batch(seed=2), full_rows_batch(seed=3)):
        got = student_gradients(optimised, with_row_index(batch))
        expected = student_gradients(plain, batch)
        assert got.keys() == expected.keys()
        for name, grad in expected.items():
            torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_row_index_lists_flat_positions_and_detects_padding():
    padded = masked_batch()
    rows = row_index_of(with_row_index(padded))
    assert rows.masked.tolist() == torch.nonzero(padded["labels"].flatten() != -100).flatten().tolist()
    assert rows.masked.numel() == 9  # 3 masked positions in each of 3 rows
    assert rows.real.numel() == 3 * 16 - 5 and not rows.padding_free
    full = row_index_of(with_row_index(full_rows_batch()))
    assert full.real is None and full.padding_free


def test_host_row_index_is_added_before_transfer():
    module = make_module(**OPTIMISED)
    moved = module.transfer_batch_to_device(masked_batch(), torch.device("cpu"), 0)
    assert moved["masked_index"].shape == (9,) and moved["real_index"].shape == (43,)
    plain = make_module(**PLAIN).transfer_batch_to_device(masked_batch(), torch.device("cpu"), 0)
    assert "masked_index" not in plain


def test_vocab_chunk_rows_must_be_positive():
    with pytest.raises(ValueError, match=r"distill.vocab_chunk_rows=0 is not allowed"):
        make_module(vocab_chunk_rows=0)


@pytest.mark.parametrize("model_type", ["bert", "modernbert"])  # the two most different families (RoBERTa passes too)
def test_compiled_step_equals_eager_and_passes_the_mode(model_type, monkeypatch):
    """compile=true compiles both encoders, the cosine loss and the logits objective in `compile_mode`; traced through
    AOTAutograd (the `aot_eager` backend: inductor's code generation would take minutes on a CPU), the losses and
    gradients are the eager ones, for padded and full-row batches (the cosine loss sees two row counts)."""
    real_compile, calls = torch.compile, []

    def traced_compile(fn, mode=None, dynamic=None):
        calls.append((mode, dynamic))
        return real_compile(fn, backend="aot_eager", dynamic=dynamic)

    monkeypatch.setattr(torch, "compile", traced_compile)
    torch._dynamo.reset()
    compiled = make_module(
        tiny_masked_lm(model_type), compile=True, compile_mode="max-autotune-no-cudagraphs", **OPTIMISED
    ).eval()
    eager = make_module(tiny_masked_lm(model_type), **OPTIMISED).eval()
    eager.student.load_state_dict(compiled.student.state_dict())
    eager.teacher.load_state_dict(compiled.teacher.state_dict())
    assert calls == [("max-autotune-no-cudagraphs", None)] * 3 + [("max-autotune-no-cudagraphs", False)]
    for batch in (masked_batch(seed=4), full_rows_batch(seed=5)):
        batch = with_row_index(batch)
        with torch.no_grad():
            got, expected = compiled.distillation_losses(batch), eager.distillation_losses(batch)
        for name in ("ce", "mlm", "cos", "loss"):
            assert got[name].item() == pytest.approx(expected[name].item(), rel=1e-5), name
        got_grads, expected_grads = student_gradients(compiled, batch), student_gradients(eager, batch)
        for name, grad in expected_grads.items():
            torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_compile_mode_must_be_a_torch_compile_mode():
    with pytest.raises(ValueError, match=r"distill.compile_mode='fast' is not allowed: use one of \['default'"):
        make_module(compile=True, compile_mode="fast")
