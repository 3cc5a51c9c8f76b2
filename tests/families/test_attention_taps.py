"""Taps on the attention of every family: what they record is the attention the model computed (the eager attention
maps of a copy of the model, at the real query rows), and installing them changes neither the model's output nor its
saved config."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from distil.families import model_parts
from distil.families.attention_taps import AttentionTaps
from distil.modules.losses import attention_log_probs
from distil.modules.student import build_student
from tests.conftest import (
    CAUSAL_TYPES,
    FAMILY_TYPES,
    masked_batch,
    perturbed,
    tiny_causal_config,
    tiny_language_model,
    tiny_masked_lm,
)

# every teacher family and causal layout, and DistilBERT: the BERT family's students have their own attention module
MODEL_TYPES = FAMILY_TYPES + CAUSAL_TYPES + ("distilbert",)
TAPPED = (1, 3)  # ModernBERT: a local layer and a global one; Qwen2: a full layer and a sliding-window one

# Keys that the last query of an unpadded row of 16 may attend to, by tapped layer, where the tiny config limits it
# with a window (tests/conftest.py): Mistral's sliding window of 8 (every layer), Qwen2's from layer 2 on, ModernBERT's
# local window of 8 (4 each side: the last query sees itself and 4 before it) in its local layers. 16 elsewhere.
WINDOWED = {"mistral": {1: 8, 3: 8}, "qwen2": {1: 16, 3: 8}, "modernbert": {1: 5, 3: 16}}


def tiny_model(model_type: str):
    """The tiny model of `model_type` in eval mode; DistilBERT as the BERT family's student of a tiny BERT."""
    if model_type == "distilbert":
        return build_student(tiny_masked_lm("bert"), num_layers=4, layer_map=[0, 1, 2, 3]).eval()
    return tiny_language_model(model_type)


def eager_copy(model):
    """A copy of `model` with the same weights whose attention is transformers' eager implementation, which can
    return its attention maps (`output_attentions`)."""
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    assert eager.config._attn_implementation == "eager" and model.config._attn_implementation != "eager"
    return eager


def tap(model, layers) -> AttentionTaps:
    """Taps on the attention modules of `layers` of `model`, as the family places them."""
    parts = model_parts(model)
    return AttentionTaps(model, {layer: parts.attention_module(layer) for layer in layers})


def inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_tapped_attention_is_the_models_own_and_the_taps_change_nothing(model_type):
    """The taps' queries, keys, allowed keys and scaling, turned into attention maps, equal the eager copy's
    `output_attentions` maps of the tapped layers at every real query row (padded row included: sliding windows,
    local layers, causal order, padding and grouped-query heads all come out as the model applies them); the
    tapped model's logits are bit for bit the untapped model's, its config still names its own attention, and
    untapped layers keep the model's config object; a second `take()` without a forward pass raises."""
    model = tiny_model(model_type)
    eager = eager_copy(model)
    batch = masked_batch()
    assert not batch["attention_mask"].all()  # one row ends in padding
    real = batch["attention_mask"].bool()
    implementation, saved_config = model.config._attn_implementation, model.config.to_json_string()
    with torch.no_grad():
        untapped = model(**inputs(batch)).logits
        taps = tap(model, TAPPED)
        tapped = model(**inputs(batch)).logits
        reference = eager(**inputs(batch), output_attentions=True)

    assert torch.equal(tapped, untapped)
    assert model.config._attn_implementation == implementation
    assert model.config.to_json_string() == saved_config
    parts = model_parts(model)
    for layer in range(4):
        assert (parts.attention_module(layer).config is model.config) == (layer not in TAPPED)

    recorded = taps.take()
    assert sorted(recorded) == list(TAPPED)
    with pytest.raises(RuntimeError, match="recorded nothing"):
        taps.take()  # what one forward pass recorded is handed over once
    for layer, attention in recorded.items():
        probs = attention_log_probs(attention.query, attention.key, attention.allowed, attention.scaling).exp()
        expected = reference.attentions[layer]
        assert probs.shape == expected.shape == (3, 4, 16, 16)
        # Padding query rows are left out: a query that may see no key at all (in ModernBERT's local layers, the
        # last padding token of the padded row, whose window holds only padding) gets implementation-defined
        # weights, and SDPA's output there differs from eager's, so the two models' states at that padding position
        # differ from layer 2 on. No real query attends to padding, so the real rows are the same in both.
        torch.testing.assert_close(probs.transpose(1, 2)[real], expected.transpose(1, 2)[real], atol=1e-5, rtol=0)
        assert attention.allowed[0, 0, -1].sum().item() == WINDOWED.get(model_type, {}).get(layer, 16)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_tapped_attention_without_padding_is_the_models_own(model_type):
    """Rows without padding (packed blocks), with an all-ones attention mask or none at all: the model may hand its
    attention function no mask (SDPA's causal flag, or no mask for an encoder) and the taps then supply the causal
    order or every key themselves; the maps still equal the eager copy's at every row."""
    model = tiny_model(model_type)
    eager = eager_copy(model)
    taps = tap(model, TAPPED)
    input_ids = masked_batch()["input_ids"]
    for attention_mask in (torch.ones_like(input_ids), None):
        with torch.no_grad():
            model(input_ids=input_ids, attention_mask=attention_mask)
            reference = eager(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True)
        for layer, attention in taps.take().items():
            probs = attention_log_probs(attention.query, attention.key, attention.allowed, attention.scaling).exp()
            torch.testing.assert_close(probs, reference.attentions[layer], atol=1e-5, rtol=0)


