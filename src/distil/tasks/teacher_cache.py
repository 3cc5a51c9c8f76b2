"""The fine-tuned teacher's outputs on the training features: computed once, stored, reused, never stale.

Without data augmentation a frozen teacher in eval mode gives the same outputs every epoch, so they are computed in
one pass before training and every epoch reads them. With a cache folder they are also stored, in one file per
fingerprint, and a later run reuses them. The fingerprint covers everything the outputs depend on:

- `teacher`: sha256 of the teacher's weights (every tensor's name, dtype, shape and bytes) and its config;
- `tokenizer`: sha256 of the tokenizer's definition (vocabulary, normaliser, pre-tokeniser, post-processor);
- `max_length`: the task's tokens per feature;
- `data`: the training data read (sha256 of the local file, or the hub dataset, config and split);
- `features`: sha256 of the input ids, token types and attention masks of every training feature, in order, which
  covers whatever else shapes the inputs (the examples kept, windows and stride, the task's columns);
- `outputs`: which outputs are stored (and the cache format's version).

A stored file is used only when its zip records match their CRC-32 (flipped bytes inside the stored values are found,
which `torch.load` alone does not notice), its recorded fingerprint equals the new one field by field, it holds an
output for every feature and every value is finite; anything else is a miss, computed again and stored under its own
name (a damaged file is replaced, with a warning; files of other fingerprints stay, for the runs they belong to).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import pickle
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from distil.data.tokenization import vocabulary_fingerprint
from distil.run.checkpoint_io import CheckpointError, atomic_torch_save, verify_archive
from distil.run.digests import config_sha256, sha256_json
from distil.tasks.batches import HIDDEN, model_inputs, per_feature

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the stored layout changes
SEQUENCE_FIELDS = ("input_ids", "token_type_ids", "attention_mask")  # the inputs that decide a teacher's outputs


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of the model's config (without where it was read from) and every tensor of its state dict."""
    digest = hashlib.sha256(config_sha256(model.config.to_dict()).encode())
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of a fast tokenizer's definition without its call-time truncation and padding settings (which the
    last call leaves behind), else of its vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return vocabulary_fingerprint(tokenizer)
    definition = json.loads(backend.to_str())
    definition.pop("truncation", None)
    definition.pop("padding", None)
    return sha256_json([definition, tokenizer.special_tokens_map])


def features_fingerprint(features: list[dict]) -> str:
    """sha256 of the teacher's inputs of every feature, in order."""
    digest = hashlib.sha256()
    for feature in features:
        digest.update(sha256_json([feature.get(key) for key in SEQUENCE_FIELDS]).encode())
    return digest.hexdigest()


def fingerprint(
    teacher: torch.nn.Module, tokenizer, max_length: int, data: str, features: list[dict], outputs: tuple[str, ...]
) -> dict[str, str]:
    """The fields of the cache fingerprint (module docstring)."""
    return {
        "teacher": weights_fingerprint(teacher),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_length": str(max_length),
        "data": data,
        "features": features_fingerprint(features),
        "outputs": f"{','.join(outputs)} v{FORMAT_VERSION}",
    }


