"""Fine-tuning results as rows of the comparison table (`distil.evaluation.tables`): each dev metric, the parameters
and the training time of each model, as the mean and sample standard deviation over its runs (seeds)."""

from __future__ import annotations

import statistics

from distil.evaluation.tables import format_percent, percent


def mean_and_std(values: list[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (n - 1 in the denominator; 0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def format_mean_std(values: list[float], scale: float, fmt: str) -> str:
    """`mean` for one value, `mean ± std` for several, each scaled and formatted."""
    mean, std = mean_and_std([value * scale for value in values])
    return format(mean, fmt) if len(values) == 1 else f"{format(mean, fmt)} ± {format(std, fmt)}"


def run_values(runs: list[dict]) -> dict[str, list[float]]:
    """Each quantity of the table over `runs` (finetune reports): `dev/<metric>`, `parameters`, `train_seconds`."""
    values: dict[str, list[float]] = {}
    for run in runs:
        model = run["model"]
        for name, value in model["dev"].items():
            values.setdefault(f"dev/{name}", []).append(value)
        values.setdefault("parameters", []).append(model["parameters"])
        values.setdefault("train_seconds", []).append(model["train_seconds"])
    return values


def score_rows(metrics: list[str], columns: dict[str, list[dict]], reference: str | None = None) -> list[tuple]:
    """One row per dev metric (x 100), parameters (M) and fine-tuning time (s); one cell per column (the runs of
    one model). With `reference` (a column name), each other column's mean as a % of the reference's follows."""
    quantities = [(f"dev {name} (x100)", f"dev/{name}", 100.0, ".2f") for name in metrics]
    quantities += [("parameters (M)", "parameters", 1e-6, ".2f"), ("fine-tuning time (s)", "train_seconds", 1.0, ".1f")]
    values = {column: run_values(runs) for column, runs in columns.items()}
    rows = []
    for label, key, scale, fmt in quantities:
        cells = [format_mean_std(values[column][key], scale, fmt) for column in columns]
        if reference is not None:
            base = mean_and_std(values[reference][key])[0]
            cells += [
                format_percent(percent(mean_and_std(values[column][key])[0], base))
                for column in columns
                if column != reference
            ]
        rows.append((label, *cells))
    return rows
