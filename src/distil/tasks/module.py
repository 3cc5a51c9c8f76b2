"""`TaskModule`: fine-tunes a model with a task head (AdamW, linear warm-up and decay) on the gold labels, plus the
teacher's soft targets when the batches carry them; scores the dev split with the task's metrics after every epoch.
"""

from __future__ import annotations

import inspect

import lightning.pytorch as pl
import torch
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from distil.modules.objective import ObjectiveWeights
from distil.tasks.batches import HIDDEN, TEACHER_PREFIX, model_inputs, per_feature
from distil.tasks.soft_targets import hidden_soft_loss
from distil.tasks.task import Encoded, Task

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight")  # parameters kept out of weight decay (as in BERT)


class TaskModule(pl.LightningModule):
    """A Hugging Face model with the task's head, trained end to end.

    Args:
        model: the model (`task.model_class`).
        task: the task (its soft-target loss, outputs and metrics).
        dev: the encoded dev split, scored after every validation epoch (`dev_scores`, logged as `val/<metric>`).
        learning_rate: peak AdamW learning rate.
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        warmup_fraction: fraction of the optimizer steps spent warming the LR up from 0.
        distillation: the objective's weights when the batches carry the teacher's outputs (`teacher_<name>`): the
            terms `label` (the head's loss on the gold labels), `kl` (the task's soft-target loss) and `cos` (hidden
            states), as in pretraining; None trains on the gold labels alone.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        task: Task,
        dev: Encoded,
        learning_rate: float,
        weight_decay: float,
        warmup_fraction: float,
        distillation: ObjectiveWeights | None = None,
    ) -> None:
        super().__init__()
        self.model = model.train()  # from_pretrained returns eval mode; dropout is part of fine-tuning
        self.task = task
        self.dev = dev
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.warmup_fraction = warmup_fraction
        self.distillation = distillation
        self.accepted = set(inspect.signature(model.forward).parameters)
        self.dev_outputs: dict[str, list[torch.Tensor]] = {}
        self.dev_scores: dict[str, float] = {}

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The loss terms of a training batch by the objective's names: `label` (the head's own loss on the gold
        labels) and, with the teacher's outputs in the batch, `kl` and `cos` (when its weight is > 0)."""
        teacher = {k.removeprefix(TEACHER_PREFIX): v for k, v in batch.items() if k.startswith(TEACHER_PREFIX)}
        hidden = HIDDEN in teacher
        output = self.model(**model_inputs(batch, self.accepted), output_hidden_states=hidden)
        terms = {"label": output.loss}
        if teacher:
            terms["kl"] = self.task.soft_loss(output, teacher, batch, self.distillation.temperature)
        if hidden:
            terms["cos"] = hidden_soft_loss(output.hidden_states[-1], teacher[HIDDEN], batch["attention_mask"])
        return terms

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        terms = self.losses(batch)
        if self.distillation is None:
            loss = terms["label"]
        else:
            loss = sum(self.distillation.weight(name) * term for name, term in terms.items())
            for name, term in terms.items():
                self.log(f"train/loss_{name}", term)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        output = self.model(**model_inputs(batch, self.accepted))
        rows = per_feature(output, self.task.outputs, self.task.per_token, batch["attention_mask"])
        for name, values in rows.items():
            self.dev_outputs.setdefault(name, []).extend(values)

    def on_validation_epoch_end(self) -> None:
        self.dev_scores = self.task.score(self.dev, self.dev_outputs)
        self.dev_outputs = {}
        self.log_dict({f"val/{name}": value for name, value in self.dev_scores.items()}, prog_bar=True)

    def configure_optimizers(self):
        named = list(self.model.named_parameters())
        groups = [
            {"params": [p for n, p in named if not n.endswith(NO_DECAY)], "weight_decay": self.weight_decay},
            {"params": [p for n, p in named if n.endswith(NO_DECAY)], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=self.learning_rate)
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(self.warmup_fraction * total_steps), total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
