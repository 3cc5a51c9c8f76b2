"""Rows and batches of a run that trains from a teacher cache: the cached masks and the teacher's top-k outputs.

Every row is masked on its own, by a generator seeded with (seed, `CACHE_STREAM_ID`, row index, masking m), the same
`MaskingCollator.mask` as dynamic masking applied to a batch of that one row: exactly ceil(mlm_probability x content
tokens) positions (fewer when the row holds fewer maskable tokens), 80% [MASK], 10% a random id, 10% kept, weighted by
`mlm_smoothing` like the live run. The masks therefore do not depend on the batch size, the number of ranks or
workers, or the order of the rows: pass p of a run reads masking p mod M of each row, so the masks repeat after M
passes, where dynamic masking draws new ones every pass (and draws the masked count per batch, not per row). Causal
rows need no mask (M = 1).

A batch holds the model inputs and labels as usual, plus the teacher's outputs at the positions the soft-target term
reads, row-major in the order `distil.modules.row_index.RowIndex` finds them: `teacher_topk_ids` (N, k) int64,
`teacher_topk_log_probs` (N, k), `teacher_tail_log_prob` (N,), and with hidden states `teacher_hidden` (B, L, H).
"""

from __future__ import annotations

import numpy as np
import torch

from distil.data.masking import seeded_generator
from distil.data.next_token import next_token_labels
from distil.data.packing import pad_rows
from distil.modules.losses import IGNORE_INDEX

CACHE_STREAM_ID = 2**31 - 2  # keeps the cached masks independent of every training slot's and of validation's
TEACHER_TARGETS = ("teacher_topk_ids", "teacher_topk_log_probs", "teacher_tail_log_prob")  # batch keys, in the order
TEACHER_HIDDEN = "teacher_hidden"  # topk_kl_loss takes them


def row_batch(collator, row: np.ndarray, seed: int, row_index: int, masking: int) -> dict[str, torch.Tensor]:
    """The (1, L) batch of one row under masking `masking` (a causal row's next-token labels; no mask)."""
    return collator([row], seeded_generator(seed, CACHE_STREAM_ID, row_index, masking))


def cached_positions(labels: torch.Tensor, kl_positions: str) -> torch.Tensor:
    """The positions of a row (labels (L,)) whose teacher outputs are cached: those with a label, or all."""
    if kl_positions == "all":
        return torch.arange(len(labels))
    return torch.nonzero(labels != IGNORE_INDEX).squeeze(1)


class CachedTargetsCollator:
    """`IndexedRow`s (`ShardRows(indexed=True)`) -> a batch with the cached masks and the teacher's cached outputs
    (module docstring).

    Args:
        cache: the `distil.topk_cache.store.TeacherCache` (checked against the run before).
        pad_id: the tokenizer's padding id (shard rows are full: no padding is ever added).
        max_length: L.
    """

    def __init__(self, cache, pad_id: int, max_length: int) -> None:
        self.cache = cache
        self.pad_id = pad_id
        self.max_length = max_length

    def __call__(self, rows: list, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        arrays, maskings = self.cache.arrays(), self.cache.shape.maskings
        input_ids, attention_mask = pad_rows([row.ids for row in rows], self.max_length, self.pad_id)
        keys = [(row.pass_index % maskings, row.index) for row in rows]
        if self.cache.causal:
            labels = next_token_labels(input_ids, attention_mask)
        else:
            labels = torch.full_like(input_ids, IGNORE_INDEX)
            for b, key in enumerate(keys):
                positions = torch.from_numpy(arrays["masked_positions"][key].astype(np.int64))
                positions = positions[positions >= 0]
                labels[b, positions] = input_ids[b, positions]
                masked = arrays["masked_ids"][key][: len(positions)].astype(np.int64)
                input_ids[b, positions] = torch.from_numpy(masked)
        counts = [len(cached_positions(labels[b], self.cache.kl_positions)) for b in range(len(rows))]
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        for key, name in zip(TEACHER_TARGETS, ("topk_ids", "topk_log_probs", "tail_log_prob")):
            values = np.concatenate([arrays[name][k][:count] for k, count in zip(keys, counts)])
            batch[key] = torch.from_numpy(values.astype(np.int64) if name == "topk_ids" else np.array(values))
        if "hidden" in arrays:
            batch[TEACHER_HIDDEN] = torch.from_numpy(np.stack([arrays["hidden"][key] for key in keys]))
        return batch
