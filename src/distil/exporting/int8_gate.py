"""The quality gate of INT8 variants and its report, `quantization.json` beside the files.

A variant passes when its main metric is at most `max_drop_points` percentage points below the float PyTorch
model's (which `model.onnx` matches within the export's `onnx_atol`): held-out masked-LM accuracy for an exported
masked LM (`masked_lm_int8`), the task's main dev metric for a fine-tuned model (`task_int8`). A report names its
`metric`; `write_gate_report` completes it with each variant's size and scores and writes it, `format_gate` prints it
side by side, `check_gate` raises naming both numbers of every failing variant. The file of a failing variant is
deleted, so only variants that passed are ever on disk.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from distil.evaluation.tables import format_comparison
from distil.exporting.int8_files import VARIANT_FILES, VARIANTS
from distil.exporting.onnx_model import ONNX_FILE, onnx_file_bytes

QUANTIZATION_FILE = "quantization.json"


FLOAT = "float"  # name of the float PyTorch model in the gate's scores


class QualityGateError(RuntimeError):
    """An INT8 variant lost more held-out accuracy than allowed."""


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
