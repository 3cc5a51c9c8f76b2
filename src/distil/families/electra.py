"""ELECTRA generators (google/electra-base-generator, your own) -> students of the same class, half depth.

An ELECTRA generator is a BERT-shaped masked LM whose embeddings may be narrower than its layers (`embedding_size`,
projected up by `embeddings_project`) and whose vocabulary head maps back down to that width before the output
projection, tied to the word embeddings. The student is the teacher's own class with fewer layers: every tensor
outside the layers is the teacher's (embeddings, their projection, the head), and student layer i is teacher layer
`layer_map[i]`, so `model_type` stays `electra` and the student loads with `AutoModelForMaskedLM`.
"""

from __future__ import annotations

from transformers import PreTrainedModel

from distil.families.family import HeadFeatures, SameClassFamily


class ElectraFamily(SameClassFamily):
    name = "electra"
    teacher_types = ("electra",)
    layer_prefix = "electra.encoder.layer."
    attention_name = "attention.self"

    def head_features(self, model: PreTrainedModel) -> HeadFeatures:
        return model.generator_predictions  # dense -> activation -> LayerNorm; generator_lm_head is the projection
