"""Build the student from the teacher: fewer layers, initialised from the teacher's, in the teacher's family, or
narrower too (`hidden_size`, `num_attention_heads`, `intermediate_size`: MiniLM's and TinyBERT's shapes), which
starts from random weights; or load a given pretrained student that shares the teacher's vocabulary (`name_or_path`,
as when a 1B model of a family is distilled from an 8B one).

What the student is (DistilBERT for a BERT teacher, the teacher's own class for RoBERTa, XLM-R, ModernBERT, GPT-2 and
the Llama layout) and which teacher tensor each student tensor starts from is the family's business
(`distil.families`); this file picks the depth and the layer map, checks them, and builds the model.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Literal

import torch
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from distil.families import model_family, teacher_family
from distil.value_checks import validate_layer_map

log = logging.getLogger(__name__)

INITS = ("teacher", "random", "teacher_embeddings")


WIDTH_KEYS = ("hidden_size", "num_attention_heads", "intermediate_size")  # student.<key>: the student's width


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


def check_positive(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"student.{key}={value!r} is not allowed: an integer >= 1, or null for the teacher's")


def narrow(config: PretrainedConfig, intermediate_key: str, hidden_size, num_attention_heads, intermediate_size):
    """Set the width keys that are given on a student config of the teacher's width, checked; return it.

    Defaults: the teacher's attention heads (when they divide the width), and a feed-forward width in the teacher's
    ratio to the hidden size. Grouped-query attention keeps the teacher's queries per key-value head, and an explicit
    `head_dim` (Llama, Qwen3) becomes hidden size / heads.
    """
    if hidden_size is None and num_attention_heads is None and intermediate_size is None:
        return config
    teacher_hidden, teacher_heads = config.hidden_size, config.num_attention_heads
    hidden = teacher_hidden if hidden_size is None else hidden_size
    check_positive("hidden_size", hidden)
    if num_attention_heads is None and hidden % teacher_heads:
        raise ValueError(
            f"student.hidden_size={hidden} is not divisible by the teacher's {teacher_heads} attention heads: set "
            "student.num_attention_heads to a divisor of it"
        )
    heads = teacher_heads if num_attention_heads is None else num_attention_heads
    check_positive("num_attention_heads", heads)
    if hidden % heads:
        raise ValueError(
            f"student.num_attention_heads={heads} does not divide student.hidden_size={hidden}: heads split the width "
            "evenly"
        )
    if intermediate_size is not None:
        check_positive("intermediate_size", intermediate_size)
    elif getattr(config, intermediate_key, None) is not None:
        intermediate_size = round(getattr(config, intermediate_key) * hidden / teacher_hidden)
    kv_heads = getattr(config, "num_key_value_heads", None)
    if kv_heads is not None:
        group = teacher_heads // kv_heads
        if heads % group:
            raise ValueError(
                f"student.num_attention_heads={heads} is not a multiple of the teacher's {group} query heads per "
                f"key-value head (grouped-query attention): use a multiple of {group}"
            )
        config.num_key_value_heads = heads // group
    if getattr(config, "head_dim", None) is not None:
        config.head_dim = hidden // heads
    config.hidden_size, config.num_attention_heads = hidden, heads
    setattr(config, intermediate_key, intermediate_size)
    return config


def width_of(config: PretrainedConfig, intermediate_key: str) -> dict[str, int | None]:
    """The width keys of a student config, by their `student.*` names."""
    return dict(zip(WIDTH_KEYS, (config.hidden_size, config.num_attention_heads, getattr(config, intermediate_key))))


def student_model_config(
    teacher_config: PretrainedConfig,
    num_layers: int | None = None,
    layer_map: Sequence[int] | None = None,
    init: str = "teacher",
    hidden_size: int | None = None,
    num_attention_heads: int | None = None,
    intermediate_size: int | None = None,
) -> tuple[PretrainedConfig, list[int]]:
    """The student's config and layer map, checked, from the teacher's config alone (no weights): the run's early
    check and `build_student` both call it. `init=teacher` copies the teacher's layers, so it needs their width."""
    check_init(init)
    family = teacher_family(teacher_config)
    layers = resolve_layer_map(teacher_config, num_layers, layer_map)
    same_width = family.student_config(teacher_config, layers)
    teacher_width = width_of(same_width, family.intermediate_key)
    config = narrow(
        copy.deepcopy(same_width), family.intermediate_key, hidden_size, num_attention_heads, intermediate_size
    )
    student_width = width_of(config, family.intermediate_key)
    if init == "teacher" and student_width != teacher_width:
        differ = ", ".join(
            f"student.{key}={student_width[key]} (teacher {teacher_width[key]})"
            for key in WIDTH_KEYS
            if student_width[key] != teacher_width[key]
        )
        raise ValueError(
            f"student.init=teacher copies the teacher's layers and needs the teacher's width, but {differ}: use "
            "student.init=random or teacher_embeddings for a narrower student (or a pretrained student.name_or_path)"
        )
    if init == "teacher_embeddings" and student_width["hidden_size"] > teacher_width["hidden_size"]:
        raise ValueError(
            f"student.init=teacher_embeddings projects the teacher's embeddings to a narrower width: "
            f"student.hidden_size={student_width['hidden_size']} is above the teacher's {teacher_width['hidden_size']}"
        )
    return config, layers


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
    init: Literal["teacher", "random", "teacher_embeddings"] = "teacher",
    name_or_path: str | None = None,
    hidden_size: int | None = None,
    num_attention_heads: int | None = None,
    intermediate_size: int | None = None,
) -> PreTrainedModel:
    """A student of the teacher's family (see `distil.families`), float32.

    Args:
        teacher: a language model of a supported family (its config gives width, heads, FFN, vocabulary, positions).
        num_layers: student depth; default half the teacher's (at least 1).
        layer_map: teacher layer each student layer is copied from; default the family's (evenly spread).
        init: "teacher" copies embeddings, vocabulary head and mapped layers; "random" keeps the fresh
            initialisation (the paper's ablation), with the same architecture; "teacher_embeddings" starts a
            narrower student's token embeddings from the teacher's, projected on their principal directions
            (`project_embeddings`), the rest random.
        name_or_path: a pretrained student to start from instead (hub id or folder), of the teacher's kind and
            vocabulary; it keeps its own depth, width and weights, so the keys of its shape must be left unset.
        hidden_size, num_attention_heads, intermediate_size: a narrower student (default: the teacher's; see
            `narrow`), which needs `init="random"`.
    """
    width = dict(zip(WIDTH_KEYS, (hidden_size, num_attention_heads, intermediate_size)))
    if name_or_path is not None:
        return load_pretrained_student(teacher.config, name_or_path, num_layers, layer_map, **width)
    family = teacher_family(teacher.config)
    config, layers = student_model_config(teacher.config, num_layers, layer_map, init, **width)
    student = family.auto_class.from_config(config)
    if init == "teacher_embeddings":
        project_embeddings(student, teacher)
        log.info(
            "student: %d layers of width %d, token embeddings projected from the teacher's",
            len(layers),
            config.hidden_size,
        )
    elif init == "teacher":
        family.copy_teacher_weights(student, teacher, layers)
        log.info("student: %d layers initialised from teacher layers %s", len(layers), layers)
    else:
        log.info("student: %d layers of width %d, random initialisation", len(layers), config.hidden_size)
    student.config.distil_layer_map = layers if init == "teacher" else None
    return student


