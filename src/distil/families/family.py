"""What a model family must say so that a teacher of that family can be distilled: the interface, and what is common.

A family (one file in this folder) knows, for its Hugging Face language-model classes (masked or causal: `causal`):
- how the student's config is derived from the teacher's at reduced depth (`student_config`);
- which teacher tensor each student tensor starts from (`parameter_map`), and any tensor that is computed from
  several teacher tensors instead (`fold_embeddings`, e.g. BERT's token-type row folded into positions);
- where its vocabulary head splits into features and output projection (`head_features`);
- the longest sequence its position embeddings allow (`max_length`);
- where each layer's attention module sits (`attention_module`: internals terms read its queries, keys and values)
  and which student config key is the feed-forward width (`intermediate_key`: a narrower student sets it).

Common to all families and done here: the encoder is the model's `base_model` (tokens -> last hidden states), the
output projection is its `get_output_embeddings()` linear layer (a zero bias where it has none), the Auto class that
builds and loads it follows from `causal`, the default layer map spreads the student's layers
evenly over the teacher's, and the weight copy checks that every student parameter got a teacher tensor.

Masked rows are framed with the tokenizer's own `cls_token ... sep_token` (documents joined by `sep_token`), which
every masked-LM tokenizer defines: `[CLS] ... [SEP]` for BERT and ModernBERT, `<s> ... </s>` for RoBERTa and XLM-R;
masking skips the tokenizer's special tokens. Causal rows are documents joined by the tokenizer's `eos_token`, cut
into full rows with no framing. The data side reads both from the tokenizer (`distil.data.packing.RowFormat`), so a
family needs nothing here for its framing beyond `causal`.
"""

from __future__ import annotations

import copy
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, PretrainedConfig, PreTrainedModel

