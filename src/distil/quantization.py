"""INT8 variants of an exported masked-LM student for CPU inference, and the quality gate they must pass.

Variants (`VARIANTS`), each scored against its float self on the same held-out masked batches:

- `onnx_dynamic`: ONNX Runtime dynamic quantization of `model.onnx` -> `model.int8-dynamic.onnx`. Weights of the
  MatMuls and of the embedding lookups (Gather) are stored in 8 bits; activations are quantized on the fly. The word
  embedding table, most of a small student's weights, is one initializer shared by the embedding Gather and the
  (tied) output projection, so it is stored once, in 8 bits; the projection dequantizes it at run time. (The ONNX
  exporter folds the projection's transpose into a second table only under 8192 elements, far below a real
  vocabulary.)
- `onnx_static`: ONNX Runtime static quantization (QDQ format) -> `model.int8-static.onnx`: activation ranges of the
  MatMuls and Gathers are calibrated on `calibration_rows` rows of the training text (masked as in training),
  weights per channel.
- `torch_dynamic`: PyTorch's dynamic quantization (`torch.ao.quantization`, deprecated upstream in favour of
  torchao) of every `nn.Linear`: int8 weights, activations quantized on the fly; the embeddings stay float32 and the
  tied output projection gets an int8 copy of its own. It is measured in memory and not written: its packed weights
  are torch objects that only `torch.save`'s pickle stores, and a pickle is neither portable nor safe to load from
  elsewhere (the project ships safetensors and ONNX). `quantization.json` records the size `torch.save` of its state
  dict would take; `torch_dynamic_int8(model)` rebuilds it from the float model in a second.

The gate: a variant passes when its held-out masked-LM accuracy is at most `max_drop_points` percentage points below
the float PyTorch model's (which `model.onnx` matches within the export's `onnx_atol`); `quantization.json` beside
the files holds each variant's size on disk and its scores (accuracy, loss, top-1 agreement with the float model),
and `check_gate` raises naming both numbers of every failing variant. A fine-tuned model's variants are gated the same
way on its task's main dev metric (`distil.tasks.int8`): a report names its `metric`, and `write_gate_report`,
`format_gate` and `check_gate` read that metric.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from transformers import PreTrainedModel

from distil.comparison_table import format_comparison
from distil.evaluation.masked_lm import MaskedLogits, held_out_batches, masked_lm_scores, masked_logits
from distil.evaluation.speed import Forward, timed_forward
from distil.exporting.onnx_model import (
    ONNX_FILE,
    OnnxMaskedLM,
    check_onnx_installed,
    graph_input_names,
    onnx_feed,
    onnx_file_bytes,
)
from distil.families import masked_lm_parts

VARIANT_FILES = {  # INT8 variant -> its file beside model.onnx (None: measured in memory, not written)
    "onnx_dynamic": "model.int8-dynamic.onnx",
    "onnx_static": "model.int8-static.onnx",
    "torch_dynamic": None,
}
VARIANTS = tuple(VARIANT_FILES)
QUANTIZATION_FILE = "quantization.json"
FLOAT = "float"  # name of the float PyTorch model in the gate's scores
ONNX_FLOAT = "onnx_float"  # name of the float model.onnx among the exported models
QUANTIZED_OP_TYPES = ["MatMul", "Gather"]  # the weights of a transformer encoder: linear layers and embedding lookups


class QualityGateError(RuntimeError):
    """An INT8 variant lost more held-out accuracy than allowed."""


@dataclass(frozen=True)
class Int8Settings:
    """What `distil.export ... int8=true` quantizes and how it is gated (the `quantization` keys of its config).

    Args:
        variants: names among `VARIANTS`.
        max_drop_points: largest allowed drop of held-out masked-LM accuracy, in percentage points.
        calibration_rows: training rows whose activations calibrate `onnx_static`.
        max_batches: score only the first N held-out batches; None = the whole validation split.
        data: data config (the `data` group) of the held-out and calibration rows, instantiated with the exported
            folder's tokenizer.
    """

    variants: Sequence[str]
    max_drop_points: float
    calibration_rows: int
    max_batches: int | None
    data: DictConfig

    def __post_init__(self) -> None:
        check_int8_settings(self.variants, self.max_drop_points, self.calibration_rows)


def check_int8_settings(variants: Sequence[str], max_drop_points: float, calibration_rows: int) -> None:
    """Raise naming the bad value and what is allowed."""
    unknown = [v for v in variants if v not in VARIANT_FILES]
    if unknown or not variants or len(set(variants)) != len(variants):
        raise ValueError(
            f"quantization.variants={list(variants)} is not allowed: give distinct variants among {list(VARIANTS)}"
        )
    if not max_drop_points >= 0:
        raise ValueError(
            f"quantization.max_drop_points={max_drop_points} is not allowed: give the largest allowed drop of "
            "held-out accuracy in percentage points, >= 0 (e.g. 1.0)"
        )
    if "onnx_static" in variants and not (isinstance(calibration_rows, int) and calibration_rows >= 1):
        raise ValueError(
            f"quantization.calibration_rows={calibration_rows!r} is not allowed: give a number of training rows >= 1"
        )


def onnx_dynamic_int8(float_path: Path, path: Path) -> None:
    """Write ONNX Runtime's dynamic INT8 quantization of `float_path` (int8 weights of MatMuls and Gathers)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(float_path, path, op_types_to_quantize=QUANTIZED_OP_TYPES, weight_type=QuantType.QInt8)