def test_tapped_scaling_is_the_one_the_model_passes():
    """GPT-2 with `scale_attn_by_inverse_layer_idx` scales layer i's dot products by 1 / (sqrt(d) (i + 1)): the taps
    record the scaling the module hands its attention function, not 1 / sqrt(d), and the maps equal eager's."""
    config = tiny_causal_config("gpt2")
    config.scale_attn_by_inverse_layer_idx = True
    model = perturbed(AutoModelForCausalLM, config, 0)
    eager = eager_copy(model)
    taps = tap(model, TAPPED)
    batch = masked_batch()
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        model(**inputs(batch))
        reference = eager(**inputs(batch), output_attentions=True)
    for layer, attention in taps.take().items():
        assert attention.scaling == pytest.approx(8**-0.5 / (layer + 1))
        probs = attention_log_probs(attention.query, attention.key, attention.allowed, attention.scaling).exp()
        expected = reference.attentions[layer]
        torch.testing.assert_close(probs.transpose(1, 2)[real], expected.transpose(1, 2)[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_type", ["bert", "modernbert", "gpt2", "llama"])
def test_take_twice_without_a_forward_pass_raises_and_taps_record_again_after_one(model_type):
    """`take()` hands over each forward pass's inputs once: a second take before the next forward raises, and the
    next forward records again (new inputs, not the old ones)."""
    model = tiny_model(model_type)
    taps = tap(model, [2])
    batch = masked_batch()
    with torch.no_grad():
        model(**inputs(batch))
    first = taps.take()[2]
    with pytest.raises(RuntimeError, match=r"\[2\]"):
        taps.take()
    with torch.no_grad():
        model(**inputs(masked_batch(seed=1)))
    second = taps.take()[2]
    assert not torch.equal(first.query, second.query)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_tapped_queries_and_keys_carry_gradients_to_the_model(model_type):
    """The recorded queries and keys are the graph's own tensors, not detached copies: a loss on the tapped
    attention maps sends gradients to the model's parameters (an attention term trains the student)."""
    model = tiny_model(model_type)
    taps = tap(model, [1])
    model(**inputs(masked_batch()))
    attention = taps.take()[1]
    probs = attention_log_probs(attention.query, attention.key, attention.allowed, attention.scaling)
    probs.exp()[..., 0].sum().backward()
    module = model_parts(model).attention_module(1)
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in module.parameters())
