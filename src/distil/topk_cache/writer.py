"""Write a teacher cache: the teacher runs once over every training row of the shards, under each masking.

Rows are read by index (`ShardRows.read_rows`), masked on their own (`stream.row_batch`), batched through the teacher
under inference mode, and its top-k log-probabilities at temperature T, the log of the mass outside them and
optionally the last hidden states are written into preallocated arrays (`store.py`). Everything is written into the
staging folder `.<out>.partial` beside `out`, which also records the plan (fingerprint and shapes) and the rows done
so far (`progress.json`, after the arrays are flushed); a rerun with the same plan continues after the last rows
recorded, a rerun with another plan starts again. When every row is done, the files' sha256s and `metadata.json` are
written and the folder is renamed into place (an earlier cache at `out` is replaced, any other non-empty folder
refused unless `overwrite`; `distil.run.output_dirs`). One process writes a cache at a time (`FolderLock`).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig

from distil.data.masking import MaskingCollator
from distil.data.next_token import NextTokenCollator
from distil.data.packing import RowFormat
from distil.data.shard_rows import ShardRows
from distil.data.shards import TOKEN_COUNTS_FILE, check_split_files, check_tokenizer, file_sha256, read_metadata
from distil.data.tokenization import load_tokenizer
from distil.families import model_parts, teacher_family
from distil.run.checkpoint_io import fsync_directory
from distil.run.folder_lock import FolderLock
from distil.run.output_dirs import MARKER_FILE, check_replaceable, give_umask_permissions
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
from distil.topk_cache.stream import cached_positions, row_batch
from distil.value_checks import check_integer, is_number

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"  # in the staging folder: the fingerprint and shapes it is being written for
PROGRESS_FILE = "progress.json"  # in the staging folder: rows done


def check_settings(topk, maskings, precision, kl_positions, temperature, batch_size, max_length, causal, config):
    """Raise naming the bad key, its value and what is allowed, before any work."""
    check_integer("topk", topk, 1)
    check_integer("maskings", maskings, 1)
    check_integer("batch_size", batch_size, 1)
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


def teacher_top_k(parts, batch: dict, kl_positions: str, topk: int, temperature: float, hidden: bool, device):
    """The teacher's outputs on a batch of full rows: per row its cached positions, top-k ids and log-probabilities,
    tail log-mass, and (with `hidden`) its last hidden states (L, H)."""
    input_ids = batch["input_ids"].to(device)
    states = parts.encode(input_ids, None)  # full rows: no padding, no mask (as training runs them)
    positions = [cached_positions(labels, kl_positions) for labels in batch["labels"]]
    flat = torch.cat([row * input_ids.shape[1] + p for row, p in enumerate(positions)]).to(device)
    logits = parts.vocab_head(states.flatten(0, 1).index_select(0, flat)).float()
    log_probs = torch.log_softmax(logits / temperature, dim=-1)
    values, ids = log_probs.topk(topk, dim=-1)
    tail = log_probs.scatter(-1, ids, -math.inf).logsumexp(dim=-1)
    counts = [len(p) for p in positions]
    split = [t.cpu().split(counts) for t in (ids, values, tail)]
    return positions, *split, (states.cpu() if hidden else None)


def write_rows(arrays, parts, shard_rows, collator, shape: CacheShape, start, end, settings, device) -> None:
    """Rows start..end-1 under every masking, into `arrays`."""
    seed, kl_positions, topk, temperature = settings
    rows = shard_rows.read_rows(np.arange(start, end))
    for m in range(shape.maskings):
        batches = [row_batch(collator, row, seed, start + i, m) for i, row in enumerate(rows)]
        batch = {key: torch.cat([b[key] for b in batches]) for key in ("input_ids", "labels")}
        hidden = shape.hidden_size > 0
        positions, ids, values, tails, states = teacher_top_k(
            parts, batch, kl_positions, topk, temperature, hidden, device
        )
        for i in range(len(rows)):
            r, count = start + i, len(positions[i])
            if count > shape.positions:
                raise RuntimeError(f"row {r} has {count} cached positions, more than the {shape.positions} planned")
            if shape.mask_slots:
                masked = torch.nonzero(batch["labels"][i] != -100).squeeze(1)
                arrays["masked_positions"][m, r] = -1
                arrays["masked_positions"][m, r, : len(masked)] = masked.numpy()
                arrays["masked_ids"][m, r, : len(masked)] = batch["input_ids"][i, masked].numpy()
            arrays["topk_ids"][m, r, :count] = ids[i].numpy()
            arrays["topk_log_probs"][m, r, :count] = values[i].numpy()
            arrays["tail_log_prob"][m, r, :count] = tails[i].numpy()
            if hidden:
                arrays["hidden"][m, r] = states[i].numpy()


def open_staging(staging: Path, plan: dict, shape: CacheShape) -> tuple[dict, int]:
    """The staging folder's arrays and rows done: continued when it was started for `plan`, else created anew."""
    plan_file, progress_file = staging / PLAN_FILE, staging / PROGRESS_FILE
    if plan_file.is_file() and progress_file.is_file():
        try:
            same = json.loads(plan_file.read_text(encoding="utf-8")) == plan
            done = int(json.loads(progress_file.read_text(encoding="utf-8"))["rows_done"])
        except (OSError, ValueError, KeyError):
            same = False
        if same:
            log.info("continuing the partial cache %s after row %d of %d", staging, done, shape.rows)
            return open_arrays(staging, shape, "r+"), done
        log.info("the partial cache %s was started for other settings: starting again", staging)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    arrays = open_arrays(staging, shape, "w+")
    write_json(plan_file, plan)
    write_json(progress_file, {"rows_done": 0})
    return arrays, 0


