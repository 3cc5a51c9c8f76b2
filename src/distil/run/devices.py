"""Which device runs a model, and which precisions a device runs natively: the one place that decides, for training
(`trainer.accelerator`, `trainer.precision`), scoring (`distil.evaluate device=`), timing (`speed.devices`) and the
fine-tuned teacher's pass over the training set."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

log = logging.getLogger(__name__)

DEVICE_NAMES = ("auto", "cpu", "cuda", "gpu")  # "gpu" is Lightning's name of cuda; auto = cuda when present


def resolve_device(name: str, key: str) -> torch.device:
    """`name` (config key `key`) as a torch device: "cpu", "cuda" or Lightning's "gpu", or "auto" (cuda when a GPU is
    visible, else cpu). Raises naming the key for another name, or for cuda when no GPU is visible."""
    if name not in DEVICE_NAMES:
        raise ValueError(f"{key}={name!r} is not allowed: use one of {list(DEVICE_NAMES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"{key}={name!r} but no CUDA GPU is visible here: use cpu, or run on a machine with a GPU")
    return torch.device("cuda")


def present_devices(requested: Sequence[str], key: str) -> list[torch.device]:
    """The devices of `requested` ("cpu", "cuda") that exist here: "cuda" is dropped, with a log line, without a GPU."""
    bad = [name for name in requested if name not in ("cpu", "cuda")]
    if bad:
        raise ValueError(f"{key} has {bad}; allowed: ['cpu', 'cuda']")
    if "cuda" in requested and not torch.cuda.is_available():
        log.info("no CUDA GPU present: %s runs on the CPU only", key)
    return [torch.device(name) for name in requested if name == "cpu" or torch.cuda.is_available()]


def training_device(accelerator: str) -> str | None:
    """ "cpu" or "cuda" for `trainer.accelerator` values this project checks; None for the others Lightning knows
    (mps, tpu), which are left to it."""
    if accelerator not in DEVICE_NAMES:
        return None
    return resolve_device(accelerator, "trainer.accelerator").type


PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true")  # Lightning's names


PRECISION_ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true"}


FP16_PRECISIONS = ("16-mixed", "16-true")


BF16_PRECISIONS = ("bf16-mixed", "bf16-true")


def precision_name(precision: str | int) -> str:
    """Lightning's full name of a `trainer.precision` value (`16` -> `16-mixed`, `bf16` -> `bf16-mixed`, ...)."""
    return PRECISION_ALIASES.get(str(precision), str(precision))


def cpu_supports_bf16() -> bool:
    """Native bf16 arithmetic on this CPU (AVX512-BF16 or AMX); without it bf16 is emulated, many times slower."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def check_precision(precision: str | int, accelerator: str) -> None:
    """`trainer.precision` must be a Lightning precision the chosen accelerator runs natively."""
    name = precision_name(precision)
    if name not in PRECISIONS:
        raise ValueError(f"trainer.precision={precision!r} is not allowed: use one of {list(PRECISIONS)}")
    device = training_device(str(accelerator))
    if device == "cpu" and name in FP16_PRECISIONS:
        raise ValueError(
            f"trainer.precision={precision!r} is not supported on the CPU (trainer.accelerator={accelerator!r}; "
            "Lightning would silently switch to bf16-mixed): use 32-true, or bf16-mixed on a CPU with native bf16"
        )
    if device == "cpu" and name in BF16_PRECISIONS and not cpu_supports_bf16():
        raise ValueError(
            f"trainer.precision={precision!r} needs native bf16 on the CPU (AVX512-BF16 or AMX), which this CPU "
            f"lacks (trainer.accelerator={accelerator!r}): use 32-true"
        )
    if device == "cuda" and name in BF16_PRECISIONS and not torch.cuda.is_bf16_supported():
        major, minor = torch.cuda.get_device_capability()
        raise ValueError(
            f"trainer.precision={precision!r} needs a GPU with bf16 (compute capability >= 8.0); "
            f"{torch.cuda.get_device_name()} has {major}.{minor}: use 16-mixed or 32-true"
        )
