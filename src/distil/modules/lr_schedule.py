"""A resume whose learning-rate schedule has another length than the checkpoint's (e.g. a larger `trainer.max_steps`
to train longer) continues on the new schedule from the restored step."""

from __future__ import annotations

import logging

from torch.optim.lr_scheduler import LambdaLR

log = logging.getLogger(__name__)


def continue_on_new_schedule(trainer, restored_steps: int | None, schedule_steps: int | None) -> None:
    """With a changed schedule length, warn and set each `LambdaLR`'s learning rate to the new schedule's at the
    restored step; with an unchanged length (or no schedule) touch nothing, so the resume stays exact.

    The restored optimizer holds the learning rate the old schedule set for the next step (0 at its end). A `LambdaLR`
    (the default schedule) is re-evaluated at the restored step, so that step already uses the new schedule.
    """
    if restored_steps is None or schedule_steps is None or restored_steps == schedule_steps:
        return
    log.warning(
        "LR schedule length changed since the checkpoint (saved %d optimizer steps, now %d, from trainer.max_steps "
        "and the batches per step): from step %d on, the learning rate follows the %d-step schedule",
        restored_steps,
        schedule_steps,
        trainer.global_step,
        schedule_steps,
    )
    for config in trainer.lr_scheduler_configs:
        scheduler = config.scheduler
        if isinstance(scheduler, LambdaLR):
            steps = scheduler.last_epoch
            lrs = [base * lr_lambda(steps) for base, lr_lambda in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
            for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
                group["lr"] = lr