def write_json(path: Path, value) -> None:
    """Write through a temporary file and a rename: a reader never sees half a file."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)


def finish(staging: Path, target: Path, plan: dict, shape: CacheShape, causal: bool, kl_positions: str) -> dict:
    """Record every file's size and sha256 in metadata.json, then rename the staging folder into place."""
    (staging / PROGRESS_FILE).unlink()
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
    write_json(staging / MARKER_FILE, {"kind": KIND})
    give_umask_permissions(staging)
    previous = staging.with_suffix(".old")
    if target.exists():
        target.rename(previous)
    staging.rename(target)
    fsync_directory(target.parent)
    shutil.rmtree(previous, ignore_errors=True)
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
    progress_every: int = 64,
    stop_after_rows: int | None = None,
) -> dict | None:
    """Write the cache of `teacher` on `shards` to `out` (module docstring); returns its metadata. Settings are the
    config keys of `conf/cache_teacher.yaml`. `stop_after_rows` stops (leaving the staging folder to continue from)
    once that many rows are done: for tests of the resumption; None returns only when the cache is complete."""
    config = AutoConfig.from_pretrained(teacher, trust_remote_code=trust_remote_code)
    family = teacher_family(config, where=f"teacher={teacher!r}")
    check_settings(topk, maskings, precision, kl_positions, temperature, batch_size, max_length, family.causal, config)
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
    with FolderLock(target.parent / f".{target.name}.lock", target, "out"):
        check_replaceable(target, KIND, overwrite, "out")
        staging = target.parent / f".{target.name}.partial"
        arrays, done = open_staging(staging, plan, shape)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = family.auto_class.from_pretrained(teacher, dtype=torch.float32, trust_remote_code=trust_remote_code)
        parts = model_parts(model.to(device).eval(), "teacher")
        settings = (seed, kl_positions, topk, temperature)
        started, first = time.perf_counter(), done
        with torch.inference_mode():
            for start in range(done, shape.rows, batch_size):
                end = min(start + batch_size, shape.rows)
                write_rows(arrays, parts, shard_rows, collator, shape, start, end, settings, device)
                if (start // batch_size) % progress_every == progress_every - 1 or end == shape.rows:
                    record_progress(arrays, staging, end, end - first, started)
                if stop_after_rows is not None and end >= stop_after_rows and end < shape.rows:
                    record_progress(arrays, staging, end, end - first, started)
                    return None
        del arrays
        return finish(staging, target, plan, shape, family.causal, kl_positions)


def record_progress(arrays: dict, staging: Path, rows_done: int, rows_now: int, started: float) -> None:
    """Flush the arrays, then record the rows done (so a recorded row is always on disk)."""
    for array in arrays.values():
        array.flush()
    write_json(staging / PROGRESS_FILE, {"rows_done": rows_done})
    seconds = time.perf_counter() - started
    log.info("%d rows done (%.1f rows/s in this run)", rows_done, rows_now / max(seconds, 1e-9))
