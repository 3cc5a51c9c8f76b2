"""GPT-2 teachers (gpt2, gpt2-medium, your own GPT-2) -> GPT-2 students of reduced depth: DistilGPT2.

The student is a `GPT2LMHeadModel` with fewer layers: token and position embeddings, the final LayerNorm and the
output projection (tied to the token embeddings) are the teacher's, and student layer i is teacher layer
`layer_map[i]`, as DistilGPT2 was made (6 of gpt2's 12 layers). `model_type` stays `gpt2`, so the exported student
loads with `AutoModelForCausalLM` and runs in `pipeline("text-generation")`.
"""

from __future__ import annotations

from distil.families.family import CausalFamily


class Gpt2Family(CausalFamily):
    name = "gpt2"
    teacher_types = ("gpt2",)
    layer_prefix = "transformer.h."
    attention_name = "attn"
    intermediate_key = "n_inner"  # None: 4 x n_embd