Encoder = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
LayerEncoder = Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, tuple[torch.Tensor, ...]]]
HeadFeatures = Callable[[torch.Tensor], torch.Tensor]
OutputProjection = Callable[[], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class ModelParts:
    """A language model split into the pieces distillation runs apart, as plain functions over the model's own modules.

    Plain functions rather than modules, so holding them registers no weight a second time.

    encode: `(input_ids (B, L), attention_mask (B, L) or None) -> last hidden states (B, L, H)`.
    encode_layers: the same, also returning every layer's hidden states (the embeddings' output first), from the same
        forward pass (`output_hidden_states`): the hidden-state terms read them.
    head_features: `(N, H) -> (N, H)`, the vocabulary head up to its output projection.
    output_projection: `() -> (weight (V, H), bias (V,))`, read at call time so later dtype or device moves are seen.
    attention_module: `layer -> the module of that layer that calls transformers' attention function` (the internal
        terms tap its queries, keys and values: `attention_taps.py`).
    """

    encode: Encoder
    encode_layers: LayerEncoder
    head_features: HeadFeatures
    output_projection: OutputProjection
    attention_module: Callable[[int], nn.Module]

    def vocab_head(self, hidden: torch.Tensor) -> torch.Tensor:
        """`(N, H) -> logits (N, V)`: the model's own vocabulary head on the given rows."""
        weight, bias = self.output_projection()
        return F.linear(self.head_features(hidden), weight, bias)


class ModelFamily(ABC):
    """Base of the families: subclasses set `name` and `teacher_types` and implement the three abstract methods."""

    name: str = ""
    teacher_types: tuple[str, ...] = ()  # `config.model_type` of the teachers this family distils
    student_only_types: tuple[str, ...] = ()  # model types that occur only as this family's students
    causal: bool = False  # a causal (next-token) LM; else a masked LM
    intermediate_key: str = "intermediate_size"  # the student config's feed-forward width (DistilBERT: hidden_dim)

    @property
    def auto_class(self) -> type:
        """The transformers Auto class that builds and loads this family's models with their vocabulary head."""
        return AutoModelForCausalLM if self.causal else AutoModelForMaskedLM

    @property
    def model_types(self) -> tuple[str, ...]:
        """Every `config.model_type` this family can split into parts (teachers and students)."""
        return self.teacher_types + self.student_only_types

    @abstractmethod
    def student_config(self, teacher_config: PretrainedConfig, layer_map: Sequence[int]) -> PretrainedConfig:
        """Config of a student with `len(layer_map)` layers, layer i initialised from teacher layer `layer_map[i]`."""

    @abstractmethod
    def parameter_map(self, student: nn.Module, layer_map: Sequence[int]) -> dict[str, str]:
        """Student parameter name -> name of the teacher parameter it is copied from."""

    def fold_embeddings(self, student: nn.Module, teacher: nn.Module) -> set[str]:
        """Write the student parameters that combine several teacher tensors; return their names (default: none)."""
        return set()

    @abstractmethod
    def head_features(self, model: PreTrainedModel) -> HeadFeatures:
        """The model's vocabulary head up to (not including) its output projection."""

    @abstractmethod
    def attention_module(self, model: PreTrainedModel, layer: int) -> nn.Module:
        """The module of layer `layer` that hands queries, keys and values to transformers' attention function."""

    def max_length(self, config: PretrainedConfig) -> int:
        """Longest row (special tokens included) the model's position embeddings allow."""
        return int(config.max_position_embeddings)

    def default_layer_map(self, teacher_layers: int, student_layers: int) -> list[int]:
        """Teacher layers the student layers start from, evenly spread from the first to the last teacher layer.

        Rounding the evenly spaced points gives the original DistilBERT map [0, 2, 4, 7, 9, 11] for 12 -> 6 and
        roughly every other layer for any halving.
        """
        if student_layers == 1:
            return [teacher_layers - 1]
        step = (teacher_layers - 1) / (student_layers - 1)
        return [round(i * step) for i in range(student_layers)]

    def parts(self, model: PreTrainedModel) -> ModelParts:
        """Encoder, head features and output projection of a model of this family."""
        projection = model.get_output_embeddings()
        no_cache = {"use_cache": False} if self.causal else {}  # training and scoring never decode step by step

        def output_projection() -> tuple[torch.Tensor, torch.Tensor]:
            bias = projection.bias
            return projection.weight, bias if bias is not None else projection.weight.new_zeros(len(projection.weight))

        def encode_layers(input_ids, attention_mask):
            out = model.base_model(
                input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, **no_cache
            )
            return out.last_hidden_state, out.hidden_states

        return ModelParts(
            encode=lambda input_ids, attention_mask: (
                model.base_model(input_ids=input_ids, attention_mask=attention_mask, **no_cache).last_hidden_state
            ),
            encode_layers=encode_layers,
            head_features=self.head_features(model),
            output_projection=output_projection,
            attention_module=lambda layer: self.attention_module(model, layer),
        )

    @torch.no_grad()
    def copy_teacher_weights(self, student: nn.Module, teacher: nn.Module, layer_map: Sequence[int]) -> None:
        """Overwrite every student parameter with the teacher tensor it maps to (or its fold); none may be left out."""
        teacher_params = dict(teacher.named_parameters())
        student_params = dict(student.named_parameters())
        names = self.parameter_map(student, layer_map)
        unknown = sorted(set(names.values()) - set(teacher_params))
        if unknown:
            raise KeyError(f"{self.name} family: parameter_map names teacher tensors that do not exist: {unknown[:5]}")
        for student_name, teacher_name in names.items():
            student_params[student_name].copy_(teacher_params[teacher_name])
        unmapped = sorted(set(student_params) - set(names) - self.fold_embeddings(student, teacher))
        if unmapped:
            raise KeyError(f"{self.name} family: no teacher tensor for the student parameters {unmapped[:5]}")


class SameClassFamily(ModelFamily):
    """A family whose student is the teacher's own class with fewer layers: every tensor outside the layers is the
    teacher's, and student layer i is teacher layer `layer_map[i]` (`layer_prefix` is where the layers sit, e.g.
    "roberta.encoder.layer."). Subclasses set `name`, `teacher_types`, `layer_prefix` and `attention_name` (the
    attention module's name inside a layer, e.g. "attention.self") and say where the vocabulary head splits
    (`head_features`).

    Where the config lists an attention kind per layer (`layer_types`: ModernBERT's global and local layers, Qwen's
    full and sliding-window layers), each student layer keeps the kind of the teacher layer it starts from: a layer's
    weights were trained for its kind."""

    layer_prefix: str = ""
    attention_name: str = ""

    def attention_module(self, model: PreTrainedModel, layer: int) -> nn.Module:
        return model.get_submodule(f"{self.layer_prefix}{layer}.{self.attention_name}")

    def student_config(self, teacher_config: PretrainedConfig, layer_map: Sequence[int]) -> PretrainedConfig:
        config = copy.deepcopy(teacher_config)
        config.num_hidden_layers = len(layer_map)
        if getattr(teacher_config, "layer_types", None) is not None:
            config.layer_types = [teacher_config.layer_types[i] for i in layer_map]
        return config

    def parameter_map(self, student: nn.Module, layer_map: Sequence[int]) -> dict[str, str]:
        return renumbered_layer_names(student, self.layer_prefix, layer_map)


def renumbered_layer_names(student: nn.Module, layer_prefix: str, layer_map: Sequence[int]) -> dict[str, str]:
    """For a student of the teacher's own architecture: each parameter maps to the teacher parameter of the same
    name, with the layer index after `layer_prefix` (e.g. "roberta.encoder.layer.") replaced by `layer_map[index]`."""
    pattern = re.compile(rf"^{re.escape(layer_prefix)}(\d+)\.")

    def teacher_name(name: str) -> str:
        return pattern.sub(lambda match: f"{layer_prefix}{layer_map[int(match.group(1))]}.", name)

    return {name: teacher_name(name) for name, _ in student.named_parameters()}


class CausalFamily(SameClassFamily):
    """A decoder family whose student is the teacher's own class with fewer layers (GPT-2, the Llama layout): the
    final norm belongs to the base model, so the vocabulary head is the output projection alone."""

    causal = True

    def head_features(self, model: PreTrainedModel) -> HeadFeatures:
        return lambda hidden: hidden
