"""Build the student from the teacher: fewer layers, initialised from the teacher's, in the teacher's family.

What the student is (DistilBERT for a BERT teacher, the teacher's own class for RoBERTa, XLM-R and ModernBERT) and
which teacher tensor each student tensor starts from is the family's business (`distil.families`); this file picks
the depth and the layer map, checks them, and builds the model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from transformers import AutoModelForMaskedLM, PreTrainedModel

from distil.families import teacher_family

log = logging.getLogger(__name__)

INITS = ("teacher", "random")


def check_init(init: str) -> None:
    """Raise naming `student.init` unless it is one of `INITS`."""
    if init not in INITS:
        raise ValueError(f"student.init={init!r} is not allowed: use one of {list(INITS)}")


def check_num_layers(num_layers: int, teacher_layers: int) -> None:
    """Raise naming `student.num_layers` unless it is an integer in 1..teacher layers."""
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or not 1 <= num_layers <= teacher_layers:
        raise ValueError(
            f"student.num_layers={num_layers!r} is out of range: allowed an integer in 1..{teacher_layers} "
            "(the teacher's layer count)"
        )


def validate_layer_map(layer_map: Sequence[int], teacher_layers: int, student_layers: int) -> list[int]:
    """Return the map as a list, or raise naming the bad value and what is allowed."""
    layers = list(layer_map)
    if any(isinstance(i, bool) or not isinstance(i, int) for i in layers):
        raise ValueError(
            f"student.layer_map={layers} is not allowed: it must list integer teacher layer indices, one per "
            "student layer"
        )
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


def resolve_layer_map(
    teacher_config, num_layers: int | None = None, layer_map: Sequence[int] | None = None
) -> list[int]:
    """The checked layer map of the student: `layer_map` as given, or the family's default for `num_layers` layers
    (default: half the teacher's, at least 1). Raises naming the key and what is allowed, before any weights load."""
    family = teacher_family(teacher_config)
    teacher_layers = teacher_config.num_hidden_layers
    num_layers = max(1, teacher_layers // 2) if num_layers is None else num_layers
    check_num_layers(num_layers, teacher_layers)
    if layer_map is None:
        layer_map = family.default_layer_map(teacher_layers, num_layers)
    return validate_layer_map(layer_map, teacher_layers, num_layers)


def build_student(
    teacher: PreTrainedModel,
    num_layers: int | None = None,
    layer_map: Sequence[int] | None = None,
    init: Literal["teacher", "random"] = "teacher",
) -> PreTrainedModel:
    """A student of the teacher's family (see `distil.families`), float32.

    Args:
        teacher: a masked-LM of a supported family (its config gives width, heads, FFN, vocabulary and positions).
        num_layers: student depth; default half the teacher's (at least 1).
        layer_map: teacher layer each student layer is copied from; default the family's (evenly spread).
        init: "teacher" copies embeddings, masked-LM head and mapped layers; "random" keeps the fresh
            initialisation (the paper's ablation), with the same architecture.
    """
    check_init(init)
    family = teacher_family(teacher.config)
    layers = resolve_layer_map(teacher.config, num_layers, layer_map)
    student = AutoModelForMaskedLM.from_config(family.student_config(teacher.config, layers))
    if init == "teacher":
        family.copy_teacher_weights(student, teacher, layers)
        log.info("student: %d layers initialised from teacher layers %s", len(layers), layers)
    else:
        log.info("student: %d layers, random initialisation", len(layers))
    student.config.distil_layer_map = layers if init == "teacher" else None
    return student
