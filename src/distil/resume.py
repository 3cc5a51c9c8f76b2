"""Which checkpoint a run resumes from: an explicit `ckpt_path`, or with `resume=auto` the newest good one of the run.

`resume=auto` looks at every `*.ckpt` of the run's checkpoint folder, skips (and logs) the ones that are truncated or
corrupt, and picks the one with the highest `global_step`; on a tie `last.ckpt` wins, then the newest file. With no
checkpoint there (the first launch of a job that may be requeued), training starts from scratch. `ckpt_path=last`
picks the same checkpoint but fails when the folder holds none (a new launch gets a new run directory: point
`hydra.run.dir` at the run to continue). Every path is checked before any weights are loaded, so a bad file fails
the run in seconds with its name in the error.
"""

from __future__ import annotations

import logging
from pathlib import Path

from distil.checkpoint_io import CheckpointError, check_checkpoint, peek_checkpoint, verify_archive

log = logging.getLogger(__name__)

RESUME_MODES = (None, "auto")
LIGHTNING_CKPT_KEYWORDS = ("hpc", "best")  # resolved by Lightning itself from its callbacks


def checkpoint_rank(path: Path, global_step: int) -> tuple[int, int, float]:
    """Sort key: higher step first, then last.ckpt, then the most recently written file."""
    return global_step, int(path.name == "last.ckpt"), path.stat().st_mtime


def find_resume_checkpoint(directory: str | Path) -> Path | None:
    """The good checkpoint of `directory` with the highest global step, or None when it holds none.

    Every file is peeked at (tensors memory-mapped, cheap) for its step; then files are fully verified (CRC-32 of
    every record) from the best down, and the first that passes is returned.
    """
    directory = Path(directory)
    ranked: list[tuple[tuple[int, int, float], Path]] = []
    for path in sorted(directory.glob("*.ckpt")):
        try:
            global_step = int(peek_checkpoint(path).get("global_step", 0))
        except CheckpointError as error:
            log.warning("resume=auto skips %s: %s", path, error)
            continue
        ranked.append((checkpoint_rank(path, global_step), path))
    for _, path in sorted(ranked, reverse=True):
        try:
            verify_archive(path)
        except CheckpointError as error:
            log.warning("resume=auto skips %s: %s", path, error)
            continue
        return path
    return None


def resolve_ckpt_path(ckpt_path: str | None, resume: str | None, checkpoint_dir: str | Path) -> str | None:
    """The checkpoint `trainer.fit` should resume from (None: start fresh); raises naming a bad file or key.

    Args:
        ckpt_path: the `ckpt_path` key: a file, "last" (the newest good checkpoint of `checkpoint_dir`, which must
            exist), one of Lightning's keywords (hpc, best), or None.
        resume: the `resume` key: None (use ckpt_path) or "auto" (newest good checkpoint of `checkpoint_dir`).
        checkpoint_dir: the run's checkpoint folder (`callbacks.model_checkpoint.dirpath`).
    """
    if resume not in RESUME_MODES:
        raise ValueError(f"resume={resume!r} is not allowed: use null (start fresh or use ckpt_path) or auto")
    if resume == "auto":
        if ckpt_path is not None:
            raise ValueError(f"resume=auto and ckpt_path={ckpt_path!r} are both set: give one of them")
        found = find_resume_checkpoint(checkpoint_dir)
        if found is None:
            log.info("resume=auto: no usable checkpoint in %s, starting from scratch", checkpoint_dir)
            return None
        log.info("resume=auto: resuming from %s", found)
        return str(found)
    if ckpt_path == "last":
        found = find_resume_checkpoint(checkpoint_dir)
        if found is None:
            raise FileNotFoundError(
                f"ckpt_path=last: no usable checkpoint in {checkpoint_dir}. A new launch writes to a new run "
                "directory: add hydra.run.dir=<the run to continue>, give ckpt_path=<a .ckpt file> or use resume=auto"
            )
        log.info("ckpt_path=last: resuming from %s", found)
        return str(found)
    if ckpt_path is None or ckpt_path in LIGHTNING_CKPT_KEYWORDS:
        return ckpt_path
    try:
        check_checkpoint(ckpt_path)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"ckpt_path={ckpt_path!r}: {error}") from error
    except CheckpointError as error:
        raise CheckpointError(f"ckpt_path={ckpt_path!r}: {error}") from error
    return str(ckpt_path)


def run_checkpoint_dir(cfg) -> Path:
    """The run's checkpoint folder: `callbacks.model_checkpoint.dirpath`, else `<paths.output_dir>/checkpoints`."""
    model_checkpoint = (cfg.get("callbacks") or {}).get("model_checkpoint") or {}
    return Path(model_checkpoint.get("dirpath") or Path(cfg.paths.output_dir) / "checkpoints")
