"""Which checkpoint a run resumes from: an explicit `ckpt_path`, or with `resume=auto` the newest good one of the run.

`resume=auto` looks at every `*.ckpt` of the run's checkpoint folder, skips (and logs) the ones that are truncated or
corrupt, and picks the one with the highest `global_step`; on a tie `last.ckpt` wins, then the newest file. With no
checkpoint there (the first launch of a job that may be requeued), training starts from scratch. `ckpt_path=last`
picks the same checkpoint but fails when the folder holds none (a new launch gets a new run directory: point
`hydra.run.dir` at the run to continue). Every path is checked before any weights are loaded, so a bad file fails
the run in seconds with its name in the error.

One run folder holds one run: a launch into a checkpoint folder that already holds checkpoints must resume from one
of them (`resume=auto`, `ckpt_path=last` or `ckpt_path=<a file of that folder>`), else it is refused. Before training
(`tidy_checkpoint_folder`, rank 0) temp files of killed saves are removed, and when the run resumes from a file of
its folder other than `last.ckpt`, `last.ckpt` becomes a copy of it; checkpoints of later steps (a continuation the
resume abandons, e.g. after `ckpt_path=step0000004.ckpt` in a run at step 16) are renamed to `NAME.rewound`, kept
but no longer picked by `resume=auto`. So `last.ckpt` is the newest state of the run from the first step on. A
checkpoint of another student (say 4 layers, the config 2) is named before training (`check_resumed_student`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only

from distil.run.checkpoint_io import (
    CheckpointError,
    atomic_copy,
    check_checkpoint,
    peek_checkpoint,
    remove_temp_files,
    verify_archive,
)

log = logging.getLogger(__name__)

RESUME_MODES = (None, "auto")
LIGHTNING_CKPT_KEYWORDS = ("hpc", "best")  # resolved by Lightning itself from its callbacks
LAST = "last.ckpt"
SET_ASIDE_SUFFIX = ".rewound"  # checkpoints of an abandoned continuation: kept, no longer *.ckpt
CONFIG_KEYS_NOT_COMPARED = ("transformers_version", "_name_or_path", "architectures", "dtype", "torch_dtype")


def checkpoint_rank(path: Path, global_step: int) -> tuple[int, int, float]:
    """Sort key: higher step first, then last.ckpt, then the most recently written file."""
    return global_step, int(path.name == LAST), path.stat().st_mtime


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
    """The checkpoint `trainer.fit` should resume from (None: start fresh); raises naming a bad file or key, or the
    folder when it holds checkpoints that this launch would not resume from.

    Args:
        ckpt_path: the `ckpt_path` key: a file, "last" (the newest good checkpoint of `checkpoint_dir`, which must
            exist), one of Lightning's keywords (hpc, best), or None.
        resume: the `resume` key: None (use ckpt_path) or "auto" (newest good checkpoint of `checkpoint_dir`).
        checkpoint_dir: the run's checkpoint folder (`callbacks.model_checkpoint.dirpath`).
    """
    resolved = chosen_checkpoint(ckpt_path, resume, checkpoint_dir)
    if resume is None:
        check_one_run_per_folder(resolved, checkpoint_dir)
    return resolved


def check_one_run_per_folder(resolved: str | None, checkpoint_dir: str | Path) -> None:
    """A launch into a checkpoint folder that holds checkpoints must resume from one of them."""
    existing = sorted(path.name for path in Path(checkpoint_dir).glob("*.ckpt"))
    if not existing or resolved in LIGHTNING_CKPT_KEYWORDS:
        return
    if resolved is not None and Path(resolved).resolve().parent == Path(checkpoint_dir).resolve():
        return
    shown = ", ".join(existing[:5]) + (", ..." if len(existing) > 5 else "")
    start = "starts from scratch" if resolved is None else f"resumes from {resolved}"
    raise FileExistsError(
        f"the run folder {checkpoint_dir} already holds checkpoints ({shown}) and this launch {start}: continue "
        "that run with resume=auto (or ckpt_path=last), or give this run a folder of its own (hydra.run.dir=...); "
        "a run never writes its checkpoints over another's"
    )


def chosen_checkpoint(ckpt_path: str | None, resume: str | None, checkpoint_dir: str | Path) -> str | None:
    """The checkpoint named by `ckpt_path` / `resume` (see `resolve_ckpt_path`), checked."""
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


@rank_zero_only
def tidy_checkpoint_folder(checkpoint_dir: str | Path, resumed: str | None) -> None:
    """Before training (rank 0): remove temp files of killed saves; when resuming from a checkpoint of this folder
    other than last.ckpt, set aside the checkpoints of later steps (renamed NAME.rewound) and make last.ckpt a copy of
    the resumed one (see the module docstring)."""
    directory = Path(checkpoint_dir)
    remove_temp_files(directory)
    if resumed in (None, *LIGHTNING_CKPT_KEYWORDS) or Path(resumed).resolve().parent != directory.resolve():
        return
    resumed_path = Path(resumed)
    resumed_step = int(peek_checkpoint(resumed_path).get("global_step", 0))
    later = []
    for path in sorted(directory.glob("*.ckpt")):
        try:
            step = int(peek_checkpoint(path).get("global_step", 0))
        except CheckpointError:
            continue  # damaged: never picked by resume=auto; overwritten by the next save of the same name
        if step > resumed_step:
            later.append(path)
    for path in later:
        path.rename(path.with_name(path.name + SET_ASIDE_SUFFIX))
    if later:
        log.warning(
            "resuming from step %d of %s: set aside %d checkpoint(s) of later steps, which this run abandons, as "
            "*%s (kept; delete them when no longer needed): %s",
            resumed_step,
            resumed_path,
            len(later),
            SET_ASIDE_SUFFIX,
            [path.name for path in later],
        )
    if resumed_path.name != LAST:
        atomic_copy(resumed_path, directory / LAST)


def check_resumed_student(ckpt_path: str | None, student_config: dict, student_settings: dict) -> None:
    """Raise before training when the checkpoint holds another student than the config builds.

    Compares the student config stored in the checkpoint (`student_config`, a Hugging Face config dict, whatever the
    model family) with the one built from this run's config, key by key, and names the differing keys together with
    the differing `student.*` settings of the run that wrote the checkpoint (its `run_config`).

    Args:
        ckpt_path: the resolved checkpoint (None or a Lightning keyword: nothing to compare).
        student_config: `student.config.to_dict()` of the student this run built.
        student_settings: this run's `student` config section as a plain dict.
    """
    if ckpt_path is None or ckpt_path in LIGHTNING_CKPT_KEYWORDS:
        return
    checkpoint = peek_checkpoint(ckpt_path)
    stored = checkpoint.get("student_config")
    if stored is None:
        return
    keys = sorted((set(stored) | set(student_config)) - set(CONFIG_KEYS_NOT_COMPARED))
    differing = [key for key in keys if stored.get(key) != student_config.get(key)]
    if not differing:
        return
    written_with = (checkpoint.get("run_config") or {}).get("student") or {}
    settings = [
        f"student.{key}={written_with.get(key)!r}, the config {student_settings.get(key)!r}"
        for key in sorted(set(written_with) | set(student_settings))
        if written_with.get(key) != student_settings.get(key)
    ]
    details = "; ".join(
        f"{key}: checkpoint {stored.get(key)!r}, config {student_config.get(key)!r}" for key in differing
    )
    raise ValueError(
        f"ckpt_path={ckpt_path!r} holds another student than this config builds: "
        + (f"checkpoint has {'; '.join(settings)} " if settings else "")
        + f"(student config {details}). Resume with the settings of the run that wrote it, or start a new run in a "
        "folder of its own"
    )
