"""ModernBERT teachers (answerdotai/ModernBERT-base, -large) -> ModernBERT students of reduced depth.

The student is a `ModernBertForMaskedLM` with fewer layers: embeddings, final norm and masked-LM head are the
teacher's, student layer i is teacher layer `layer_map[i]`, and `model_type` is unchanged.

Attention pattern. ModernBERT alternates global attention (every third layer, RoPE theta 160k) with local attention
(a 128-token window, RoPE theta 10k); each student layer keeps the attention kind of the teacher layer it starts from
(`SameClassFamily`: the student's `layer_types` are the teacher's at the mapped layers). With the default, evenly
spread map (22 -> 11 layers: [0, 2, 4, 6, 8, 10, 13, 15, 17, 19, 21]) the student attends globally at layers 0, 3,
7 and 10, four of eleven, close to the teacher's one in three, with the first and last layers global as in the
teacher.

ModernBERT's first layer has no attention norm (the embeddings are normalised already); a map that starts above
teacher layer 0 leaves that teacher layer's attention norm out.
"""

from __future__ import annotations

from transformers import PreTrainedModel

from distil.families.family import HeadFeatures, SameClassFamily


class ModernBertFamily(SameClassFamily):
    name = "modernbert"
    teacher_types = ("modernbert",)
    layer_prefix = "model.layers."
    attention_name = "attn"

    def head_features(self, model: PreTrainedModel) -> HeadFeatures:
        return lambda hidden: model.head(hidden)  # dense -> activation -> norm; `decoder` is the output projection
