"""The report of `distil.evaluate` and its tables: for the teacher and the student their parameters, weights on
disk, held-out scores and speed, the student's numbers as a share of the teacher's and the speed-ups; for an
`int8=true` export, its float ONNX and INT8 models beside them; for causal LMs, both models' greedy continuations of
a few prompts.

The scores are masked-LM or next-token scores as the models' kind decides (`report["prediction"]`, the name of a
`distil.modules.metrics.Prediction`); the tables label their rows accordingly."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel

from distil.evaluation.models import count_parameters, disk_bytes, weights_dir
from distil.evaluation.speed import measure_speed, timed_forward
from distil.evaluation.tables import format_percent, percent
from distil.modules.metrics import PREDICTIONS, Prediction
from distil.value_checks import check_integer

MODELS = ("teacher", "student")  # column order of the table and keys of the report


def speed_entries(forward, device: torch.device, vocab_size: int, speed: DictConfig) -> dict[str, float]:
    """`measure_speed` of `forward` on `device` with the `speed` settings, its keys prefixed with the device type."""
    timing = (speed.max_length, speed.latency_batch, speed.throughput_batch, speed.min_run_time)
    measured = measure_speed(forward, device, vocab_size, *timing)
    return {f"{device.type}_{key}": value for key, value in measured.items()}


def build_report(
    models: dict[str, PreTrainedModel],
    paths: dict[str, str],
    scores: dict,
    exported: dict,
    speed: DictConfig,
    speed_on: list[torch.device],
    prediction: Prediction,
    continuations: list[dict[str, str]] | None = None,
) -> dict:
    """The report of `models` (teacher and student, at `paths`) scored with `scores` (`held_out_scores` on
    `prediction`), timed on `speed_on` with the `speed` settings, of the `exported` models of the student's export
    (`ExportedModel`s) and, when given, with the models' `continuations` (`greedy_continuations`)."""
    report = {"prediction": prediction.name, "top1_agreement": scores["student"].pop("top1_agreement")}
    for name, model in models.items():
        entry = {
            "path": paths[name],
            "parameters": count_parameters(model),
            "disk_bytes": disk_bytes(weights_dir(paths[name])),
            **scores[name],
        }
        entry["disk_bytes_per_parameter"] = entry["disk_bytes"] / entry["parameters"]  # shows the stored dtype
        for device in speed_on:
            forward = timed_forward(model.to(device), speed.with_mlm_head)
            entry.update(speed_entries(forward, device, model.config.vocab_size, speed))
        report[name] = entry
    teacher, student = report["teacher"], report["student"]
    report["student_pct_of_teacher"] = {
        key: percent(student[key], value) for key, value in teacher.items() if isinstance(value, (int, float))
    }
    report["speedup"] = {
        d.type: {
            "latency": teacher[f"{d.type}_latency_ms"] / student[f"{d.type}_latency_ms"],
            "throughput": student[f"{d.type}_throughput_seq_per_s"] / teacher[f"{d.type}_throughput_seq_per_s"],
        }
        for d in speed_on
    }
    if exported:
        time_cpu = torch.device("cpu") in speed_on
        vocab_size = models["student"].config.vocab_size
        report["exported"] = exported_entries(exported, scores, student["disk_bytes"], speed, vocab_size, time_cpu)
    report[prediction.count_key] = scores[prediction.count_key]
    if continuations is not None:
        report["continuations"] = continuations
    report["settings"] = {"speed": OmegaConf.to_container(speed), "cpu_threads": torch.get_num_threads()}
    return report


def check_continuations(prompts: Sequence[str], max_new_tokens: int) -> None:
    """Raise naming the `continuations` key whose value is not allowed, and what is."""
    if isinstance(prompts, str) or not all(isinstance(prompt, str) and prompt.strip() for prompt in prompts):
        raise ValueError(f"continuations.prompts={prompts!r} is not allowed: give a list of non-empty strings")
    check_integer("continuations.max_new_tokens", max_new_tokens, 1)


@torch.inference_mode()
def greedy_continuations(
    models: dict[str, PreTrainedModel], tokenizer, prompts: Sequence[str], max_new_tokens: int, device: torch.device
) -> list[dict[str, str]]:
    """Each of `prompts` continued by each causal LM of `models` (on `device`) by greedy decoding
    (`model.generate(do_sample=False)`): at most `max_new_tokens` new tokens, fewer when a model ends its text, decoded
    without special tokens. Returns [{"prompt": prompt, <model name>: its continuation, ...}] in prompt order."""
    entries = []
    for prompt in prompts:
        input_ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(device)
        entry = {"prompt": prompt}
        for name, model in models.items():
            output = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                do_sample=False,
                max_new_tokens=max_new_tokens,
            )
            entry[name] = tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)
        entries.append(entry)
    return entries


