"""The fast training step (host row index, no attention mask on full rows, chunked vocab loss, compile) computes the
same losses and gradients as the plain reference (full logits of every position, fp32, eager), for every family."""

import pytest
import torch

from distil.modules.row_index import IndexedBatch, RowIndex
from distil.perf.step_speed import StepSpeed
from tests.conftest import FAMILY_TYPES, masked_batch, tiny_masked_lm
from tests.modules.test_distillation import make_module, reference_losses

CHUNKED = StepSpeed(vocab_chunk_rows=7)


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
def test_fast_step_losses_equal_full_logits_reference(model_type, kl_positions, make_batch):
    module = make_module(tiny_masked_lm(model_type), kl_positions=kl_positions, temperature=2.0, speed=CHUNKED).eval()
    batch = make_batch()
    with torch.no_grad():
        losses = module.distillation_losses(batch, RowIndex.of(batch))
    expected = reference_losses(module, batch, kl_positions)
    for name in ("kl", "label", "cos"):
        assert losses[name].item() == pytest.approx(expected[name], rel=1e-5, abs=1e-6), name
    weighted = 5.0 * expected["kl"] + 2.0 * expected["label"] + 1.0 * expected["cos"]
    assert losses["loss"].item() == pytest.approx(weighted, rel=1e-5)


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
@pytest.mark.parametrize("kl_positions", ["all", "masked"])
def test_chunked_gradients_equal_the_all_logits_path(model_type, kl_positions):
    chunked = make_module(tiny_masked_lm(model_type), kl_positions=kl_positions, alpha_mse=0.5, speed=CHUNKED).eval()
    plain = make_module(tiny_masked_lm(model_type), kl_positions=kl_positions, alpha_mse=0.5).eval()
    plain.student.load_state_dict(chunked.student.state_dict())
    for batch in (masked_batch(seed=2), full_rows_batch(seed=3)):
        got, expected = student_gradients(chunked, batch), student_gradients(plain, batch)
        assert got.keys() == expected.keys()
        for name, grad in expected.items():
            torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_row_index_lists_flat_positions_and_detects_padding():
    padded = masked_batch()
    rows = RowIndex.of(padded)
    assert rows.masked.tolist() == torch.nonzero(padded["labels"].flatten() != -100).flatten().tolist()
    assert rows.masked.numel() == 9  # 3 masked positions in each of 3 rows
    assert rows.real.numel() == 3 * 16 - 5 and not rows.padding_free
    full = RowIndex.of(full_rows_batch())
    assert full.real is None and full.padding_free


def test_the_row_index_is_found_before_the_transfer_and_travels_beside_the_batch():
    batch = masked_batch()
    moved = make_module().transfer_batch_to_device(batch, torch.device("cpu"), 0)
    assert isinstance(moved, IndexedBatch) and sorted(moved.inputs) == ["attention_mask", "input_ids", "labels"]
    assert moved.rows.masked.shape == (9,) and moved.rows.real.shape == (43,)


@pytest.mark.parametrize(
    ("speed", "message"),
    [
        ({"vocab_chunk_rows": 0}, r"distill.speed.vocab_chunk_rows=0 is not allowed: use null or an integer >= 1"),
        ({"teacher_dtype": "float16"}, r"distill.speed.teacher_dtype='float16' is not allowed: use one of \['float32'"),
        ({"compile": "yes"}, r"distill.speed.compile='yes' is not allowed: use true or false"),
    ],
)
def test_bad_speed_options_are_named(speed, message):
    with pytest.raises(ValueError, match=message):
        StepSpeed(**speed)


@pytest.mark.parametrize("model_type", ["bert", "modernbert"])  # the two most different families (RoBERTa passes too)
def test_compiled_step_equals_eager(model_type, monkeypatch):
    """compile=true compiles both encoders, the cosine loss and the logits objective; traced through AOTAutograd (the
    `aot_eager` backend: inductor's code generation would take minutes on a CPU), the losses and gradients are the
    eager ones, for padded and full-row batches (the cosine loss sees two row counts)."""
    real_compile, calls = torch.compile, []

    def traced_compile(fn, dynamic=None):
        calls.append(dynamic)
        return real_compile(fn, backend="aot_eager", dynamic=dynamic)

    monkeypatch.setattr(torch, "compile", traced_compile)
    torch._dynamo.reset()
    compiled = make_module(tiny_masked_lm(model_type), speed=StepSpeed(vocab_chunk_rows=7, compile=True)).eval()
    eager = make_module(tiny_masked_lm(model_type), speed=CHUNKED).eval()
    eager.student.load_state_dict(compiled.student.state_dict())
    eager.teacher.load_state_dict(compiled.teacher.state_dict())
    assert calls == [None, None, None, False]  # encoders, cosine loss; the objective with static shapes
    for batch in (masked_batch(seed=4), full_rows_batch(seed=5)):
        with torch.no_grad():
            got, expected = compiled.distillation_losses(batch), eager.distillation_losses(batch)
        for name in ("kl", "label", "cos", "loss"):
            assert got[name].item() == pytest.approx(expected[name].item(), rel=1e-5), name
        got_grads, expected_grads = student_gradients(compiled, batch), student_gradients(eager, batch)
        for name, grad in expected_grads.items():
            torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