def onnx_static_int8(float_path: Path, path: Path, calibration: Iterable[dict]) -> None:
    """Write ONNX Runtime's static INT8 quantization (QDQ) of `float_path`, activation ranges from the batches of
    `calibration` (fed as the graph's inputs, `onnx_feed`)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    names = graph_input_names(float_path)

    class CalibrationRows(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration)

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else onnx_feed(names, batch)

    quantize_static(
        float_path,
        path,
        CalibrationRows(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=QUANTIZED_OP_TYPES,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )


def torch_dynamic_int8(model: PreTrainedModel) -> torch.nn.Module:
    """A copy of `model` with every `nn.Linear` dynamically quantized to int8 by PyTorch (x86 / fbgemm kernels)."""
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=False).eval()


def torch_int8_masked_logits(quantized: torch.nn.Module) -> MaskedLogits:
    """The masked positions' logits of a `torch_dynamic_int8` model: its quantized output projection is a module
    (no weight tensor to hand to `masked_logits`), called on the masked rows only."""
    parts, projection = masked_lm_parts(quantized), quantized.get_output_embeddings()

    def logits(input_ids: torch.Tensor, attention_mask: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        hidden = parts.encode(input_ids.cpu(), attention_mask.cpu())[masked.cpu()]  # int8 kernels: CPU only
        return projection(parts.head_features(hidden)).to(masked.device)

    return logits


def state_dict_bytes(model: torch.nn.Module) -> int:
    """Bytes of `torch.save(model.state_dict())`: the size a PyTorch-quantized model would take on disk."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def limit_rows(batches: Iterable[dict], rows: int) -> Iterator[dict]:
    """The first `rows` rows of `batches`, in batches (the last one cut short)."""
    remaining = rows
    for batch in batches:
        if remaining <= 0:
            return
        yield {name: tensor[:remaining] for name, tensor in batch.items()}
        remaining -= len(batch["input_ids"])


def write_onnx_int8_files(directory: Path, variants: Sequence[str], calibration: Iterable[dict]) -> None:
    """Write the ONNX INT8 file of each of `variants` that has one beside `directory/model.onnx`; `onnx_static`'s
    activation ranges come from the `calibration` batches."""
    float_path = directory / ONNX_FILE
    for variant in variants:
        if variant == "onnx_dynamic":
            onnx_dynamic_int8(float_path, directory / VARIANT_FILES[variant])
        elif variant == "onnx_static":
            onnx_static_int8(float_path, directory / VARIANT_FILES[variant], calibration)


def write_int8_variants(model: PreTrainedModel, directory: Path, settings: Int8Settings) -> dict:
    """Write the ONNX INT8 variants of `directory/model.onnx` beside it, score every variant and the float `model`
    on the held-out batches, and write `directory/quantization.json`; returns its content (module docstring).

    The data module of `settings.data` reads the tokenizer saved in `directory`. Does not apply the gate
    (`check_gate`), so that the report of a failing variant is written and printed first.
    """
    datamodule = instantiate(settings.data, tokenizer=str(directory))
    calibration = limit_rows(datamodule.train_dataloader(), settings.calibration_rows)
    variants, max_drop_points = settings.variants, settings.max_drop_points
    write_onnx_int8_files(directory, variants, calibration)
    quantized = variant_models(directory, variants, model, with_mlm_head=True)
    scorers = {FLOAT: masked_logits(model), **{name: m.masked_logits for name, m in quantized.items()}}
    sizes = {name: m.disk_bytes for name, m in quantized.items()}
    held_out = held_out_batches(datamodule, settings.max_batches)
    scores = masked_lm_scores(scorers, held_out, torch.device("cpu"), agreement={v: FLOAT for v in variants})
    report = {
        "metric": "mlm_acc",
        "metric_label": "held-out masked-LM accuracy",
        "column": "masked-LM acc (%)",
        "scored_on": f"{scores['masked_tokens']} held-out masked tokens",
        "masked_tokens": scores["masked_tokens"],
        "calibration_rows": settings.calibration_rows if "onnx_static" in variants else None,
    }
    return write_gate_report(report, directory, scores, sizes, variants, max_drop_points)


