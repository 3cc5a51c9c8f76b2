"""Overrides of the scaling tests' short runs of `python -m distil.train` (launched with `tests.train_cli`)."""

from __future__ import annotations

from pathlib import Path

from tests.tiny_assets import tiny_train_overrides


def tiny_overrides(teacher_dir: Path, corpus_dir: Path, steps: int = 2) -> list[str]:
    """A run of `steps` optimizer steps on 4 rows of 32 tokens, validated once at the end on 2 batches."""
    return [
        *tiny_train_overrides(teacher_dir, corpus_dir),
        "data.val_batch_size=4",
        "data.documents_per_block=8",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
    ]
