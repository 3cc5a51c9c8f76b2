"""RoBERTa-layout teachers (roberta-base, xlm-roberta-base, CamemBERT, ...) -> students of the same class, half depth.

The student is the teacher's own class (`RobertaForMaskedLM`, `XLMRobertaForMaskedLM`, `CamembertForMaskedLM`) with
fewer layers: every tensor outside the layers is the teacher's (embeddings, including the one-row token-type table,
and the masked-LM head), and student layer i is teacher layer `layer_map[i]`, so `model_type` is unchanged and the
exported student loads with `AutoModelForMaskedLM`. This is how DistilRoBERTa was made (6 of roberta-base's 12 layers).

Positions start after the padding id (`padding_idx + 1`): roberta-base's 514 position embeddings allow 512 tokens.
"""

from __future__ import annotations

import torch.nn.functional as F
from transformers import PretrainedConfig, PreTrainedModel

from distil.families.family import HeadFeatures, SameClassFamily


class RobertaFamily(SameClassFamily):
    name = "roberta"
    teacher_types = ("roberta", "xlm-roberta", "camembert")
    layer_prefix = "roberta.encoder.layer."
    attention_name = "attention.self"

    def head_features(self, model: PreTrainedModel) -> HeadFeatures:
        head = model.lm_head  # dense -> gelu -> layer_norm -> decoder (the output projection)
        return lambda hidden: head.layer_norm(F.gelu(head.dense(hidden)))

    def max_length(self, config: PretrainedConfig) -> int:
        return int(config.max_position_embeddings) - int(config.pad_token_id) - 1
