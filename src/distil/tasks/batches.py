"""Features -> padded batches, and a model's batch outputs -> one unpadded tensor per feature.

Features are unpadded dicts (model inputs, targets, the teacher's outputs under `teacher_<name>`). A batch pads the
token-level values to its longest feature: input ids with the tokenizer's pad id, token labels with -100 (no loss),
everything else with 0 (the attention mask then marks the padding); per-example values are stacked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distil.modules.losses import IGNORE_INDEX

TEACHER_PREFIX = "teacher_"  # features carry the teacher's output `name` under `teacher_<name>`
SEQUENCE_INPUTS = frozenset({"input_ids", "attention_mask", "token_type_ids"})  # one value per token, always
HIDDEN = "hidden"  # the last hidden states (one vector per token), for the optional hidden-state loss


def pad(values: list[torch.Tensor], length: int, value: float, side: str) -> torch.Tensor:
    """(len(values), length, ...) tensor of the (n_i, ...) `values`, filled with `value` on the padding `side`."""
    padded = torch.full((len(values), length, *values[0].shape[1:]), value, dtype=values[0].dtype)
    for row, tensor in enumerate(values):
        if side == "right":
            padded[row, : len(tensor)] = tensor
        else:
            padded[row, length - len(tensor) :] = tensor
    return padded


@dataclass(frozen=True)
class Collator:
    """Pads a list of features into a batch of tensors.

    Args:
        pad_token_id: the tokenizer's padding id (for `input_ids`).
        padding_side: "right" or "left", the tokenizer's padding side.
        per_token: names of the task's targets and outputs with one value per token (e.g. "labels" for NER).
    """

    pad_token_id: int
    padding_side: str
    per_token: frozenset[str]

    def is_per_token(self, key: str) -> bool:
        name = key.removeprefix(TEACHER_PREFIX)
        return key in SEQUENCE_INPUTS or name in self.per_token or name == HIDDEN

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(feature["input_ids"]) for feature in features)
        batch = {}
        for key in features[0]:
            values = [torch.as_tensor(feature[key]) for feature in features]
            if self.is_per_token(key):
                fill = {"input_ids": self.pad_token_id, "labels": IGNORE_INDEX}.get(key, 0)
                batch[key] = pad(values, length, fill, self.padding_side)
            else:
                batch[key] = torch.stack(values)
        return batch


def per_feature(
    output, names: tuple[str, ...], per_token: frozenset[str], attention_mask: torch.Tensor
) -> dict[str, list[torch.Tensor]]:
    """The model `output`'s values `names` (`hidden`: the last hidden states) of each row of the batch, on the CPU,
    the token-level ones without the padding positions."""
    real = attention_mask.bool().cpu()
    result = {}
    for name in names:
        value = (output.hidden_states[-1] if name == HIDDEN else getattr(output, name)).detach().cpu()
        if name in per_token or name == HIDDEN:
            result[name] = [row[mask] for row, mask in zip(value, real)]
        else:
            result[name] = list(value)
    return result


def model_inputs(batch: dict[str, torch.Tensor], accepted: set[str]) -> dict[str, torch.Tensor]:
    """The entries of `batch` that the model's forward takes (`accepted`: its parameter names)."""
    return {key: value for key, value in batch.items() if key in accepted}
