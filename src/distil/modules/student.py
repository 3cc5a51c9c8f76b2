"""Build the student from the teacher: fewer layers, initialised from the teacher's, in the teacher's family; or load
a given pretrained student that shares the teacher's vocabulary (`name_or_path`, as when a 1B model of a family is
distilled from an 8B one).

What the student is (DistilBERT for a BERT teacher, the teacher's own class for RoBERTa, XLM-R, ModernBERT, GPT-2 and
the Llama layout) and which teacher tensor each student tensor starts from is the family's business
(`distil.families`); this file picks the depth and the layer map, checks them, and builds the model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import torch
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from distil.families import model_family, teacher_family

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


def load_student_config(name_or_path: str, teacher_config: PretrainedConfig) -> PretrainedConfig:
    """The config of a given pretrained student, checked against the teacher before any weights load: a model of a
    known family, of the teacher's kind (masked or causal), with an embedding for every id of the teacher's
    vocabulary. (That both use the same tokenizer is checked on the tokenizers: `config_checks.check_vocabulary`.)"""
    key = f"student.name_or_path={name_or_path!r}"
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(
            f"could not load the student config from {key} ({type(error).__name__}: {error}); point it at a folder "
            "holding config.json and the weights, or at a hub id"
        ) from error
    family, teachers = model_family(config, key), teacher_family(teacher_config)
    if family.causal != teachers.causal:
        kinds = {True: "causal", False: "masked"}
        raise ValueError(
            f"{key} is a {kinds[family.causal]} LM (model_type {config.model_type!r}) and the teacher a "
            f"{kinds[teachers.causal]} LM (model_type {teacher_config.model_type!r}): a student must predict tokens "
            "the way its teacher does"
        )
    if config.vocab_size < teacher_config.vocab_size:
        raise ValueError(
            f"{key} has {config.vocab_size} token embeddings, fewer than the teacher's vocabulary of "
            f"{teacher_config.vocab_size}: it must share the teacher's tokenizer"
        )
    return config


def build_student(
    teacher: PreTrainedModel,
    num_layers: int | None = None,
    layer_map: Sequence[int] | None = None,
    init: Literal["teacher", "random"] = "teacher",
    name_or_path: str | None = None,
) -> PreTrainedModel:
    """A student of the teacher's family (see `distil.families`), float32.

    Args:
        teacher: a language model of a supported family (its config gives width, heads, FFN, vocabulary, positions).
        num_layers: student depth; default half the teacher's (at least 1).
        layer_map: teacher layer each student layer is copied from; default the family's (evenly spread).
        init: "teacher" copies embeddings, vocabulary head and mapped layers; "random" keeps the fresh
            initialisation (the paper's ablation), with the same architecture.
        name_or_path: a pretrained student to start from instead (hub id or folder), of the teacher's kind and
            vocabulary; it keeps its own depth and weights, so num_layers and layer_map must be left unset.
    """
    if name_or_path is not None:
        return load_pretrained_student(teacher.config, name_or_path, num_layers, layer_map)
    check_init(init)
    family = teacher_family(teacher.config)
    layers = resolve_layer_map(teacher.config, num_layers, layer_map)
    student = family.auto_class.from_config(family.student_config(teacher.config, layers))
    if init == "teacher":
        family.copy_teacher_weights(student, teacher, layers)
        log.info("student: %d layers initialised from teacher layers %s", len(layers), layers)
    else:
        log.info("student: %d layers, random initialisation", len(layers))
    student.config.distil_layer_map = layers if init == "teacher" else None
    return student


def check_pretrained_student(name_or_path: str, num_layers, layer_map) -> None:
    """A given student keeps its own architecture: `student.num_layers` and `student.layer_map` must be unset."""
    for key, value in (("num_layers", num_layers), ("layer_map", layer_map)):
        if value is not None:
            raise ValueError(
                f"student.{key}={value!r} cannot be combined with student.name_or_path={name_or_path!r}: a given "
                f"student keeps its own depth and weights; set student.{key}=null"
            )


def load_pretrained_student(
    teacher_config: PretrainedConfig, name_or_path: str, num_layers, layer_map
) -> PreTrainedModel:
    """The given student in float32, with its vocabulary head, after the checks of its config."""
    check_pretrained_student(name_or_path, num_layers, layer_map)
    config = load_student_config(name_or_path, teacher_config)
    student = model_family(config, "student").auto_class.from_pretrained(name_or_path, dtype=torch.float32)
    student.config.distil_layer_map = None
    log.info("student: %s (%d layers), pretrained", name_or_path, student.config.num_hidden_layers)
    return student
