"""One writing process of a teacher cache: batches of rows masked on the CPU (in dataloader workers), the teacher's
forward on them, and their outputs written into the staging folder's arrays (`writer.py` plans and finishes).

A batch b holds rows [b x batch_size, (b + 1) x batch_size) under every masking; once its outputs are flushed to
disk its done marker (one byte of `done.bin`) is set, so a later run redoes at most the batches in flight.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from transformers import AutoConfig

from distil.data.shard_rows import ShardRows
from distil.families import model_parts, teacher_family
from distil.topk_cache.store import CacheShape, open_arrays
from distil.topk_cache.stream import cached_positions, row_batch

log = logging.getLogger(__name__)

DONE_FILE = "done.bin"  # in the staging folder: one byte per batch of rows, 1 once its outputs are on disk
PROGRESS_EVERY = 64  # batches between progress lines of a writing process


@dataclass(frozen=True)
class SlotJob:
    """What a writing process needs (picklable: memory maps are opened in the process that reads them)."""

    teacher: str
    trust_remote_code: bool
    shard_rows: ShardRows
    collator: object  # MaskingCollator or NextTokenCollator of the run's settings
    shape: CacheShape
    settings: tuple  # seed, kl_positions, topk, temperature
    batch_size: int
    num_workers: int  # dataloader workers masking the rows of each writing process


class MaskedBatches(Dataset):
    """Item i: (batch index, input_ids (M, B, L), labels (M, B, L)) of the i-th of `batches` under every masking."""

    def __init__(self, job: SlotJob, batches: np.ndarray) -> None:
        self.job = job
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        job, batch = self.job, int(self.batches[i])
        start = batch * job.batch_size
        rows = job.shard_rows.read_rows(np.arange(start, min(start + job.batch_size, job.shape.rows)))
        seed = job.settings[0]
        ids, labels = [], []
        for m in range(job.shape.maskings):
            masked = [row_batch(job.collator, row, seed, start + r, m) for r, row in enumerate(rows)]
            ids.append(torch.cat([b["input_ids"] for b in masked]))
            labels.append(torch.cat([b["labels"] for b in masked]))
        return batch, torch.stack(ids), torch.stack(labels)


def teacher_top_k(parts, input_ids, labels, kl_positions: str, topk: int, temperature: float, hidden: bool, device):
    """The teacher's outputs on a batch of full rows: per row its cached positions, top-k ids and log-probabilities,
    tail log-mass, and (with `hidden`) its last hidden states (L, H)."""
    states = parts.encode(input_ids.to(device), None)  # full rows: no padding, no mask (as training runs them)
    positions = [cached_positions(row_labels, kl_positions) for row_labels in labels]
    flat = torch.cat([row * input_ids.shape[1] + p for row, p in enumerate(positions)]).to(device)
    logits = parts.vocab_head(states.flatten(0, 1).index_select(0, flat)).float()
    log_probs = torch.log_softmax(logits / temperature, dim=-1)
    values, ids = log_probs.topk(topk, dim=-1)
    tail = log_probs.scatter(-1, ids, -math.inf).logsumexp(dim=-1)
    counts = [len(p) for p in positions]
    split = [t.cpu().split(counts) for t in (ids, values, tail)]
    return positions, *split, (states.cpu() if hidden else None)


def write_batch(arrays, parts, job: SlotJob, start: int, input_ids, labels, device) -> None:
    """The teacher's outputs on rows start.. (input_ids and labels (M, B, L)) under every masking, into `arrays`."""
    shape, (_, kl_positions, topk, temperature) = job.shape, job.settings
    hidden = shape.hidden_size > 0
    for m in range(shape.maskings):
        positions, ids, values, tails, states = teacher_top_k(
            parts, input_ids[m], labels[m], kl_positions, topk, temperature, hidden, device
        )
        for i in range(input_ids.shape[1]):
            r, count = start + i, len(positions[i])
            if count > shape.positions:
                raise RuntimeError(f"row {r} has {count} cached positions, more than the {shape.positions} planned")
            if shape.mask_slots:
                masked = torch.nonzero(labels[m, i] != -100).squeeze(1)
                arrays["masked_positions"][m, r] = -1
                arrays["masked_positions"][m, r, : len(masked)] = masked.numpy()
                arrays["masked_ids"][m, r, : len(masked)] = input_ids[m, i, masked].numpy()
            arrays["topk_ids"][m, r, :count] = ids[i].numpy()
            arrays["topk_log_probs"][m, r, :count] = values[i].numpy()
            arrays["tail_log_prob"][m, r, :count] = tails[i].numpy()
            if hidden:
                arrays["hidden"][m, r] = states[i].numpy()


def slot_device(slot: int) -> torch.device:
    """GPU `slot` (modulo the GPUs present), else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{slot % torch.cuda.device_count()}")
    return torch.device("cpu")


def write_slot(job: SlotJob, staging: Path, mine: np.ndarray, slot: int, slots: int) -> None:
    """Write the batches `mine` (those of `slot` of `slots` writing processes): each batch's rows into the arrays,
    then, once they are flushed, its done marker."""
    if len(mine) == 0:
        return
    done = np.memmap(staging / DONE_FILE, dtype=np.uint8, mode="r+")
    device = slot_device(slot)
    config = AutoConfig.from_pretrained(job.teacher, trust_remote_code=job.trust_remote_code)
    family = teacher_family(config)
    model = family.auto_class.from_pretrained(job.teacher, dtype=torch.float32, trust_remote_code=job.trust_remote_code)
    parts = model_parts(model.to(device).eval(), "teacher")
    arrays = open_arrays(staging, job.shape, "r+")
    loader = DataLoader(MaskedBatches(job, mine), batch_size=None, num_workers=job.num_workers)
    started = time.perf_counter()
    with torch.inference_mode():
        for count, (batch, input_ids, labels) in enumerate(loader, start=1):
            write_batch(arrays, parts, job, batch * job.batch_size, input_ids, labels, device)
            for array in arrays.values():
                array.flush()
            done[batch] = 1
            done.flush()
            if count % PROGRESS_EVERY == 0 or count == len(mine):
                rate = count * job.batch_size / max(time.perf_counter() - started, 1e-9)
                log.info("slot %d of %d: %d of its %d batches done (%.1f rows/s)", slot, slots, count, len(mine), rate)
