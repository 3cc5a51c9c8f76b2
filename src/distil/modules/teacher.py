"""Load the frozen teacher: any `BertForMaskedLM` on the hub or on disk."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForMaskedLM, BertForMaskedLM


def load_teacher_config(name_or_path: str, trust_remote_code: bool = False):
    """The teacher's config only (small and fast): used to validate the run before any weights are loaded."""
    try:
        return AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(unreachable_teacher_message(name_or_path)) from error


def load_teacher(name_or_path: str, trust_remote_code: bool = False) -> BertForMaskedLM:
    """`AutoModelForMaskedLM.from_pretrained(name_or_path)` in float32, with its MLM head.

    `trust_remote_code` stays False unless the config says so: a hub repo's own Python code is never run implicitly.
    """
    try:
        model = AutoModelForMaskedLM.from_pretrained(
            name_or_path, dtype=torch.float32, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as error:
        raise FileNotFoundError(unreachable_teacher_message(name_or_path)) from error
    if not isinstance(model, BertForMaskedLM):
        raise ValueError(
            f"teacher.name_or_path={name_or_path!r} loads a {type(model).__name__}; the teacher must be a "
            "BertForMaskedLM (model_type 'bert' with its masked-LM head)"
        )
    return model


def unreachable_teacher_message(name_or_path: str) -> str:
    where = "local directory" if Path(name_or_path).exists() else "local directory or hub model id"
    return (
        f"could not load the teacher from teacher.name_or_path={name_or_path!r} (a {where}). Point "
        "teacher.name_or_path at a directory holding config.json, the weights and the tokenizer, or at a hub id "
        "such as bert-base-uncased when the hub is reachable; for the demo, set DISTIL_SHARED to the shared assets "
        "folder (it must contain models/bert-teacher-12x256)."
    )
