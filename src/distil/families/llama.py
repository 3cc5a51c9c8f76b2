"""Llama-layout teachers (Llama, Mistral, Qwen2, Qwen3 and your own) -> students of the same class, reduced depth.

These decoders share one layout: token embeddings, `model.layers.<i>` (RMSNorm, attention with rotary positions and
grouped-query heads, RMSNorm, gated MLP), a final RMSNorm and `lm_head`, tied to the embeddings or not as the
teacher has it. The student is the teacher's own class with fewer layers: every tensor outside the layers is the
teacher's and student layer i is teacher layer `layer_map[i]`, with the teacher's heads, key-value heads, head size,
RoPE settings and vocabulary, so the exported student loads with `AutoModelForCausalLM`. Qwen's per-layer attention
kinds (full or sliding-window, `layer_types`) follow the mapped layers (`SameClassFamily`); Mistral's one sliding
window applies to every layer as in the teacher.

Supported model types, each tested with a tiny teacher built from its config: llama, mistral, qwen2, qwen3.
"""

from __future__ import annotations

from distil.families.family import CausalFamily


class LlamaFamily(CausalFamily):
    name = "llama"
    teacher_types = ("llama", "mistral", "qwen2", "qwen3")
    layer_prefix = "model.layers."
    attention_name = "self_attn"
