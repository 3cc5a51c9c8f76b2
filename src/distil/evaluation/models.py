"""Models as `distil.evaluate` reads them: a masked LM from a folder or hub id, checked; its parameters; its weights'
bytes on disk."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForMaskedLM, PreTrainedModel

from distil.families import UnsupportedModelError, model_parts
from distil.families.size import ModelTooLargeError, check_model_size

WEIGHT_PATTERNS = ("*.safetensors", "*.bin")  # weight files of a Hugging Face model directory


def load_masked_lm(key: str, name_or_path: str) -> PreTrainedModel:
    """Float32 masked-LM model in eval mode; raises naming `key` when it cannot load, is larger than this machine's
    memory (read from its config first) or has no complete MLM head."""
    try:
        check_model_size(AutoConfig.from_pretrained(name_or_path), f"{key}={name_or_path!r}")
        model, info = AutoModelForMaskedLM.from_pretrained(name_or_path, dtype=torch.float32, output_loading_info=True)
    except ModelTooLargeError:
        raise
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"{key}={name_or_path!r} could not be loaded as a masked-LM model: {error}") from error
    if info["missing_keys"]:
        raise ValueError(
            f"{key}={name_or_path!r} has no masked-LM head (weights missing: {sorted(info['missing_keys'])}); "
            "give a model saved with its MLM head, e.g. BertForMaskedLM, DistilBertForMaskedLM or RobertaForMaskedLM"
        )
    try:
        model_parts(model, f"{key}={name_or_path!r}")
    except UnsupportedModelError as error:
        raise ValueError(str(error)) from error
    return model.eval()


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied weights, such as the input and output embeddings, counted once)."""
    return sum(p.numel() for p in model.parameters())


def weights_dir(name_or_path: str) -> Path:
    """The local directory holding the model's weight files (the hub cache's snapshot for a hub id)."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name_or_path, local_files_only=True))


def disk_bytes(directory: Path) -> int:
    """Total size in bytes of the weight files in `directory` (config and tokenizer files not included)."""
    files = {f for pattern in WEIGHT_PATTERNS for f in directory.glob(pattern)}
    if not files:
        raise FileNotFoundError(f"no weight files ({', '.join(WEIGHT_PATTERNS)}) in {directory}")
    return sum(f.stat().st_size for f in files)
