"""Learning-rate schedule of the DistilBERT run: linear warm-up, then linear decay to zero."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_linear_decay(optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.05) -> LambdaLR:
    """LR multiplier rising linearly from 0 to 1 over `warmup_fraction * total_steps` optimizer steps, then falling
    linearly to 0 at `total_steps`."""
    if total_steps < 1:
        raise ValueError(
            f"total_steps={total_steps}: the schedule needs at least 1 optimizer step (set trainer.max_steps)"
        )
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction={warmup_fraction} is out of range: allowed [0, 1)")
    warmup_steps = int(warmup_fraction * total_steps)

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return LambdaLR(optimizer, multiplier)
