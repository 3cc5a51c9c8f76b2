"""A model's size read from its config, before any weight is allocated: a config that asks for more parameters than
the machine can hold (say `num_hidden_layers: 100000`) is refused instead of building layers until memory runs out.

The count is exact for the families here, whose layers are alike: the model is built on PyTorch's `meta` device
(shapes, no storage) with one and with two layers, and the second layer's parameters are counted once per further
layer, so even an absurd depth costs two tiny builds.
"""

from __future__ import annotations

import copy
import os

import torch
from transformers import AutoModel, PretrainedConfig

from distil.families import MODEL_TYPES

FLOAT32_BYTES = 4  # models are loaded in float32 for training and scoring


class ModelTooLargeError(ValueError):
    """A model config asks for more parameters than this machine's memory holds."""


def parameter_count(config: PretrainedConfig, trust_remote_code: bool = False) -> int:
    """Parameters of the language model `config` describes (tied weights counted once), allocating none. A config
    that names code of its own builds its own class only with `trust_remote_code`, else the library's class."""
    family = MODEL_TYPES.get(getattr(config, "model_type", None))
    auto_class = family.auto_class if family is not None else AutoModel  # another model: its body is most of it
    counts = []
    for layers in (1, 2):
        shallow = copy.deepcopy(config)
        shallow.num_hidden_layers = layers
        with torch.device("meta"):
            model = auto_class.from_config(shallow, trust_remote_code=trust_remote_code)
            counts.append(sum(p.numel() for p in model.parameters()))
    return counts[0] + (config.num_hidden_layers - 1) * (counts[1] - counts[0])


def memory_bytes() -> int:
    """This machine's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_model_size(config: PretrainedConfig, where: str, trust_remote_code: bool = False) -> None:
    """Raise, naming `where` and the config's sizes, when the model's float32 weights alone would exceed this
    machine's memory."""
    parameters = parameter_count(config, trust_remote_code)
    needed, available = FLOAT32_BYTES * parameters, memory_bytes()
    if needed > available:
        shape = ", ".join(
            f"{key}={getattr(config, key)}"
            for key in ("num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size")
            if hasattr(config, key)
        )
        raise ModelTooLargeError(
            f"{where}: its config ({shape}) describes a model of {parameters / 1e9:.1f}B parameters, "
            f"{needed / 2**30:.0f} GiB in float32, more than this machine's {available / 2**30:.0f} GiB of memory; "
            "check its config.json"
        )
