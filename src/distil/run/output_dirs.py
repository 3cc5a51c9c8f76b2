"""Output folders (exported models, token shards) that are written whole or not at all, and never over a stranger's.

`replace_output_dir` fills a fresh staging folder beside the target (`.<name>.<random>.tmp`, same filesystem), adds
the marker file `distil_output.json` naming what kind of output it is, and only then renames it into place; a
previous folder at the target is moved aside first and deleted after. So a folder never mixes two outputs (no
`model.onnx` of an earlier export beside new weights), and a failure or a kill while writing leaves the previous
folder as it was; the folder and its files get the permissions the umask gives (not the owner-only ones of a
temporary folder). One process writes a target at a time: a second is refused at once (`distil.run.folder_lock`,
the lock file `.<name>.lock` beside the target), before it looks at the folder. A non-empty target without the
marker of the same kind (a model folder such as the teacher, or any other folder) is refused, naming what it holds,
unless `overwrite` is set, which replaces it whole. Staging folders left by a killed write are removed at the next
write to the same target.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from distil.run.checkpoint_io import fsync_directory
from distil.run.folder_lock import FolderLock

log = logging.getLogger(__name__)

MARKER_FILE = "distil_output.json"  # written into every output folder: {"kind": ..., plus details}
LISTED_ENTRIES = 5  # entries of a refused folder named in the error


def output_marker(directory: Path) -> dict:
    """The content of `directory`'s marker file (its kind and details), or {} when it has none (or an unreadable
    one)."""
    try:
        marker = json.loads((Path(directory) / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def output_kind(directory: Path) -> str | None:
    """The kind recorded in `directory`'s marker file, or None when it has none (or an unreadable one)."""
    return output_marker(directory).get("kind")


def describe_contents(directory: Path) -> str:
    """The first entries of `directory` by name, and how many there are."""
    names = sorted(path.name for path in directory.iterdir())
    shown = ", ".join(names[:LISTED_ENTRIES])
    return f"{shown}, ... ({len(names)} entries)" if len(names) > LISTED_ENTRIES else shown


def check_replaceable(target: Path, kind: str, overwrite: bool, key: str) -> None:
    """Raise unless `target` is absent, empty, an earlier output of `kind`, or `overwrite` is set."""
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{key}={str(target)!r} is a file, not a folder: give a folder path")
    if not target.is_dir() or not any(target.iterdir()) or output_kind(target) == kind or overwrite:
        return
    raise FileExistsError(
        f"{key}={str(target)!r} holds {describe_contents(target)} and is not a {kind} folder written by distil "
        f"(it has no {MARKER_FILE} of kind {kind!r}): refusing to replace it. Choose another {key}, or add "
        "overwrite=true to replace the whole folder"
    )


def umask() -> int:
    """The process's file mode creation mask (read by setting it, then setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def give_umask_permissions(folder: Path) -> None:
    """Give `folder` and everything in it the permissions the umask gives new folders and files (e.g. drwxr-xr-x
    and -rw-r--r-- with umask 022): `tempfile` makes the staging folder drwx------ and some writers (safetensors)
    make files -rw-------, which colleagues on a shared filesystem could not read."""
    mask = umask()
    folder.chmod(0o777 & ~mask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def remove_staging_leftovers(target: Path) -> None:
    """Delete staging folders of `target` left by a write that was killed before its rename."""
    for leftover in target.parent.glob(f".{target.name}.*.tmp"):
        log.info("removing %s, left by an interrupted write of %s", leftover, target)
        shutil.rmtree(leftover, ignore_errors=True)


def replace_output_dir(
    target: str | Path,
    kind: str,
    write: Callable[[Path], None],
    overwrite: bool = False,
    key: str = "out",
    details: dict | None = None,
) -> Path:
    """Write the folder `target` whole with `write(staging_folder)` (see the module docstring); returns `target`.

    Args:
        target: the output folder.
        kind: what the folder holds (e.g. "hf_model", "token_shards"); only an earlier output of the same kind is
            replaced without `overwrite`.
        write: fills the folder it is given (an empty staging folder); an exception leaves `target` untouched.
        overwrite: replace `target` whole even when it is not an earlier output of `kind`.
        key: the config key naming `target`, for errors.
        details: more fields for the marker file (e.g. the checkpoint exported).
    """
    target = Path(target)
    with FolderLock(target.parent / f".{target.name}.lock", target, key):
        return write_whole(target, kind, write, overwrite, key, details)


def write_whole(
    target: Path, kind: str, write: Callable[[Path], None], overwrite: bool, key: str, details: dict | None
) -> Path:
    """`replace_output_dir` once its lock is held."""
    check_replaceable(target, kind, overwrite, key)
    remove_staging_leftovers(target)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        write(staging)
        move_into_place(staging, target, kind, details)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def move_into_place(staging: Path, target: Path, kind: str, details: dict | None = None) -> None:
    """Mark the filled `staging` folder as an output of `kind` (with `details`), give it the umask's permissions and
    rename it to `target`; an earlier `target` is moved aside first (and put back when the rename fails), then
    deleted once the new folder is in place."""
    previous = staging.with_suffix(".old")  # unique like the staging folder; not matched by the leftover cleanup
    marker = {"kind": kind, **(details or {})}
    (staging / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    give_umask_permissions(staging)
    try:
        if target.exists():
            target.rename(previous)
        staging.rename(target)
    except BaseException:
        if previous.exists() and not target.exists():
            previous.rename(target)
        raise
    fsync_directory(target.parent)
    shutil.rmtree(previous, ignore_errors=True)
