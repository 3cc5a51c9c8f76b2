"""Build a DistilBERT student from a BERT teacher: half the layers, initialised from the teacher's.

The student is a stock `transformers` `DistilBertForMaskedLM` (no token-type embeddings, no pooler), so the exported
model loads with `AutoModelForMaskedLM` exactly like the published `distilbert-base-uncased`.

Weight copy (`init="teacher"`), as in the original `extract_distilbert.py`, with one improvement: BERT adds the
token-type embedding of segment 0 to every token; DistilBERT has no token types, so that row is folded into the
position embeddings. The student's embedding output is then identical to the teacher's, and a student that keeps
all layers computes exactly the teacher's function.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import torch
from transformers import BertForMaskedLM, DistilBertConfig, DistilBertForMaskedLM

log = logging.getLogger(__name__)

DISTILBERT_LAYER_NORM_EPS = 1e-12  # DistilBertForMaskedLM hard-codes this epsilon in every LayerNorm


def default_layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """Teacher layers the student layers start from, evenly spread from the first to the last teacher layer.

    Rounding the evenly spaced points gives the original DistilBERT map [0, 2, 4, 7, 9, 11] for 12 -> 6 and
    roughly every other layer for any halving.
    """
    if student_layers == 1:
        return [teacher_layers - 1]
    step = (teacher_layers - 1) / (student_layers - 1)
    return [round(i * step) for i in range(student_layers)]


def validate_layer_map(layer_map: Sequence[int], teacher_layers: int, student_layers: int) -> list[int]:
    """Return the map as a list, or raise naming the bad value and what is allowed."""
    layers = [int(i) for i in layer_map]
    if len(layers) != student_layers:
        raise ValueError(
            f"student.layer_map={layers} has {len(layers)} entries; it needs one per student layer "
            f"(student.num_layers={student_layers})"
        )
    bad = [i for i in layers if not 0 <= i < teacher_layers]
    if bad:
        raise ValueError(
            f"student.layer_map={layers} has indices {bad} outside the teacher's layers 0..{teacher_layers - 1}"
        )
    if any(b <= a for a, b in zip(layers, layers[1:])):
        raise ValueError(f"student.layer_map={layers} must be strictly increasing")
    return layers


def student_config(teacher_config, num_layers: int) -> DistilBertConfig:
    """DistilBERT config with the teacher's width, heads, FFN, vocabulary and positions, and `num_layers` layers."""
    if not 1 <= num_layers <= teacher_config.num_hidden_layers:
        raise ValueError(
            f"student.num_layers={num_layers} is out of range: allowed 1..{teacher_config.num_hidden_layers} "
            "(the teacher's layer count)"
        )
    return DistilBertConfig(
        vocab_size=teacher_config.vocab_size,
        max_position_embeddings=teacher_config.max_position_embeddings,
        n_layers=num_layers,
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


def teacher_to_student_names(student_layer: int, teacher_layer: int) -> dict[str, str]:
    """Student parameter name -> teacher parameter name for one transformer layer."""
    s = f"distilbert.transformer.layer.{student_layer}."
    t = f"bert.encoder.layer.{teacher_layer}."
    pairs = {
        "attention.q_lin": "attention.self.query",
        "attention.k_lin": "attention.self.key",
        "attention.v_lin": "attention.self.value",
        "attention.out_lin": "attention.output.dense",
        "sa_layer_norm": "attention.output.LayerNorm",
        "ffn.lin1": "intermediate.dense",
        "ffn.lin2": "output.dense",
        "output_layer_norm": "output.LayerNorm",
    }
    return {s + sk + "." + kind: t + tk + "." + kind for sk, tk in pairs.items() for kind in ("weight", "bias")}


def non_layer_names() -> dict[str, str]:
    """Student parameter name -> teacher parameter name for the embeddings and the masked-LM head."""
    return {
        "distilbert.embeddings.word_embeddings.weight": "bert.embeddings.word_embeddings.weight",
        "distilbert.embeddings.LayerNorm.weight": "bert.embeddings.LayerNorm.weight",
        "distilbert.embeddings.LayerNorm.bias": "bert.embeddings.LayerNorm.bias",
        "vocab_transform.weight": "cls.predictions.transform.dense.weight",
        "vocab_transform.bias": "cls.predictions.transform.dense.bias",
        "vocab_layer_norm.weight": "cls.predictions.transform.LayerNorm.weight",
        "vocab_layer_norm.bias": "cls.predictions.transform.LayerNorm.bias",
        "vocab_projector.bias": "cls.predictions.bias",
    }


@torch.no_grad()
def copy_teacher_weights(student: DistilBertForMaskedLM, teacher: BertForMaskedLM, layer_map: Sequence[int]) -> None:
    """Overwrite the student's weights with the teacher tensors they map to (see the module docstring)."""
    teacher_params = dict(teacher.named_parameters())
    student_params = dict(student.named_parameters())
    names = non_layer_names()
    for student_layer, teacher_layer in enumerate(layer_map):
        names.update(teacher_to_student_names(student_layer, teacher_layer))
    for student_name, teacher_name in names.items():
        student_params[student_name].copy_(teacher_params[teacher_name])
    embeddings = teacher.bert.embeddings
    student.distilbert.embeddings.position_embeddings.weight.copy_(
        embeddings.position_embeddings.weight + embeddings.token_type_embeddings.weight[0]
    )


def build_student(
    teacher: BertForMaskedLM,
    num_layers: int | None = None,
    layer_map: Sequence[int] | None = None,
    init: Literal["teacher", "random"] = "teacher",
) -> DistilBertForMaskedLM:
    """A DistilBERT student derived from `teacher`.

    Args:
        teacher: a `BertForMaskedLM` (any size; its config gives width, heads, FFN, vocabulary and positions).
        num_layers: student depth; default half the teacher's (at least 1).
        layer_map: teacher layer each student layer is copied from; default `default_layer_map`.
        init: "teacher" copies embeddings, MLM head and mapped layers; "random" keeps the fresh initialisation
            (the paper's ablation), with the same architecture.
    """
    if init not in ("teacher", "random"):
        raise ValueError(f"student.init={init!r} is not allowed: use 'teacher' or 'random'")
    teacher_config = teacher.config
    if getattr(teacher_config, "model_type", None) != "bert":
        raise ValueError(
            f"the teacher's model_type is {teacher_config.model_type!r}; build_student derives DistilBERT students "
            "from BERT teachers (model_type 'bert')"
        )
    teacher_layers = teacher_config.num_hidden_layers
    num_layers = max(1, teacher_layers // 2) if num_layers is None else int(num_layers)
    config = student_config(teacher_config, num_layers)
    layers = validate_layer_map(
        default_layer_map(teacher_layers, num_layers) if layer_map is None else layer_map, teacher_layers, num_layers
    )
    if abs(teacher_config.layer_norm_eps - DISTILBERT_LAYER_NORM_EPS) > 1e-15:
        log.warning(
            "teacher layer_norm_eps=%g differs from DistilBERT's fixed %g; the student's LayerNorms use %g",
            teacher_config.layer_norm_eps,
            DISTILBERT_LAYER_NORM_EPS,
            DISTILBERT_LAYER_NORM_EPS,
        )
    student = DistilBertForMaskedLM(config)
    if init == "teacher":
        copy_teacher_weights(student, teacher, layers)
        log.info("student: %d layers initialised from teacher layers %s", num_layers, layers)
    else:
        log.info("student: %d layers, random initialisation", num_layers)
    student.config.distil_layer_map = layers if init == "teacher" else None
    return student