def run_teacher(
    teacher: torch.nn.Module,
    features: list[dict],
    collate: Callable[[list[dict]], dict],
    batch_size: int,
    outputs: tuple[str, ...],
    per_token: frozenset[str],
) -> dict[str, list[torch.Tensor]]:
    """The teacher's `outputs` on every feature (unpadded, on the CPU, in the features' order). Features are batched
    by length, so little padding is computed."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    teacher.to(device)
    accepted = set(inspect.signature(teacher.forward).parameters)
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    loader = DataLoader(
        [{k: features[i][k] for k in SEQUENCE_FIELDS if k in features[i]} for i in order],
        batch_size=batch_size,
        collate_fn=collate,
    )
    results: dict[str, list[torch.Tensor]] = {name: [None] * len(features) for name in outputs}
    position = 0
    with torch.inference_mode():
        for batch in loader:
            batch = {k: v.to(device) for k, v in model_inputs(batch, accepted).items()}
            output = teacher(**batch, output_hidden_states=HIDDEN in outputs)
            rows = per_feature(output, outputs, per_token, batch["attention_mask"])
            for name, values in rows.items():
                for offset, value in enumerate(values):
                    results[name][order[position + offset]] = value.half() if name == HIDDEN else value.float()
            position += len(next(iter(rows.values())))
    teacher.cpu()
    return results


def cache_file(directory: Path, task: str, fields: dict[str, str]) -> Path:
    return directory / f"{task}-{sha256_json(fields)[:20]}.pt"


def save(path: Path, fields: dict[str, str], outputs: dict[str, list[torch.Tensor]], seconds: float) -> None:
    """Write the outputs (each concatenated flat, with every feature's shape) through a temporary file and a rename,
    so a reader never sees half a file."""
    stored = {
        name: {
            "values": torch.cat([t.reshape(-1) for t in tensors]),
            "shapes": torch.tensor([list(t.shape) for t in tensors], dtype=torch.long).reshape(len(tensors), -1),
        }
        for name, tensors in outputs.items()
    }
    atomic_torch_save({"fingerprint": fields, "seconds": seconds, "outputs": stored}, path)


def load(path: Path, fields: dict[str, str], count: int) -> tuple[dict[str, list[torch.Tensor]], float] | None:
    """(outputs, seconds their computation took) from `path` when it holds this fingerprint's outputs of `count`
    features; None otherwise. A damaged file (a record that fails its CRC-32, a truncated or unreadable archive) or
    one holding NaN or inf is logged as such and not used."""
    if not path.is_file():
        return None
    try:
        verify_archive(path, what="teacher cache")
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except (CheckpointError, OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as error:
        log.warning("teacher cache %s is damaged (%s): recomputing the teacher's outputs", path, error)
        return None
    if stored.get("fingerprint") != fields:
        return None
    outputs = {}
    for name, entry in stored["outputs"].items():
        shapes = [torch.Size(shape) for shape in entry["shapes"].tolist()]
        if len(shapes) != count:
            return None
        if not torch.isfinite(entry["values"]).all():
            log.warning("teacher cache %s holds NaN or inf in %s: recomputing the teacher's outputs", path, name)
            return None
        pieces = entry["values"].split([shape.numel() for shape in shapes])
        outputs[name] = [piece.reshape(shape) for piece, shape in zip(pieces, shapes)]
    return outputs, float(stored["seconds"])


def teacher_outputs(
    features: list[dict],
    fields: dict[str, str],
    compute: Callable[[], dict[str, list[torch.Tensor]]],
    directory: str | None,
    task: str,
    epochs: int,
) -> tuple[dict[str, list[torch.Tensor]], dict]:
    """The teacher's outputs on `features`: from the cache file of `fields` in `directory` when it is there and
    valid, else `compute()`d (and stored when `directory` is set). Returns them and a report: hit or miss, the file,
    the seconds spent, the seconds their computation takes, and the seconds saved against running the teacher in
    every one of `epochs` epochs."""
    path = cache_file(Path(directory), task, fields) if directory else None
    start = time.perf_counter()
    found = load(path, fields, len(features)) if path else None
    if found is not None:
        outputs, compute_seconds = found
        status = "hit"
    else:
        outputs = compute()
        compute_seconds = time.perf_counter() - start
        status = "miss" if path else "off"
        if path:
            save(path, fields, outputs, compute_seconds)
    spent = time.perf_counter() - start
    report = {
        "cache": status,
        "file": str(path) if path else None,
        "fingerprint": fields,
        "seconds": spent,
        "compute_seconds": compute_seconds,
        "seconds_saved": epochs * compute_seconds - spent,
    }
    log.info(
        "teacher outputs on %d training features: cache %s%s, %.1f s (computing them takes %.1f s; a teacher run in "
        "each of %d epochs would take %.1f s: %.1f s saved)",
        len(features),
        status,
        f" ({path})" if path else "",
        spent,
        compute_seconds,
        epochs,
        epochs * compute_seconds,
        report["seconds_saved"],
    )
    return outputs, report
