"""BERT teachers (bert-base-uncased, multilingual BERT, your own BERT) -> DistilBERT students.

The student is a stock `DistilBertForMaskedLM` (no token-type embeddings, no pooler), so the exported model loads with
`AutoModelForMaskedLM` exactly like the published `distilbert-base-uncased`. Its weights are copied as in the original
`extract_distilbert.py`, with one improvement: BERT adds the token-type embedding of segment 0 to every token;
DistilBERT has no token types, so that row is folded into the position embeddings. The student's embedding output is
then identical to the teacher's, and a student that keeps all layers computes exactly the teacher's function.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from torch import nn
from transformers import DistilBertConfig, PretrainedConfig, PreTrainedModel

from distil.families.family import HeadFeatures, ModelFamily

log = logging.getLogger(__name__)

DISTILBERT_LAYER_NORM_EPS = 1e-12  # DistilBertForMaskedLM hard-codes this epsilon in every LayerNorm
LAYER_PAIRS = {  # DistilBERT layer module -> BERT layer module
    "attention.q_lin": "attention.self.query",
    "attention.k_lin": "attention.self.key",
    "attention.v_lin": "attention.self.value",
    "attention.out_lin": "attention.output.dense",
    "sa_layer_norm": "attention.output.LayerNorm",
    "ffn.lin1": "intermediate.dense",
    "ffn.lin2": "output.dense",
    "output_layer_norm": "output.LayerNorm",
}
NON_LAYER_NAMES = {  # DistilBERT parameter -> BERT parameter, outside the layers (embeddings and masked-LM head)
    "distilbert.embeddings.word_embeddings.weight": "bert.embeddings.word_embeddings.weight",
    "distilbert.embeddings.LayerNorm.weight": "bert.embeddings.LayerNorm.weight",
    "distilbert.embeddings.LayerNorm.bias": "bert.embeddings.LayerNorm.bias",
    "vocab_transform.weight": "cls.predictions.transform.dense.weight",
    "vocab_transform.bias": "cls.predictions.transform.dense.bias",
    "vocab_layer_norm.weight": "cls.predictions.transform.LayerNorm.weight",
    "vocab_layer_norm.bias": "cls.predictions.transform.LayerNorm.bias",
    "vocab_projector.bias": "cls.predictions.bias",
}
FOLDED_POSITIONS = "distilbert.embeddings.position_embeddings.weight"  # BERT positions + token type 0


class BertFamily(ModelFamily):
    name = "bert"
    teacher_types = ("bert",)
    student_only_types = ("distilbert",)
    intermediate_key = "hidden_dim"  # DistilBertConfig's feed-forward width

    def student_config(self, teacher_config: PretrainedConfig, layer_map: Sequence[int]) -> DistilBertConfig:
        """DistilBERT config with the teacher's width, heads, FFN, vocabulary and positions."""
        if abs(teacher_config.layer_norm_eps - DISTILBERT_LAYER_NORM_EPS) > 1e-15:
            log.warning(
                "teacher layer_norm_eps=%g differs from DistilBERT's fixed %g; the student's LayerNorms use %g",
                teacher_config.layer_norm_eps,
                DISTILBERT_LAYER_NORM_EPS,
                DISTILBERT_LAYER_NORM_EPS,
            )
        return DistilBertConfig(
            vocab_size=teacher_config.vocab_size,
            max_position_embeddings=teacher_config.max_position_embeddings,
            n_layers=len(layer_map),
            n_heads=teacher_config.num_attention_heads,
            dim=teacher_config.hidden_size,
            hidden_dim=teacher_config.intermediate_size,
            activation=teacher_config.hidden_act,
            dropout=teacher_config.hidden_dropout_prob,
            attention_dropout=teacher_config.attention_probs_dropout_prob,
            initializer_range=teacher_config.initializer_range,
            pad_token_id=teacher_config.pad_token_id,
            tie_word_embeddings=True,
        )

    def parameter_map(self, student: nn.Module, layer_map: Sequence[int]) -> dict[str, str]:
        names = dict(NON_LAYER_NAMES)
        for student_layer, teacher_layer in enumerate(layer_map):
            s, t = f"distilbert.transformer.layer.{student_layer}.", f"bert.encoder.layer.{teacher_layer}."
            for student_module, teacher_module in LAYER_PAIRS.items():
                for kind in ("weight", "bias"):
                    names[f"{s}{student_module}.{kind}"] = f"{t}{teacher_module}.{kind}"
        return names

    def fold_embeddings(self, student: nn.Module, teacher: nn.Module) -> set[str]:
        embeddings = teacher.bert.embeddings
        student.distilbert.embeddings.position_embeddings.weight.copy_(
            embeddings.position_embeddings.weight + embeddings.token_type_embeddings.weight[0]
        )
        return {FOLDED_POSITIONS}

    def attention_module(self, model: PreTrainedModel, layer: int) -> nn.Module:
        if model.config.model_type == "distilbert":
            return model.distilbert.transformer.layer[layer].attention
        return model.bert.encoder.layer[layer].attention.self

    def head_features(self, model: PreTrainedModel) -> HeadFeatures:
        if model.config.model_type == "distilbert":
            return lambda hidden: model.vocab_layer_norm(model.activation(model.vocab_transform(hidden)))
        return lambda hidden: model.cls.predictions.transform(hidden)
