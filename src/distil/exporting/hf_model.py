"""A model as a Hugging Face folder: config, weights in a chosen dtype, tokenizer.

A student is saved in the dtype its teacher is stored in (`stored_dtype` of the teacher's config) unless asked
otherwise, so that the size on disk of teacher and student compares their parameters, not their storage: the shared
teacher is stored in float16, a student trained in float32 and saved as such would look bigger than its teacher.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PretrainedConfig, PreTrainedModel

SAVED_DTYPES = ("float32", "float16", "bfloat16")  # dtypes a model's weights may be saved in


def check_saved_dtype(dtype: str, key: str = "dtype") -> None:
    """Raise naming `key` unless `dtype` is one of `SAVED_DTYPES`."""
    if dtype not in SAVED_DTYPES:
        raise ValueError(f"{key}={dtype!r} is not allowed: use one of {list(SAVED_DTYPES)}")


def stored_dtype(config: PretrainedConfig) -> str:
    """The dtype of the model's stored weights as its config records it (`dtype`, read from config.json before any
    weights load): one of `SAVED_DTYPES`, and "float32" when it records none or another."""
    name = str(getattr(config, "dtype", None) or "float32").removeprefix("torch.")
    return name if name in SAVED_DTYPES else "float32"


def save_model_folder(model: PreTrainedModel, tokenizer, directory: Path, dtype: str) -> None:
    """Write `model` (config and weights in `dtype`) and `tokenizer` into `directory`. The model's weights are
    rounded to `dtype` and left in float32, so that whatever runs on it next (the ONNX export) is the saved model."""
    check_saved_dtype(dtype)
    model.to(getattr(torch, dtype)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    model.float()
