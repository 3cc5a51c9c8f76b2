"""Models as `distil.evaluate` reads them: a language model (masked or causal, as its family says) from a folder or
hub id, checked; its parameters; its weights' bytes on disk."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from distil.families import ModelFamily, model_family
from distil.families.size import check_model_size

WEIGHT_PATTERNS = ("*.safetensors", "*.bin")  # weight files of a Hugging Face model directory
KIND_WORDS = {False: "masked-LM", True: "causal-LM"}  # a model's kind (causal?) in messages
HEAD_EXAMPLES = {  # by kind (causal?): classes that save a model with the vocabulary head evaluate scores
    False: "BertForMaskedLM, DistilBertForMaskedLM or RobertaForMaskedLM",
    True: "LlamaForCausalLM, Qwen2ForCausalLM or GPT2LMHeadModel",
}


def read_config(key: str, name_or_path: str) -> PretrainedConfig:
    """The model config at `name_or_path` (no weights); raises FileNotFoundError naming `key` when it cannot be read."""
    try:
        return AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"{key}={name_or_path!r} could not be loaded as a language model: {error}") from error


def language_model_family(key: str, name_or_path: str) -> ModelFamily:
    """The family of the model at `name_or_path`, read from its config before any weights load; raises naming `key`
    when the config cannot be read or no family handles its `model_type`."""
    return model_family(read_config(key, name_or_path), f"{key}={name_or_path!r}")


def shared_kind(families: dict[str, ModelFamily], paths: dict[str, str]) -> bool:
    """Whether the models (name -> family, at `paths`) are causal LMs; raises naming each model's kind unless they
    are all causal or all masked."""
    kinds = {name: family.causal for name, family in families.items()}
    if len(set(kinds.values())) > 1:
        described = ", ".join(
            f"{name}_model={paths[name]!r} is a {KIND_WORDS[causal]} model" for name, causal in kinds.items()
        )
        raise ValueError(f"{described}: teacher and student must both be masked LMs or both causal LMs")
    return next(iter(kinds.values()))


def load_language_model(key: str, name_or_path: str) -> PreTrainedModel:
    """Float32 language model in eval mode, loaded with its family's Auto class (masked or causal LM); raises naming
    `key` when it cannot load, is larger than this machine's memory (read from its config first), belongs to no
    family or has no complete vocabulary head."""
    where = f"{key}={name_or_path!r}"
    config = read_config(key, name_or_path)
    family = model_family(config, where)
    kind = KIND_WORDS[family.causal]
    check_model_size(config, where)
    try:
        model, info = family.auto_class.from_pretrained(name_or_path, dtype=torch.float32, output_loading_info=True)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"{where} could not be loaded as a {kind} model: {error}") from error
    if info["missing_keys"]:
        raise ValueError(
            f"{where} has no {kind} head (weights missing: {sorted(info['missing_keys'])}); "
            f"give a model saved with its {kind} head, e.g. {HEAD_EXAMPLES[family.causal]}"
        )
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
