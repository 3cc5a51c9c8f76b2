"""The quality gate of INT8 variants and its report, `quantization.json` beside the files.

A variant passes when its main metric is at most so much worse than the float PyTorch model's (which `model.onnx`
matches within the export's `onnx_atol`). The metric decides how "worse" is measured (`gate_rule`): a metric where
higher is better (a fraction: held-out masked-LM accuracy of an exported masked LM, `lm_int8`; the task's main
dev metric of a fine-tuned model, `task_int8`) may drop by at most `max_drop_points` percentage points; held-out
perplexity (of an exported causal LM), where lower is better, may rise by at most `max_ppl_increase_pct` percent of
the float model's. A report names its `metric`; `write_gate_report` completes it with each variant's size and scores
and writes it, `format_gate` prints it side by side, `check_gate` raises naming both numbers of every failing
variant. The file of a failing variant is deleted, so only variants that passed are ever on disk.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from distil.evaluation.tables import format_comparison
from distil.exporting.int8_files import VARIANT_FILES, VARIANTS
from distil.exporting.onnx_model import ONNX_FILE, onnx_file_bytes

QUANTIZATION_FILE = "quantization.json"


FLOAT = "float"  # name of the float PyTorch model in the gate's scores


PERPLEXITY = "ppl"  # the one gate metric where lower is better (`distil.modules.metrics.TokenPredictionMetrics`)


class QualityGateError(RuntimeError):
    """An INT8 variant lost more held-out quality than allowed."""


@dataclass(frozen=True)
class GateRule:
    """How the gate measures a variant's loss of quality on the report's metric, and how it names it.

    limit_key: the quantization setting of the largest allowed loss (and its key in the report).
    loss_key: the key of each variant's loss in the report.
    loss_name, loss_unit: the loss in words, e.g. "drop" and " points" in "a drop of at most 1.0 points".
    worsened: what the metric did when it failed, e.g. "dropped".
    higher_is_better: the metric is a fraction where higher is better (shown x100, its loss in percentage points);
        else lower is better (shown as it is, its loss in percent of the float model's value).
    """

    limit_key: str
    loss_key: str
    loss_name: str
    loss_unit: str
    worsened: str
    higher_is_better: bool

    def loss(self, float_value: float, value: float) -> float:
        """How much worse `value` is than `float_value`: points lost, or percent gained."""
        if self.higher_is_better:
            return 100.0 * (float_value - value)
        return 100.0 * (value / float_value - 1.0)

    def shown(self, value: float) -> str:
        """The metric's value as the table shows it: a fraction x100, a perplexity as it is."""
        return f"{100 * value:.2f}" if self.higher_is_better else f"{value:.2f}"

    def shown_with_unit(self, value: float) -> str:
        """The metric's value as messages show it: a fraction in %, a perplexity as it is."""
        return f"{self.shown(value)}%" if self.higher_is_better else self.shown(value)


ACCURACY_DROP = GateRule("max_drop_points", "drop_points", "drop", " points", "dropped", higher_is_better=True)
PERPLEXITY_INCREASE = GateRule(
    "max_ppl_increase_pct", "increase_pct", "perplexity increase", "%", "rose", higher_is_better=False
)


def gate_rule(metric: str) -> GateRule:
    """The rule of a gate on `metric`: perplexity may rise by a percentage, any other metric drop by points."""
    return PERPLEXITY_INCREASE if metric == PERPLEXITY else ACCURACY_DROP


def check_int8_settings(
    variants: Sequence[str], max_drop_points: float, calibration_rows: int, max_ppl_increase_pct: float | None = None
) -> None:
    """Raise naming the bad value and what is allowed (`max_ppl_increase_pct`: only checked when given)."""
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
    if max_ppl_increase_pct is not None and not max_ppl_increase_pct >= 0:
        raise ValueError(
            f"quantization.max_ppl_increase_pct={max_ppl_increase_pct} is not allowed: give the largest allowed rise "
            "of held-out perplexity in percent of the float model's, >= 0 (e.g. 5.0)"
        )
    if "onnx_static" in variants and not (isinstance(calibration_rows, int) and calibration_rows >= 1):
        raise ValueError(
            f"quantization.calibration_rows={calibration_rows!r} is not allowed: give a number of training rows >= 1"
        )


def write_gate_report(
    report: dict, directory: Path, scores: dict, sizes: dict, variants: Sequence[str], limit: float
) -> dict:
    """`report` (which names its `metric`) completed with the float `model.onnx` and the INT8 variants of
    `directory`, their sizes (`sizes`: bytes of each variant) and `scores` (name -> metric -> value, `FLOAT` and
    each variant), each variant's loss of the metric (`gate_rule`: e.g. its drop in points) and whether it is at most
    `limit`; written to `directory/quantization.json` and returned. The file of a variant that fails the gate is
    deleted (its entry's `file` is null), so that only the variants that passed are ever on disk."""
    metric, float_path = report["metric"], directory / ONNX_FILE
    rule, float_bytes = gate_rule(metric), onnx_file_bytes(float_path)
    report = {
        **report,
        rule.limit_key: limit,
        FLOAT: {"file": float_path.name, "size_bytes": float_bytes, **scores[FLOAT]},
        "int8": {},
    }
    for variant in variants:
        loss = rule.loss(scores[FLOAT][metric], scores[variant][metric])
        file, passed = VARIANT_FILES[variant], loss <= limit
        if file is not None and not passed:
            (directory / file).unlink()  # a variant below the gate is not left where it could be shipped
        report["int8"][variant] = {
            "file": file if passed else None,
            "size_bytes": sizes[variant],
            "size_pct_of_float": 100.0 * sizes[variant] / float_bytes,
            **scores[variant],
            rule.loss_key: loss,
            "passed": passed,
        }
    (directory / QUANTIZATION_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def gate_table(report: dict) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The header and rows of a quantization report's side-by-side table: one row per model, float first. The top-1
    agreement column is there when the variants were scored on it (a language model's gate; a task's gate is not)."""
    float_entry, metric = report[FLOAT], report["metric"]
    rule = gate_rule(metric)
    with_agreement = any("top1_agreement" in entry for entry in report["int8"].values())

    def row(model: str, size: str, share: str, value: str, loss: str, agreement: str, gate: str) -> tuple[str, ...]:
        return (model, size, share, value, loss, *((agreement,) if with_agreement else ()), gate)

    loss_column = f"{rule.loss_name} ({rule.loss_unit.strip()})"
    header = row("", "size (MB)", "of float", report["column"], loss_column, "top-1 = float (%)", "gate")
    float_size = f"{float_entry['size_bytes'] / 1e6:.1f}"
    rows = [row(f"float32 ({float_entry['file']})", float_size, "100.0%", rule.shown(float_entry[metric]), "", "", "")]
    for variant, entry in report["int8"].items():
        where = entry["file"] or ("in memory, not written" if VARIANT_FILES[variant] is None else "file removed")
        rows.append(
            row(
                f"int8 {variant} ({where})",
                f"{entry['size_bytes'] / 1e6:.1f}",
                f"{entry['size_pct_of_float']:.1f}%",
                rule.shown(entry[metric]),
                f"{entry[rule.loss_key]:+.2f}",
                f"{100 * entry['top1_agreement']:.2f}" if with_agreement else "",
                "pass" if entry["passed"] else "FAIL",
            )
        )
    return header, rows


def format_gate(report: dict) -> str:
    """The table of `gate_table` and the limit."""
    header, rows = gate_table(report)
    rule = gate_rule(report["metric"])
    limit = f"{report['scored_on']}; gate: a {rule.loss_name} of at most {report[rule.limit_key]}{rule.loss_unit}"
    return f"{format_comparison(rows, header)}\n{limit}"


def check_gate(report: dict) -> None:
    """Raise `QualityGateError` naming the float and INT8 values of the report's metric of every variant that lost
    too much of it."""
    metric = report["metric"]
    rule = gate_rule(metric)
    float_value = rule.shown_with_unit(report[FLOAT][metric])
    failures = [
        f"{variant}: {rule.shown_with_unit(entry[metric])} vs float {float_value} "
        f"({rule.loss_name} {entry[rule.loss_key]:.2f}{rule.loss_unit})"
        for variant, entry in report["int8"].items()
        if not entry["passed"]
    ]
    if failures:
        raise QualityGateError(
            f"INT8 quality gate failed: {report['metric_label']} {rule.worsened} by more than "
            f"quantization.{rule.limit_key}={report[rule.limit_key]}: {'; '.join(failures)}"
        )
