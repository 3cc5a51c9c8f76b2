"""RoBERTa-layout teachers (roberta-base, xlm-roberta-base, CamemBERT, ...) -> students of the same class, half depth.

The student is the teacher's own class (`RobertaForMaskedLM`, `XLMRobertaForMaskedLM`, `CamembertForMaskedLM`) with
fewer layers: every tensor outside the layers is the teacher's (embeddings, including the one-row token-type table,
and the masked-LM head), and student layer i is teacher layer `layer_map[i]`, so `model_type` is unchanged and the
exported student loads with `AutoModelForMaskedLM`. This is how DistilRoBERTa was made (6 of roberta-base's 12 layers).

Positions start after the padding id (`padding_idx + 1`): roberta-base's 514 position embeddings allow 512 tokens.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from distil.families.family import HeadFeatures, ModelFamily, renumbered_layer_names

LAYER_PREFIX = "roberta.encoder.layer."


class RobertaFamily(ModelFamily):
    name = "roberta"
    teacher_types = ("roberta", "xlm-roberta", "camembert")

    def student_config(self, teacher_config: PretrainedConfig, layer_map: Sequence[int]) -> PretrainedConfig:
        config = copy.deepcopy(teacher_config)
        config.num_hidden_layers = len(layer_map)
        return config

    def parameter_map(self, student: nn.Module, layer_map: Sequence[int]) -> dict[str, str]:
        return renumbered_layer_names(student, LAYER_PREFIX, layer_map)

    def head_features(self, model: PreTrainedModel) -> HeadFeatures:
        head = model.lm_head  # dense -> gelu -> layer_norm -> decoder (the output projection)
        return lambda hidden: head.layer_norm(F.gelu(head.dense(hidden)))

    def max_length(self, config: PretrainedConfig) -> int:
        return int(config.max_position_embeddings) - int(config.pad_token_id) - 1
