"""Checkpoint files that are never half-written and are read without unpickling arbitrary objects.

Writing: the checkpoint goes to a hidden temp file in the same directory (`.NAME.PID.tmp`), is flushed and fsynced,
then renamed over NAME with `os.replace` (atomic on POSIX within one filesystem), and the directory is fsynced. A
crash or kill at any moment leaves either the old file or the new one under NAME, never a truncated one. Lightning's
own `_atomic_save` stages the file in the system temp directory and moves it: across filesystems (/tmp vs a shared
disk, the usual case on clusters) that move is a copy, which a kill can leave half-done.

Reading: the file must be a complete zip archive whose records match their CRC-32 (this catches truncation and
flipped bytes that `torch.load` alone does not notice), and it is unpickled with `weights_only=True` (tensors,
numbers, strings, lists, tuples and dicts only). Every failure raises `CheckpointError` naming the file.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used: truncated, corrupt, or holding pickled Python objects."""


def temp_path_for(path: Path) -> Path:
    """Where `path` is staged before the rename: same directory (same filesystem), hidden, not matching *.ckpt."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (no-op where directories cannot be opened, e.g. Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """`torch.save(obj, path)` through a temp file in the same directory and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path_for(path)
    try:
        with open(temp, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def verify_archive(path: Path) -> None:
    """Raise CheckpointError unless `path` is a complete zip archive whose records all match their CRC-32."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): it was never written completely")
    try:
        with zipfile.ZipFile(path) as archive:
            bad_record = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({size} bytes, not a complete PyTorch zip archive: {error})"
        ) from error
    if bad_record is not None:
        raise CheckpointError(f"checkpoint {path} is corrupt: record {bad_record!r} does not match its CRC-32")


def load_weights_only(path: Path, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """`torch.load(path, weights_only=True)`; errors name the file and the cause."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"checkpoint {path} is truncated or corrupt (not a PyTorch zip archive)") from error
        reason = str(error).strip().splitlines()[-1]
        raise CheckpointError(
            f"checkpoint {path} holds pickled Python objects that weights_only loading refuses ({reason}). "
            "distil.train checkpoints hold only tensors and plain values; never load files of unknown origin"
        ) from error
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt: {error}") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"checkpoint {path} is not a Lightning checkpoint (no 'state_dict' entry)")
    return checkpoint


def peek_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint with its tensors memory-mapped, not read (cheap: for `global_step` and other metadata).

    Catches truncation and non-plain content, not flipped bytes inside tensors (`read_checkpoint` does).
    """
    return load_weights_only(Path(path), mmap=True)


def check_checkpoint(path: str | Path) -> None:
    """Raise (naming the file) unless `path` is a complete, CRC-clean, weights-only Lightning checkpoint.

    Reads the file once for the CRC-32s but does not materialise its tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    verify_archive(path)
    peek_checkpoint(path)


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Verify every record's CRC-32, then load with `torch.load(weights_only=True)`; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    verify_archive(path)
    return load_weights_only(path, map_location=map_location)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO plugin: atomic same-directory writes, verified `weights_only=True` reads.

    `weights_only` asked for by the caller is ignored: checkpoints of this project never need the full unpickler.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options (got {storage_options!r})")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location: Any = "cpu", weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(path, map_location=map_location)
