"""Write a teacher cache: the teacher runs once over every training row of the shards, under each masking.

Rows are read by index (`ShardRows.read_rows`), masked on their own (`stream.row_batch`), batched through the teacher
under inference mode, and its top-k log-probabilities at temperature T, the log of the mass outside them and
optionally the last hidden states are written into preallocated arrays (`store.py`). Everything is written into the
staging folder `.<out>.partial` beside `out`, which also records the plan (fingerprint, shapes, batch size) and one
done marker per batch of rows, set once that batch's outputs are flushed to disk (`teacher_pass.py`). `devices`
processes (one per GPU) share the batches not done yet, every `devices`-th one each, writing disjoint rows of the same
arrays, each with `num_workers` dataloader workers masking its rows while the teacher runs; a rerun with the same
plan continues with the batches not marked done (with any number of processes), a rerun with another plan starts
again. When every batch is done, the files' sha256s and `metadata.json` are written and the folder is renamed into
place (an earlier cache at `out` is replaced, any other non-empty folder refused unless `overwrite`;
`distil.run.output_dirs`). One command writes a cache at a time (`FolderLock`). Rows are independent of the batch and
of the process that computes them (masks are seeded per row), so the cache is the same however it was split.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import shutil
from pathlib import Path

import numpy as np
from transformers import AutoConfig

from distil.data.masking import MaskingCollator
from distil.data.next_token import NextTokenCollator
from distil.data.packing import RowFormat
from distil.data.shard_rows import ShardRows
from distil.data.shards import TOKEN_COUNTS_FILE, check_split_files, check_tokenizer, file_sha256, read_metadata
from distil.data.tokenization import load_tokenizer
from distil.families import teacher_family
from distil.run.folder_lock import FolderLock
from distil.run.output_dirs import check_replaceable, move_into_place
from distil.topk_cache.fingerprint import run_fingerprint
from distil.topk_cache.store import (
    FORMAT,
    KIND,
    KL_POSITIONS,
    METADATA_FILE,
    PRECISIONS,
    VERSION,
    CacheShape,
    array_file,
    open_arrays,
    shape_record,
)
from distil.topk_cache.teacher_pass import DONE_FILE, SlotJob, write_slot
from distil.value_checks import check_integer, is_number

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"  # in the staging folder: the fingerprint and shapes it is being written for


def check_settings(
    topk, maskings, precision, kl_positions, temperature, batch_size, devices, num_workers, max_length, causal, config
):
    """Raise naming the bad key, its value and what is allowed, before any work."""
    check_integer("topk", topk, 1)
    check_integer("maskings", maskings, 1)
    check_integer("batch_size", batch_size, 1)
    check_integer("devices", devices, 1)
    check_integer("num_workers", num_workers, 0)
    if topk > config.vocab_size:
        raise ValueError(f"topk={topk} is not allowed: at most the teacher's vocabulary, {config.vocab_size} ids")
    if causal and maskings != 1:
        raise ValueError(f"maskings={maskings} is not allowed for a causal teacher: its rows are not masked; use 1")
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not allowed: use one of {list(PRECISIONS)}")
    if kl_positions not in KL_POSITIONS:
        raise ValueError(f"kl_positions={kl_positions!r} is not allowed: use one of {list(KL_POSITIONS)}")
    if not (is_number(temperature) and 0 < temperature < math.inf):
        raise ValueError(f"temperature={temperature!r} is not allowed: a finite number > 0 (distill.temperature)")
    longest = teacher_family(config).max_length(config)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or not 8 <= max_length <= longest:
        raise ValueError(f"max_length={max_length!r} is not allowed: an integer in 8..{longest} (data.max_length)")


def open_staging(staging: Path, plan: dict, shape: CacheShape, batches: int) -> np.ndarray:
    """The staging folder's markers of the batches done (its arrays created, zero-filled, when it is new): continued
    when it was started for `plan`, else created anew."""
    plan_file, done_file = staging / PLAN_FILE, staging / DONE_FILE
    if plan_file.is_file() and done_file.is_file():
        try:
            same = json.loads(plan_file.read_text(encoding="utf-8")) == plan
        except (OSError, ValueError):
            same = False
        if same and done_file.stat().st_size == batches:
            done = np.memmap(done_file, dtype=np.uint8, mode="r+")
            log.info("continuing the partial cache %s: %d of %d batches done", staging, int(done.sum()), batches)
            return done
        log.info("the partial cache %s was started for other settings: starting again", staging)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    open_arrays(staging, shape, "w+")
    done = np.memmap(done_file, dtype=np.uint8, mode="w+", shape=(batches,))
    done.flush()
    write_json(plan_file, plan)
    return done


def write_json(path: Path, value) -> None:
    """Write through a temporary file and a rename: a reader never sees half a file."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)


def finish(staging: Path, target: Path, plan: dict, shape: CacheShape, causal: bool, kl_positions: str) -> dict:
    """Record every file's size and sha256 in metadata.json, then move the staging folder into place
    (`move_into_place`, as every whole-folder output)."""
    (staging / DONE_FILE).unlink()
    (staging / PLAN_FILE).unlink()
    files = {
        array_file(name): {"bytes": (staging / array_file(name)).stat().st_size}
        | {"sha256": file_sha256(staging / array_file(name))}
        for name in shape.arrays()
    }
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "fingerprint": plan["fingerprint"],
        "shape": shape_record(shape),
        "causal": causal,
        "kl_positions": kl_positions,
        "bytes_per_row_and_masking": shape.bytes_per_row(),
        "files": files,
    }
    write_json(staging / METADATA_FILE, metadata)
    move_into_place(staging, target, KIND)
    return metadata