def write_gate_report(
    report: dict, directory: Path, scores: dict, sizes: dict, variants: Sequence[str], max_drop_points: float
) -> dict:
    """`report` (which names its `metric`) completed with the float `model.onnx` and the INT8 variants of
    `directory`, their sizes (`sizes`: bytes of each variant) and `scores` (name -> metric -> value, `FLOAT` and
    each variant), each variant's drop of the metric in points and whether it passed; written to
    `directory/quantization.json` and returned. The file of a variant that fails the gate is deleted (its entry's
    `file` is null), so that only the variants that passed are ever on disk."""
    metric, float_path = report["metric"], directory / ONNX_FILE
    float_bytes = onnx_file_bytes(float_path)
    report = {
        **report,
        "max_drop_points": max_drop_points,
        FLOAT: {"file": float_path.name, "size_bytes": float_bytes, **scores[FLOAT]},
        "int8": {},
    }
    for variant in variants:
        drop = 100.0 * (scores[FLOAT][metric] - scores[variant][metric])
        file, passed = VARIANT_FILES[variant], drop <= max_drop_points
        if file is not None and not passed:
            (directory / file).unlink()  # a variant below the gate is not left where it could be shipped
        report["int8"][variant] = {
            "file": file if passed else None,
            "size_bytes": sizes[variant],
            "size_pct_of_float": 100.0 * sizes[variant] / float_bytes,
            **scores[variant],
            "drop_points": drop,
            "passed": passed,
        }
    (directory / QUANTIZATION_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def gate_table(report: dict) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The header and rows of a quantization report's side-by-side table: one row per model, float first. The top-1
    agreement column is there when the variants were scored on it (the masked LM's gate; a task's gate is not)."""
    float_entry, metric = report[FLOAT], report["metric"]
    with_agreement = any("top1_agreement" in entry for entry in report["int8"].values())

    def row(model: str, size: str, share: str, value: str, drop: str, agreement: str, gate: str) -> tuple[str, ...]:
        return (model, size, share, value, drop, *((agreement,) if with_agreement else ()), gate)

    header = row("", "size (MB)", "of float", report["column"], "drop (points)", "top-1 = float (%)", "gate")
    float_size = f"{float_entry['size_bytes'] / 1e6:.1f}"
    rows = [
        row(f"float32 ({float_entry['file']})", float_size, "100.0%", f"{100 * float_entry[metric]:.2f}", "", "", "")
    ]
    for variant, entry in report["int8"].items():
        where = entry["file"] or ("in memory, not written" if VARIANT_FILES[variant] is None else "file removed")
        rows.append(
            row(
                f"int8 {variant} ({where})",
                f"{entry['size_bytes'] / 1e6:.1f}",
                f"{entry['size_pct_of_float']:.1f}%",
                f"{100 * entry[metric]:.2f}",
                f"{entry['drop_points']:+.2f}",
                f"{100 * entry['top1_agreement']:.2f}" if with_agreement else "",
                "pass" if entry["passed"] else "FAIL",
            )
        )
    return header, rows


def format_gate(report: dict) -> str:
    """The table of `gate_table` and the limit."""
    header, rows = gate_table(report)
    limit = f"{report['scored_on']}; gate: a drop of at most {report['max_drop_points']} points"
    return f"{format_comparison(rows, header)}\n{limit}"


def check_gate(report: dict) -> None:
    """Raise `QualityGateError` naming the float and INT8 values of the report's metric of every variant that dropped
    too far."""
    limit, metric = report["max_drop_points"], report["metric"]
    float_value = 100 * report[FLOAT][metric]
    failures = [
        f"{variant}: {100 * entry[metric]:.2f}% vs float {float_value:.2f}% (drop {entry['drop_points']:.2f} points)"
        for variant, entry in report["int8"].items()
        if not entry["passed"]
    ]
    if failures:
        raise QualityGateError(
            f"INT8 quality gate failed: {report['metric_label']} dropped by more than "
            f"quantization.max_drop_points={limit}: {'; '.join(failures)}"
        )


@dataclass(frozen=True)
class ExportedModel:
    """A float or INT8 model of an `int8=true` export, as `distil.evaluate` scores and times it on the CPU.

    forward: `(input_ids, attention_mask) -> output` for timing; `with_mlm_head` says whether it includes the
    vocabulary projection (an ONNX graph always does).
    """

    file: str | None
    disk_bytes: int
    forward: Forward
    masked_logits: MaskedLogits
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
            logits = torch_int8_masked_logits(quantized)
            models[name] = ExportedModel(None, state_dict_bytes(quantized), forward, logits, with_mlm_head)
        else:
            file = ONNX_FILE if name == ONNX_FLOAT else VARIANT_FILES[name]
            onnx_model = OnnxMaskedLM(directory / file)
            size = onnx_file_bytes(directory / file)
            models[name] = ExportedModel(file, size, onnx_model.forward, onnx_model.masked_logits, True)
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
