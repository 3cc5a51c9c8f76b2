"""Load the frozen teacher: a language model of a supported family (`distil.families`), masked or causal, from the hub
or from disk."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from distil.families import teacher_family
from distil.families.size import check_model_size


def load_teacher_config(name_or_path: str, trust_remote_code: bool = False) -> PretrainedConfig:
    """The teacher's config only (small and fast), of a supported family and of a size this machine can hold: used
    to validate the run before any weights are loaded."""
    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(unreachable_teacher_message(name_or_path, error)) from error
    where = f"teacher.name_or_path={name_or_path!r}"
    teacher_family(config, where=where)
    check_model_size(config, where, trust_remote_code)
    return config


def load_teacher(name_or_path: str, trust_remote_code: bool = False) -> PreTrainedModel:
    """The teacher with its vocabulary head (`AutoModelForMaskedLM` or `AutoModelForCausalLM`, as its family says), in
    float32.

    The family is checked on the config first, so an unsupported model type fails before any weights load.
    `trust_remote_code` stays False unless the config says so: a hub repo's own Python code is never run implicitly.
    """
    family = teacher_family(load_teacher_config(name_or_path, trust_remote_code))
    try:
        return family.auto_class.from_pretrained(name_or_path, dtype=torch.float32, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(unreachable_teacher_message(name_or_path, error)) from error


def unreachable_teacher_message(name_or_path: str, error: Exception) -> str:
    where = "local directory" if Path(name_or_path).exists() else "local directory or hub model id"
    return (
        f"could not load the teacher from teacher.name_or_path={name_or_path!r} (a {where}; "
        f"{type(error).__name__}: {error}). Point "
        "teacher.name_or_path at a directory holding config.json, the weights and the tokenizer, or at a hub id "
        "such as bert-base-uncased when the hub is reachable; for the demo, set DISTIL_SHARED to the shared assets "
        "folder (it must contain models/bert-teacher-12x256)."
    )
