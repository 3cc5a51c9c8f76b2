"""The terms on the models' internals, which let a student of another width learn from how the teacher computes and
not only from what it predicts (TinyBERT, MiniLM):

- `hidden_mse`: MSE between the student's hidden states, through a learned linear projection to the teacher's
  width, and the teacher's, for the embeddings' output and each student layer's output against its target teacher
  layer (TinyBERT). One projection per pair; they train with the student, are saved in checkpoints (so a resume
  restores them) and are not part of the exported student.
- `attention`: KL between the attention distributions of each head of a student layer and of its target teacher
  layer (MiniLM v1; TinyBERT used MSE), which needs the same number of heads.
- `relation`: MiniLM v2's query-query, key-key and value-value relations of one teacher layer against the student's
  last layer, with `relation_heads` relation heads: no projection, any widths and head counts that the relation heads
  divide.

Which student layer learns from which teacher layer: `layer_targets` (one teacher layer per student layer), by default
TinyBERT's uniform map, student layer i -> teacher layer (i + 1) x N / M - 1 (12 -> 4: [2, 5, 8, 11]; 12 -> 6: [1, 3,
5, 7, 9, 11]): every student layer does the work of a block of teacher layers and learns that block's output. The
relations' teacher layer defaults to the last one, which is what MiniLM v2 takes for base-size teachers (12 layers);
for large teachers the paper found an upper-middle layer better (e.g. layer 21 of BERT-large's 24): set
`relation_teacher_layer` then. The hidden states come from the encoders' own pass (`output_hidden_states`), the
queries, keys and values from taps on the layers that need them (`families/attention_taps.py`); the other layers keep
their fused attention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from distil.families.attention_taps import AttentionInputs, AttentionTaps
from distil.families.family import ModelParts
from distil.modules.losses import attention_kl_loss, attention_log_probs, hidden_mse_loss, relation_kl_loss
from distil.modules.objective import ObjectiveWeights
from distil.modules.row_index import select_rows
from distil.value_checks import validate_layer_map

INTERNAL_TERMS = ("hidden_mse", "attention", "relation")  # the terms of this file, by their names in `TERMS`


def uniform_targets(teacher_layers: int, student_layers: int) -> list[int]:
    """TinyBERT's map: student layer i learns the output of teacher layer (i + 1) x N / M - 1 (rounded)."""
    return [round((i + 1) * teacher_layers / student_layers) - 1 for i in range(student_layers)]


