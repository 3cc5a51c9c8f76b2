"""INT8 of an exported language model (`distil.export ... onnx=true int8=true`), masked or causal: its variants
written and scored against the float student on held-out batches, and read back by `distil.evaluate`, which scores
and times them.

Every variant is scored against its float self on the same held-out batches (accuracy, loss, perplexity, top-1
agreement with the float model), with `distil.evaluation.scoring`, the code `distil.evaluate` scores with: masked
batches for a masked LM, next-token batches for a causal LM (the student's family decides). The gate's metric follows
from the kind (`GATE_METRICS`): masked-LM accuracy may drop by `max_drop_points`, a causal LM's perplexity rise by
`max_ppl_increase_pct` (`distil.exporting.int8_gate`). `onnx_static` is calibrated on `calibration_rows` rows of the
training text, batched as in training.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from transformers import PreTrainedModel

from distil.evaluation.scoring import ScoredLogits, held_out_batches, held_out_scores, scored_logits
from distil.evaluation.speed import Forward, timed_forward
from distil.exporting.int8_files import (
    VARIANT_FILES,
    limit_rows,
    state_dict_bytes,
    torch_dynamic_int8,
    write_onnx_int8_files,
)
from distil.exporting.int8_gate import (
    FLOAT,
    PERPLEXITY,
    QUANTIZATION_FILE,
    check_int8_settings,
    gate_rule,
    write_gate_report,
)
from distil.exporting.onnx_model import ONNX_FILE, OnnxLanguageModel, check_onnx_installed, onnx_file_bytes
from distil.families import model_family, model_parts
from distil.modules.metrics import prediction_of

ONNX_FLOAT = "onnx_float"  # name of the float model.onnx among the exported models
LABELS = {  # what each exported model is, for the tables of distil.evaluate
    ONNX_FLOAT: "student fp32 ONNX",
    "onnx_dynamic": "student INT8 ONNX dynamic",
    "onnx_static": "student INT8 ONNX static",
    "torch_dynamic": "student INT8 PyTorch dynamic",
}
GATE_METRICS = {  # the gate's metric by the student's kind (causal?): (score key, in words, its table column)
    False: ("mlm_acc", "held-out masked-LM accuracy", "masked-LM acc (%)"),
    True: (PERPLEXITY, "held-out perplexity", "perplexity"),
}


@dataclass(frozen=True)
class Int8Settings:
    """What `distil.export ... int8=true` quantizes and how it is gated (the `quantization` keys of its config).

    Args:
        variants: names among `VARIANTS`.
        max_drop_points: largest allowed drop of a masked LM's held-out accuracy, in percentage points.
        calibration_rows: training rows whose activations calibrate `onnx_static`.
        max_batches: score only the first N held-out batches; None = the whole validation split.
        data: data config (the `data` group) of the held-out and calibration rows, instantiated with the exported
            folder's tokenizer.
        max_ppl_increase_pct: largest allowed rise of a causal LM's held-out perplexity, in percent of the float
            model's; None = not set (a causal student's export then refuses to gate).
    """

    variants: Sequence[str]
    max_drop_points: float
    calibration_rows: int
    max_batches: int | None
    data: DictConfig
    max_ppl_increase_pct: float | None = None

    def __post_init__(self) -> None:
        check_int8_settings(self.variants, self.max_drop_points, self.calibration_rows, self.max_ppl_increase_pct)


def torch_int8_scored_logits(quantized: torch.nn.Module) -> ScoredLogits:
    """The scored positions' logits of a `torch_dynamic_int8` model: its quantized output projection is a module
    (no weight tensor to hand to `scored_logits`), called on the scored rows only."""
    parts, projection = model_parts(quantized), quantized.get_output_embeddings()

    def logits(input_ids: torch.Tensor, attention_mask: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
        hidden = parts.encode(input_ids.cpu(), attention_mask.cpu())[scored.cpu()]  # int8 kernels: CPU only
        return projection(parts.head_features(hidden)).to(scored.device)

    return logits


def write_int8_variants(model: PreTrainedModel, directory: Path, settings: Int8Settings) -> dict:
    """Write the ONNX INT8 variants of `directory/model.onnx` beside it, score every variant and the float `model`
    on the held-out batches, and write `directory/quantization.json`; returns its content (module docstring).

    The data module of `settings.data` reads the tokenizer saved in `directory` and batches rows of the student's
    kind (masked or causal). Does not apply the gate (`check_gate`), so that the report of a failing variant is
    written and printed first.
    """
    causal = model_family(model.config, "the exported student").causal
    metric, metric_label, column = GATE_METRICS[causal]
    limit_key = gate_rule(metric).limit_key
    limit = getattr(settings, limit_key)
    if limit is None:
        raise ValueError(f"quantization.{limit_key} is not set: the INT8 gate of a causal student needs it")
    datamodule = instantiate(settings.data, tokenizer=str(directory), causal=causal)
    calibration = limit_rows(datamodule.train_dataloader(), settings.calibration_rows)
    variants, prediction = settings.variants, prediction_of(causal)
    write_onnx_int8_files(directory, variants, calibration)
    quantized = variant_models(directory, variants, model, with_mlm_head=True)
    scorers = {FLOAT: scored_logits(model), **{name: m.scored_logits for name, m in quantized.items()}}
    sizes = {name: m.disk_bytes for name, m in quantized.items()}
    held_out = held_out_batches(datamodule, settings.max_batches)
    agreement = {v: FLOAT for v in variants}
    scores = held_out_scores(scorers, held_out, torch.device("cpu"), agreement, prediction)
    count = scores[prediction.count_key]
    report = {
        "metric": metric,
        "metric_label": metric_label,
        "column": column,
        "scored_on": f"{count} held-out {prediction.tokens}",
        prediction.count_key: count,
        "calibration_rows": settings.calibration_rows if "onnx_static" in variants else None,
    }
    return write_gate_report(report, directory, scores, sizes, variants, limit)


@dataclass(frozen=True)
class ExportedModel:
    """A float or INT8 model of an `int8=true` export, as `distil.evaluate` scores and times it on the CPU.

    label: what it is, in words, for the report's table. forward: `(input_ids, attention_mask) -> output` for
    timing; `with_mlm_head` says whether it includes the vocabulary projection (an ONNX graph always does).
    scored_logits: the logits at the scored positions, for held-out scoring.
    """

    label: str
    file: str | None
    disk_bytes: int
    forward: Forward
    scored_logits: ScoredLogits
    with_mlm_head: bool


def variant_models(
    directory: Path, names: Sequence[str], student: PreTrainedModel, with_mlm_head: bool
) -> dict[str, ExportedModel]:
    """The models `names` (`ONNX_FLOAT` or a variant) of the export in `directory`, ready to score and time; the ONNX
    files must exist there, `torch_dynamic` is built from `student` (on the CPU) and timed with its head when
    `with_mlm_head`, as the PyTorch models are (an ONNX graph always includes the head)."""
    models = {}
    for name in names:
        if name == "torch_dynamic":
            quantized = torch_dynamic_int8(student)
            forward = timed_forward(quantized, with_mlm_head)
            logits = torch_int8_scored_logits(quantized)
            size = state_dict_bytes(quantized)
            models[name] = ExportedModel(LABELS[name], None, size, forward, logits, with_mlm_head)
        else:
            file = ONNX_FILE if name == ONNX_FLOAT else VARIANT_FILES[name]
            onnx_model = OnnxLanguageModel(directory / file)
            size = onnx_file_bytes(directory / file)
            models[name] = ExportedModel(LABELS[name], file, size, onnx_model.forward, onnx_model.scored_logits, True)
    return models


def exported_models(directory: Path, student: PreTrainedModel, with_mlm_head: bool) -> dict[str, ExportedModel]:
    """The float `model.onnx` and the INT8 variants listed in `directory/quantization.json` ({} without that file),
    as `variant_models` gives them."""
    path = directory / QUANTIZATION_FILE
    if not path.is_file():
        return {}
    check_onnx_installed(f"the int8 export {str(directory)!r} (it holds {QUANTIZATION_FILE})")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["int8"]
        variants = [name for name, entry in entries.items() if entry["passed"]]  # a failing variant's file is deleted
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            f"{path} is not a quantization report of distil.export int8=true ({type(error).__name__}: {error}); "
            f"export again, or remove {QUANTIZATION_FILE} to score the float model alone"
        ) from error
    unknown = [name for name in variants if name not in VARIANT_FILES]
    if unknown:
        raise ValueError(f"{path} lists unknown INT8 variants {unknown}; known: {list(VARIANT_FILES)}")
    return variant_models(directory, [ONNX_FLOAT, *variants], student, with_mlm_head)
