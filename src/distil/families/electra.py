"""ELECTRA generators (google/electra-base-generator, your own) -> students of the same class, half depth.

An ELECTRA generator is a BERT-shaped masked LM whose embeddings may be narrower than its layers (`embedding_size`,
projected up by `embeddings_project`) and whose vocabulary head maps back down to that width before the output
projection, tied to the word embeddings. The student is the teacher's own class with fewer layers: every tensor
outside the layers is the teacher's (embeddings, their projection, the head), and student layer i is teacher layer
`layer_map[i]`, so `model_type` stays `electra` and the student loads with `AutoModelForMaskedLM`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from distil.families.family import HeadFeatures, ModelFamily, renumbered_layer_names

LAYER_PREFIX = "electra.encoder.layer."


class ElectraFamily(ModelFamily):
    name = "electra"
    teacher_types = ("electra",)

    def student_config(self, teacher_config: PretrainedConfig, layer_map: Sequence[int]) -> PretrainedConfig:
        config = copy.deepcopy(teacher_config)
        config.num_hidden_layers = len(layer_map)
        return config

    def parameter_map(self, student: nn.Module, layer_map: Sequence[int]) -> dict[str, str]:
        return renumbered_layer_names(student, LAYER_PREFIX, layer_map)

    def head_features(self, model: PreTrainedModel) -> HeadFeatures:
        return model.generator_predictions  # dense -> activation -> LayerNorm; generator_lm_head is the projection
