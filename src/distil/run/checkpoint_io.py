"""Checkpoint files that are never half-written and are read without unpickling arbitrary objects.

Writing: the checkpoint goes to a hidden temp file in the same directory (`.NAME.PID.tmp`), is flushed and fsynced,
then renamed over NAME with `os.replace` (atomic on POSIX within one filesystem), and the directory is fsynced. A
crash or kill at any moment leaves either the old file or the new one under NAME, never a truncated one (a killed
save leaves its temp file, which `remove_temp_files` deletes at the next start; a Ctrl-C removes it at once and is
re-raised as a plain KeyboardInterrupt, not as torch's "unexpected pos" error). Lightning's own `_atomic_save`
stages the file in the system temp directory and moves it: across filesystems (/tmp vs a shared disk, the usual
case on clusters) that move is a copy, which a kill can leave half-done.

Reading: the file must be a complete zip archive whose records match their CRC-32 (this catches truncation and
flipped bytes that `torch.load` alone does not notice), and it is unpickled with `weights_only=True` (tensors,
numbers, strings, lists, tuples and dicts only). Every failure raises `CheckpointError` naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pickle
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

log = logging.getLogger(__name__)

TEMP_FILE = re.compile(r"^\..+\.\d+\.tmp$")  # the names temp_path_for gives
FULL_DISK_BYTES = 16 << 20  # less free space than this after a failed write: the disk is full (16 MiB)


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


def was_interrupted(error: BaseException | None) -> bool:
    """True when `error` is, or was raised while handling, a KeyboardInterrupt (torch's zip writer turns a Ctrl-C
    inside `torch.save` into `RuntimeError: ... unexpected pos`, with the KeyboardInterrupt as its context)."""
    while error is not None:
        if isinstance(error, KeyboardInterrupt):
            return True
        error = error.__context__
    return False


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """`write(file)` into a temp file in the same directory, fsync, then an atomic rename to `path`. On any failure
    the temp file is removed and `path` keeps its previous content; a Ctrl-C surfaces as a plain KeyboardInterrupt,
    a full disk as "No space left on device" naming the file (`full_disk_error`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path_for(path)
    try:
        with open(temp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException as error:
        written = temp.stat().st_size if temp.exists() else 0
        temp.unlink(missing_ok=True)
        if was_interrupted(error):
            log.warning("interrupted while writing %s: the previous file is intact", path)
            raise KeyboardInterrupt from None
        full = full_disk_error(path, error, written)
        if full is not None:
            raise full from error
        raise
    fsync_directory(path.parent)


def is_no_space(error: BaseException | None) -> bool:
    """True when `error`, or one it was raised from or while handling, is "No space left on device"."""
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        error = error.__cause__ or error.__context__
    return False


def full_disk_error(path: Path, error: BaseException, written: int) -> OSError | None:
    """ "No space left on device" naming `path`, when the write failed for lack of room: ENOSPC in the error's chain,
    or torch's zip writer's "unexpected pos" (which replaces the ENOSPC of the write under it) while the filesystem
    has less than `FULL_DISK_BYTES` left. None for any other failure."""
    free = shutil.disk_usage(path.parent).free
    hidden_by_torch = isinstance(error, RuntimeError) and "unexpected pos" in str(error) and free < FULL_DISK_BYTES
    if not (is_no_space(error) or hidden_by_torch):
        return None
    return OSError(
        errno.ENOSPC,
        f"No space left on device: writing {path} stopped after {written / 1e6:.1f} MB with "
        f"{free / 1e6:.1f} MB free on its filesystem; the previous file is intact. Free some space (older "
        "checkpoints, other runs), then continue with resume=auto",
    )


def check_free_space(directory: str | Path, checkpoint_bytes: int, keep: int) -> None:
    """Before training: refuse when `directory`'s filesystem cannot hold two more checkpoints of `checkpoint_bytes`
    (a periodic one and last.ckpt, each staged beside the file it replaces); warn when it cannot hold the `keep`
    checkpoints a run keeps plus those two."""
    folder = Path(directory)
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < 2 * checkpoint_bytes:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device for this run's checkpoints: {directory} has {free / 1e6:.1f} MB free, and "
            f"one save writes two checkpoints of {checkpoint_bytes / 1e6:.1f} MB (a periodic one and last.ckpt). "
            "Free some space, or point hydra.run.dir at a disk with room",
        )
    if free < (keep + 2) * checkpoint_bytes:
        log.warning(
            "%s has %.1f MB free: room for %d checkpoints of %.1f MB, fewer than the %d the run keeps plus 2 being "
            "written; the run may stop with a full disk",
            directory,
            free / 1e6,
            free // checkpoint_bytes,
            checkpoint_bytes / 1e6,
            keep,
        )


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """`torch.save(obj, path)` through a temp file in the same directory and an atomic rename."""
    atomic_write(path, lambda file: torch.save(obj, file))


def atomic_copy(source: str | Path, path: str | Path) -> None:
    """Copy the file `source` to `path` through a temp file in the same directory and an atomic rename."""
    with open(source, "rb") as original:
        atomic_write(path, lambda file: shutil.copyfileobj(original, file))


def remove_temp_files(directory: str | Path) -> list[Path]:
    """Delete the temp files (`.NAME.PID.tmp`) that saves killed before their rename left in `directory`; returns
    them. Call it only when no save into `directory` can be running (at the start of a run)."""
    leftovers = [path for path in Path(directory).glob(".*.tmp") if TEMP_FILE.match(path.name) and path.is_file()]
    for path in leftovers:
        log.info("removing %s, the temp file of a checkpoint save that was killed", path)
        path.unlink(missing_ok=True)
    return leftovers


def verify_archive(path: Path, what: str = "checkpoint") -> None:
    """Raise CheckpointError unless `path` is a complete zip archive whose records all match their CRC-32. `what` the
    file is (a checkpoint, a teacher cache), for the message."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{what} {path} is empty (0 bytes): it was never written completely")
    try:
        with zipfile.ZipFile(path) as archive:
            bad_record = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise CheckpointError(
            f"{what} {path} is truncated or corrupt ({size} bytes, not a complete PyTorch zip archive: {error})"
        ) from error
    if bad_record is not None:
        raise CheckpointError(f"{what} {path} is corrupt: record {bad_record!r} does not match its CRC-32")


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
