"""How the training step runs fast: teacher precision, the chunked vocabulary loss and `torch.compile`.

None of these changes what the step computes (the CPU tests check each against the plain step); each has a GPU figure
with its command in docs/performance.md. Two measured speed-ups need no option and are always on in the recipe: the
row index found on the host (`modules/row_index.py`) and no attention mask for batches without padding. Fused AdamW
is an optimizer setting (`distill.optimizer.fused`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from distil.perf.chunked_vocab_loss import ChunkObjective, chunked_logits_loss

TEACHER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class StepSpeed:
    """The step's speed options (`distill.speed` in the config).

    Args:
        teacher_dtype: dtype the frozen teacher's weights are kept in: "float32", or "bfloat16" (GPU: half the
            teacher's memory traffic; its forward runs under no_grad, so no master copy is needed).
        vocab_chunk_rows: project the vocabulary and compute the objective this many rows at a time, so the logits of
            all rows are never held at once (`chunked_vocab_loss.py`); None = all rows at once.
        compile: `torch.compile` both encoders, the cosine loss and the logits objective.
    """

    teacher_dtype: str = "float32"
    vocab_chunk_rows: int | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        if self.teacher_dtype not in TEACHER_DTYPES:
            raise ValueError(
                f"distill.speed.teacher_dtype={self.teacher_dtype!r} is not allowed: use one of {list(TEACHER_DTYPES)}"
            )
        chunk = self.vocab_chunk_rows
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
            raise ValueError(f"distill.speed.vocab_chunk_rows={chunk!r} is not allowed: use null or an integer >= 1")
        if not isinstance(self.compile, bool):
            raise ValueError(f"distill.speed.compile={self.compile!r} is not allowed: use true or false")

    def cast_teacher(self, teacher: nn.Module) -> nn.Module:
        """The teacher in `teacher_dtype`."""
        return teacher.to(TEACHER_DTYPES[self.teacher_dtype])

    def compiled(self, function: Callable, **options) -> Callable:
        """`function`, compiled when `compile` is set (`options` go to `torch.compile`)."""
        return torch.compile(function, **options) if self.compile else function

    def chunked(self, objective: ChunkObjective) -> Callable | None:
        """`(student_features, student_projection, teacher, labels, masked_rows) ->
        (total, contributions)`: the objective over all rows, `vocab_chunk_rows` at a time (`chunked_logits_loss`);
        None when the logits are computed all at once."""
        if self.vocab_chunk_rows is None:
            return None
        return functools.partial(chunked_logits_loss, chunk_rows=self.vocab_chunk_rows, objective=objective)