def format_continuations(report: dict) -> str:
    """The report's greedy continuations as text: each prompt, then each model's continuation under it (quoted, so
    that leading spaces and line breaks show)."""
    lines = ["greedy continuations of the prompts:"]
    for entry in report["continuations"]:
        prompt, continued = entry["prompt"], {name: text for name, text in entry.items() if name != "prompt"}
        width = max(len(name) for name in continued)
        lines += [f"  {prompt!r}", *(f"    {name + ':':<{width + 1}} {text!r}" for name, text in continued.items())]
    return "\n".join(lines)


def report_rows(report: dict) -> list[tuple[str, str, str, str]]:
    """The table of an evaluate report: label | teacher | student | student as % of teacher (or the speed-up)."""
    teacher, student, pct = report["teacher"], report["student"], report["student_pct_of_teacher"]
    speed, prediction = report["settings"]["speed"], PREDICTIONS[report["prediction"]]

    def row(label: str, key: str, fmt: str, scale: float = 1.0) -> tuple[str, str, str, str]:
        cells = (format(teacher[key] * scale, fmt), format(student[key] * scale, fmt))
        return (label, *cells, format_percent(pct[key]))

    rows = [
        row("parameters (M)", "parameters", ".2f", 1e-6),
        row("weights on disk (MB)", "disk_bytes", ".1f", 1e-6),
        row("bytes on disk per parameter (4 = float32)", "disk_bytes_per_parameter", ".2f"),
        row(f"{prediction.label} accuracy (%)", prediction.accuracy, ".2f", 100.0),
        row(f"{prediction.label} loss (nats)", prediction.loss, ".3f"),
        row("perplexity", "ppl", ".2f"),
    ]
    for device, speedup in report["speedup"].items():
        name = device.upper()
        rows += [
            row(
                f"{name} latency, batch {speed['latency_batch']} x {speed['max_length']} (ms)",
                f"{device}_latency_ms",
                ".2f",
            ),
            row(
                f"{name} throughput, batch {speed['throughput_batch']} x {speed['max_length']} (seq/s)",
                f"{device}_throughput_seq_per_s",
                ".1f",
            ),
            (
                f"{name} speed-up: latency, throughput",
                "",
                "",
                f"{speedup['latency']:.2f}x, {speedup['throughput']:.2f}x",
            ),
        ]
    rows.append(("top-1 agreement with the teacher (%)", "", f"{100 * report['top1_agreement']:.2f}", ""))
    return rows


def exported_entries(
    exported: dict,
    scores: dict,
    student_bytes: int,
    speed: DictConfig,
    vocab_size: int,
    time_cpu: bool,
) -> dict:
    """Report entries of the float ONNX and INT8 models of the student's export (`ExportedModel`s): size on disk (and
    as % of the student's weights), held-out scores with top-1 agreement with the PyTorch student, and CPU latency
    and throughput when `time_cpu`."""
    entries = {}
    for name, model in exported.items():
        entry = {
            "label": model.label,
            "file": model.file,
            "disk_bytes": model.disk_bytes,
            "disk_pct_of_student": percent(model.disk_bytes, student_bytes),
            **scores[name],
            "timed_with_mlm_head": model.with_mlm_head,
        }
        if time_cpu:
            entry.update(speed_entries(model.forward, torch.device("cpu"), vocab_size, speed))
        entries[name] = entry
    return entries


def exported_rows(report: dict) -> list[tuple[str, ...]]:
    """The size/speed table of the student's export: teacher and student (PyTorch, float32), then the float ONNX and
    INT8 models; CPU columns are "n/a" when the CPU was not timed."""
    speed, prediction = report["settings"]["speed"], PREDICTIONS[report["prediction"]]

    def cells(entry: dict, agreement: str) -> tuple[str, ...]:
        timed = "cpu_latency_ms" in entry
        return (
            f"{entry['disk_bytes'] / 1e6:.1f}",
            f"{100 * entry[prediction.accuracy]:.2f}",
            agreement,
            f"{entry['cpu_latency_ms']:.2f}" if timed else "n/a",
            f"{entry['cpu_throughput_seq_per_s']:.1f}" if timed else "n/a",
        )

    torch_head = "with" if speed["with_mlm_head"] else "without"
    rows = [
        (f"teacher fp32 (PyTorch, {torch_head} {prediction.head})", *cells(report["teacher"], "")),
        (f"student fp32 (PyTorch, {torch_head} {prediction.head})", *cells(report["student"], "100.00")),
    ]
    for entry in report["exported"].values():
        head = "with" if entry["timed_with_mlm_head"] else "without"
        rows.append(
            (
                f"{entry['label']} ({entry['file'] or 'in memory'}, {head} {prediction.head})",
                *cells(entry, f"{100 * entry['top1_agreement']:.2f}"),
            )
        )
    return rows


def exported_header(report: dict) -> tuple[str, ...]:
    """Column titles of `exported_rows`, with the timed batch shapes."""
    speed, prediction = report["settings"]["speed"], PREDICTIONS[report["prediction"]]
    return (
        "",
        "on disk (MB)",
        f"{prediction.label} acc (%)",
        "top-1 = student (%)",
        f"CPU latency, batch {speed['latency_batch']} x {speed['max_length']} (ms)",
        f"CPU seq/s, batch {speed['throughput_batch']}",
    )
