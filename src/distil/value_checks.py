"""Checks of single config values, used by the constructors that take them (so the errors a run gets before any
weights load come from the same code): each error names the config key, the bad value and what is allowed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def is_number(value: Any) -> bool:
    """An int or float (not a bool, not a string)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_integer(key: str, value: Any, minimum: int, optional: bool = False) -> None:
    """`value` of config key `key` must be an integer (not a bool) >= `minimum` (or None when `optional`)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or null" if optional else "")
        raise ValueError(f"{key}={value!r} is not allowed: {allowed}")


def validate_layer_map(
    layer_map: Sequence[int], teacher_layers: int, student_layers: int, key: str = "student.layer_map"
) -> list[int]:
    """Return the map (one teacher layer per student layer, under the config key `key`) as a list, or raise naming
    the bad value and what is allowed."""
    layers = list(layer_map)
    if any(isinstance(i, bool) or not isinstance(i, int) for i in layers):
        raise ValueError(
            f"{key}={layers} is not allowed: it must list integer teacher layer indices, one per student layer"
        )
    if len(layers) != student_layers:
        raise ValueError(
            f"{key}={layers} has {len(layers)} entries; it needs one per student layer "
            f"(student.num_layers={student_layers})"
        )
    bad = [i for i in layers if not 0 <= i < teacher_layers]
    if bad:
        raise ValueError(f"{key}={layers} has indices {bad} outside the teacher's layers 0..{teacher_layers - 1}")
    if any(b <= a for a, b in zip(layers, layers[1:])):
        raise ValueError(f"{key}={layers} must be strictly increasing")
    return layers