def attention_widths(config: PretrainedConfig) -> tuple[int, int]:
    """Widths of a model's concatenated queries and of its keys (or values): heads x head size each."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return heads * head_dim, (getattr(config, "num_key_value_heads", None) or heads) * head_dim


@dataclass(frozen=True)
class InternalsPlan:
    """Which layers the internal terms compare, checked against both configs (before any weights load).

    layer_targets: the teacher layer each student layer learns from (`hidden_mse`, `attention`).
    relation_layers: (student layer, teacher layer) of the relations (the student's last layer).
    relation_heads: the relations' head count R.
    """

    layer_targets: tuple[int, ...]
    relation_layers: tuple[int, int]
    relation_heads: int

    def attention_layers(self, weights: ObjectiveWeights) -> tuple[list[int], list[int]]:
        """The student's and the teacher's layers whose queries, keys and values the terms of `weights` read."""
        student, teacher = set(), set()
        if weights.alpha_attention > 0:
            student |= set(range(len(self.layer_targets)))
            teacher |= set(self.layer_targets)
        if weights.alpha_relation > 0:
            student.add(self.relation_layers[0])
            teacher.add(self.relation_layers[1])
        return sorted(student), sorted(teacher)


def plan_internals(
    weights: ObjectiveWeights,
    teacher_config: PretrainedConfig,
    student_config: PretrainedConfig,
    layer_targets: Sequence[int] | None = None,
    relation_teacher_layer: int | None = None,
    relation_heads: int | None = None,
) -> InternalsPlan:
    """The checked plan; each error names the `distill.*` key, its value and what is allowed."""
    teacher_layers, student_layers = teacher_config.num_hidden_layers, student_config.num_hidden_layers
    if layer_targets is None:
        targets = uniform_targets(teacher_layers, student_layers)
    else:
        targets = validate_layer_map(layer_targets, teacher_layers, student_layers, key="distill.layer_targets")
    teacher_heads, student_heads = teacher_config.num_attention_heads, student_config.num_attention_heads
    if weights.alpha_attention > 0 and teacher_heads != student_heads:
        raise ValueError(
            f"distill.alpha_attention={weights.alpha_attention} compares attention head by head: the student has "
            f"{student_heads} heads (student.num_attention_heads), the teacher {teacher_heads}; give the student "
            "the teacher's head count, or use distill.alpha_relation (any head count)"
        )
    teacher_layer = teacher_layers - 1 if relation_teacher_layer is None else relation_teacher_layer
    heads = student_heads if relation_heads is None else relation_heads
    if weights.alpha_relation > 0:
        if (
            isinstance(teacher_layer, bool)
            or not isinstance(teacher_layer, int)
            or not 0 <= teacher_layer < teacher_layers
        ):
            raise ValueError(
                f"distill.relation_teacher_layer={relation_teacher_layer!r} is not allowed: a teacher layer index in "
                f"0..{teacher_layers - 1}, or null for the last"
            )
        widths = {"student": attention_widths(student_config), "teacher": attention_widths(teacher_config)}
        whole = isinstance(heads, int) and not isinstance(heads, bool) and heads >= 1
        uneven = [
            f"{model} {kind} {width}"
            for model, pair in widths.items()
            for kind, width in zip(("queries", "keys/values"), pair)
            if not whole or width % heads
        ]
        if uneven:
            raise ValueError(
                f"distill.relation_heads={heads!r} is not allowed: an integer >= 1 dividing the widths of both "
                f"models' queries and keys/values (heads x head size; not divided: {', '.join(uneven)})"
            )
    return InternalsPlan(tuple(targets), (student_layers - 1, teacher_layer), heads)


class InternalTerms(nn.Module):
    """The internal terms of one run: their projections (trainable, in checkpoints) and their losses.

    Args:
        weights: the objective's weights (the terms of weight 0 are left out).
        plan: the layers they compare (`plan_internals`).
        student, teacher: the two models and their parts (`ModelParts`): the attention layers the plan names get taps.
    """

    def __init__(
        self,
        weights: ObjectiveWeights,
        plan: InternalsPlan,
        student: tuple[PreTrainedModel, ModelParts],
        teacher: tuple[PreTrainedModel, ModelParts],
    ) -> None:
        super().__init__()
        self.weights = {name: weights.weight(name) for name in INTERNAL_TERMS if weights.weight(name) > 0}
        self.plan = plan
        pairs = len(plan.layer_targets) + 1 if "hidden_mse" in self.weights else 0  # + the embeddings' output
        (student, student_parts), (teacher, teacher_parts) = student, teacher
        widths = student.config.hidden_size, teacher.config.hidden_size
        self.hidden_projections = nn.ModuleList(nn.Linear(*widths) for _ in range(pairs))
        student_layers, teacher_layers = plan.attention_layers(weights)
        self.student_taps = AttentionTaps(student, {i: student_parts.attention_module(i) for i in student_layers})
        self.teacher_taps = AttentionTaps(teacher, {i: teacher_parts.attention_module(i) for i in teacher_layers})

    @property
    def needs_hidden_states(self) -> bool:
        return "hidden_mse" in self.weights

    def forward(
        self,
        student_states: Sequence[torch.Tensor] | None,
        teacher_states: Sequence[torch.Tensor] | None,
        real_rows: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """Each term's loss from the models' last forward passes, averaged over the real tokens (`real_rows` of the
        flattened batch; None: all) and over the layer pairs. States: each model's hidden states, embeddings first
        (`ModelParts.encode_layers`; None when `hidden_mse` is not a term)."""
        student_attention, teacher_attention = self.student_taps.take(), self.teacher_taps.take()
        losses = {}
        targets = self.plan.layer_targets
        if "hidden_mse" in self.weights:
            pairs = [(0, 0), *((i + 1, t + 1) for i, t in enumerate(targets))]
            losses["hidden_mse"] = torch.stack(
                [
                    hidden_mse_loss(
                        projection(select_rows(student_states[s].flatten(0, 1), real_rows)),
                        select_rows(teacher_states[t].flatten(0, 1), real_rows),
                    ).mean()
                    for projection, (s, t) in zip(self.hidden_projections, pairs, strict=True)
                ]
            ).mean()
        if "attention" in self.weights:
            losses["attention"] = torch.stack(
                [
                    select_rows(
                        attention_kl_loss(log_probs(student_attention[i]), log_probs(teacher_attention[t])).flatten(),
                        real_rows,
                    ).mean()
                    for i, t in enumerate(targets)
                ]
            ).mean()
        if "relation" in self.weights:
            student_layer, teacher_layer = self.plan.relation_layers
            student, teacher = student_attention[student_layer], teacher_attention[teacher_layer]
            relation = relation_kl_loss(
                (student.query, student.key, student.value),
                (teacher.query, teacher.key, teacher.value),
                self.plan.relation_heads,
                student.allowed,
                teacher.allowed,
            )
            losses["relation"] = select_rows(relation.flatten(), real_rows).mean()
        return losses


def internal_terms_of(
    weights: ObjectiveWeights,
    student: tuple[PreTrainedModel, ModelParts],
    teacher: tuple[PreTrainedModel, ModelParts],
    layer_targets: Sequence[int] | None = None,
    relation_teacher_layer: int | None = None,
    relation_heads: int | None = None,
) -> InternalTerms | None:
    """The internal terms of `weights` for these models (None when they weigh nothing), after `plan_internals`."""
    if not any(weights.weight(name) > 0 for name in INTERNAL_TERMS):
        return None
    configs = teacher[0].config, student[0].config
    plan = plan_internals(weights, *configs, layer_targets, relation_teacher_layer, relation_heads)
    return InternalTerms(weights, plan, student, teacher)


def log_probs(inputs: AttentionInputs) -> torch.Tensor:
    return attention_log_probs(inputs.query, inputs.key, inputs.allowed, inputs.scaling)
