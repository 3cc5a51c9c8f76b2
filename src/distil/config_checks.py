"""Validation of the composed run config, before any weights are loaded or data is read.

Each error names the config key, the bad value and what is allowed.
"""

from __future__ import annotations

from omegaconf import DictConfig

from distil.modules.distillation import check_objective
from distil.modules.student import validate_layer_map


def check_distill_config(cfg: DictConfig) -> None:
    """Temperature, loss weights, KL positions and teacher dtype (`distill.*`)."""
    d = cfg.distill
    check_objective(
        d.temperature, d.alpha_ce, d.alpha_mlm, d.alpha_cos, d.alpha_mse, d.kl_positions, d.teacher_dtype
    )


def check_student_config(cfg: DictConfig, teacher_layers: int) -> None:
    """Student depth within 1..teacher layers, and a layer map of in-range, strictly increasing indices."""
    num_layers = cfg.student.num_layers
    num_layers = max(1, teacher_layers // 2) if num_layers is None else num_layers
    if not 1 <= num_layers <= teacher_layers:
        raise ValueError(
            f"student.num_layers={num_layers} is out of range: allowed 1..{teacher_layers} (the teacher's layer count)"
        )
    if cfg.student.layer_map is not None:
        validate_layer_map(cfg.student.layer_map, teacher_layers, num_layers)


def check_vocab_sizes(teacher_vocab_size: int, tokenizer_vocab_size: int, tokenizer: str) -> None:
    """The tokenizer feeding the data must produce ids the teacher (and so the student) has embeddings for."""
    if teacher_vocab_size != tokenizer_vocab_size:
        raise ValueError(
            f"vocabulary mismatch: the teacher has {teacher_vocab_size} token embeddings but the tokenizer "
            f"data.tokenizer={tokenizer!r} has {tokenizer_vocab_size} tokens; teacher, student and tokenizer must "
            "share one vocabulary (point data.tokenizer at the teacher's own tokenizer)"
        )


def check_sequence_length(max_length: int, max_position_embeddings: int) -> None:
    if not 8 <= max_length <= max_position_embeddings:
        raise ValueError(
            f"data.max_length={max_length} is out of range: allowed 8..{max_position_embeddings} "
            "(the teacher's max_position_embeddings)"
        )
