"""Model families: everything family-specific about distilling a teacher, one file per family.

`teacher_family(config)` picks the family that distils a teacher (by `config.model_type`, before any weights load);
`model_parts(model)` splits any model of a known family (teacher or student, masked or causal) into encoder, head
features and output projection. To add a family, write `families/<name>.py` (a `ModelFamily` subclass, see
`family.py`) and list it in `FAMILIES`.
"""

from __future__ import annotations

from transformers import PretrainedConfig, PreTrainedModel

from distil.families.bert import BertFamily
from distil.families.electra import ElectraFamily
from distil.families.family import ModelFamily, ModelParts
from distil.families.gpt2 import Gpt2Family
from distil.families.llama import LlamaFamily
from distil.families.modernbert import ModernBertFamily
from distil.families.roberta import RobertaFamily

FAMILIES: tuple[ModelFamily, ...] = (
    BertFamily(),
    RobertaFamily(),
    ModernBertFamily(),
    ElectraFamily(),
    Gpt2Family(),
    LlamaFamily(),
)
TEACHER_TYPES = {model_type: family for family in FAMILIES for model_type in family.teacher_types}
MODEL_TYPES = {model_type: family for family in FAMILIES for model_type in family.model_types}


class UnsupportedModelError(ValueError):
    """A model whose `model_type` no family handles."""


def teacher_family(config: PretrainedConfig, where: str = "teacher.name_or_path") -> ModelFamily:
    """The family that distils a teacher with this config, or an error listing the supported model types."""
    model_type = getattr(config, "model_type", None)
    if model_type not in TEACHER_TYPES:
        raise UnsupportedModelError(
            f"{where}: the teacher's model_type is {model_type!r}; supported teachers are language models of "
            f"model_type {sorted(TEACHER_TYPES)} (add a family in src/distil/families/ for others)"
        )
    return TEACHER_TYPES[model_type]


def model_family(config: PretrainedConfig, where: str) -> ModelFamily:
    """The family of a teacher or student model with this config, or an error naming `where` and what is allowed."""
    model_type = getattr(config, "model_type", None)
    if model_type not in MODEL_TYPES:
        raise UnsupportedModelError(
            f"{where}: model_type {model_type!r} belongs to no model family; supported: {sorted(MODEL_TYPES)}"
        )
    return MODEL_TYPES[model_type]


def model_parts(model: PreTrainedModel, where: str = "model") -> ModelParts:
    """Encoder, head features and output projection of a language model of a known family."""
    return model_family(model.config, where).parts(model)