@torch.no_grad()
def project_embeddings(student: PreTrainedModel, teacher: PreTrainedModel) -> None:
    """Overwrite the student's token embeddings (tied to its output projection where the family ties them) with the
    teacher's, projected on their leading principal directions: the best rank-k linear map of the teacher's table
    into the student's width k (one SVD of the V x H table, a second on the CPU for BERT-base's)."""
    table = teacher.get_input_embeddings().weight.float()
    target = student.get_input_embeddings().weight
    _, _, directions = torch.linalg.svd(table - table.mean(dim=0), full_matrices=False)
    target[: len(table)].copy_(table @ directions[: target.shape[1]].T)


def check_pretrained_student(name_or_path: str, num_layers, layer_map, **width) -> None:
    """A given student keeps its own architecture: `student.num_layers`, `student.layer_map` and the width keys
    (`hidden_size`, `num_attention_heads`, `intermediate_size`) must be unset."""
    for key, value in (("num_layers", num_layers), ("layer_map", layer_map), *width.items()):
        if value is not None:
            raise ValueError(
                f"student.{key}={value!r} cannot be combined with student.name_or_path={name_or_path!r}: a given "
                f"student keeps its own depth and weights; set student.{key}=null"
            )


def load_pretrained_student(
    teacher_config: PretrainedConfig, name_or_path: str, num_layers, layer_map, **width
) -> PreTrainedModel:
    """The given student in float32, with its vocabulary head, after the checks of its config."""
    check_pretrained_student(name_or_path, num_layers, layer_map, **width)
    config = load_student_config(name_or_path, teacher_config)
    student = model_family(config, "student").auto_class.from_pretrained(name_or_path, dtype=torch.float32)
    student.config.distil_layer_map = None
    log.info("student: %s (%d layers), pretrained", name_or_path, student.config.num_hidden_layers)
    return student
