"""Checks of single config values, used by the constructors that take them (so the errors a run gets before any
weights load come from the same code): each error names the config key, the bad value and what is allowed."""

from __future__ import annotations

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