def cache_teacher(
    shards: str,
    teacher: str,
    out: str,
    topk: int = 32,
    maskings: int = 1,
    max_length: int = 128,
    seed: int = 42,
    mlm_probability: float = 0.15,
    mlm_smoothing: float | None = 0.7,
    temperature: float = 2.0,
    kl_positions: str = "all",
    hidden_states: bool = False,
    precision: str = "float16",
    batch_size: int = 32,
    overwrite: bool = False,
    trust_remote_code: bool = False,
    devices: int = 1,
    num_workers: int = 0,
    stop_after_batches: int | None = None,
) -> dict | None:
    """Write the cache of `teacher` on `shards` to `out` (module docstring); returns its metadata. Settings are the
    config keys of `conf/cache_teacher.yaml`; `devices` processes write at once (one per GPU). `stop_after_batches`
    stops after that many batches, leaving the staging folder to continue from, and returns None (tests of the
    resumption)."""
    config = AutoConfig.from_pretrained(teacher, trust_remote_code=trust_remote_code)
    family = teacher_family(config, where=f"teacher={teacher!r}")
    check_settings(
        topk,
        maskings,
        precision,
        kl_positions,
        temperature,
        batch_size,
        devices,
        num_workers,
        max_length,
        family.causal,
        config,
    )
    shards_metadata = read_metadata(shards)
    check_split_files(shards, shards_metadata, "train", verify=True)
    tokenizer = load_tokenizer(teacher, key="teacher", causal=family.causal)
    check_tokenizer(shards_metadata, tokenizer, teacher, shards)
    row_format = RowFormat.of(tokenizer, family.causal)
    if family.causal:
        collator = NextTokenCollator.from_tokenizer(tokenizer, max_length)
        mask_slots, slots = 0, max_length - (kl_positions == "masked")
    else:
        counts = np.load(Path(shards) / TOKEN_COUNTS_FILE) if mlm_smoothing is not None else None
        collator = MaskingCollator.from_tokenizer(
            tokenizer, max_length, mlm_probability=mlm_probability, mlm_smoothing=mlm_smoothing, token_counts=counts
        )
        mask_slots = math.ceil(mlm_probability * row_format.content_length(max_length))
        slots = mask_slots if kl_positions == "masked" else max_length
    shard_rows = ShardRows(shards, shards_metadata, max_length, row_format, shuffle=False, seed=seed)
    shape = CacheShape(
        rows=shard_rows.num_rows,
        maskings=maskings,
        max_length=max_length,
        mask_slots=mask_slots,
        positions=slots,
        k=topk,
        hidden_size=config.hidden_size if hidden_states else 0,
        token_dtype=shards_metadata["dtype"],
        precision=precision,
    )
    fields = run_fingerprint(
        teacher, shards_metadata, max_length, seed, mlm_probability, mlm_smoothing, temperature, kl_positions
    )
    plan = {"fingerprint": fields | {"k": str(topk), "maskings": str(maskings), "precision": precision}}
    plan["shape"] = shape_record(shape)
    log.info(
        "cache of %d rows x %d masking(s): %.1f MB per million tokens and masking (%s bytes per row)",
        shape.rows,
        maskings,
        sum(shape.bytes_per_row().values()) * 1e6 / row_format.content_length(max_length) / 1e6,
        shape.bytes_per_row(),
    )
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    batches = math.ceil(shape.rows / batch_size)
    plan["batch_size"] = batch_size  # the unit of the progress markers
    settings = (seed, kl_positions, topk, temperature)
    job = SlotJob(teacher, trust_remote_code, shard_rows, collator, shape, settings, batch_size, num_workers)
    with FolderLock(target.parent / f".{target.name}.lock", target, "out"):
        check_replaceable(target, KIND, overwrite, "out")
        staging = target.parent / f".{target.name}.partial"
        done = open_staging(staging, plan, shape, batches)
        remaining = np.flatnonzero(done == 0)  # read once, before any process marks a batch: every one is given out
        del done
        if devices == 1:
            write_slot(job, staging, remaining[:stop_after_batches], 0, 1)
        else:
            run_slots(job, staging, remaining, devices)
        if not np.memmap(staging / DONE_FILE, dtype=np.uint8, mode="r").all():
            if stop_after_batches is not None:
                return None  # stopped early: the staging folder continues at the next run
            raise RuntimeError(f"batches of {staging} are still not done; run again to continue")
        return finish(staging, target, plan, shape, family.causal, kl_positions)


def run_slots(job: SlotJob, staging: Path, remaining: np.ndarray, devices: int) -> None:
    """`write_slot` in `devices` processes at once (one per GPU), slot s writing every devices-th of the `remaining`
    batches from the s-th; raises naming the slots that failed (the staging folder keeps what the others wrote, for
    the next run)."""
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=write_slot, args=(job, staging, remaining[slot::devices], slot, devices))
        for slot in range(devices)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failed = [slot for slot, process in enumerate(processes) if process.exitcode != 0]
    if failed:
        raise RuntimeError(
            f"cache writing slots {failed} of {devices} failed (see their errors above); run again to continue"
        )
