"""`python -m distil.evaluate student_model=PATH teacher_model=PATH data=NAME`: the DistilBERT claims on your run.

For the teacher and the student it reports parameters and weights on disk, masked-LM accuracy, loss and perplexity
on the held-out split of `data` (both models score the very same masked batches, so the masks are identical), top-1
agreement between them, and inference latency (batch 1) and throughput (batch 32) on the CPU and, when present, the
GPU, with the student's numbers as a percentage of the teacher's and the speed-ups. The result goes to `report.json`
and is printed as a table.

When the student folder is an `int8=true` export of `distil.export` (it holds `quantization.json`), the float
`model.onnx` and every INT8 variant are scored on the same batches (accuracy, top-1 agreement with the PyTorch
student) and timed on the CPU, and a second table puts their size on disk, accuracy, latency and throughput beside
the float teacher and student (`report["exported"]`).

The student may be a Hugging Face directory or a `distil.train` checkpoint (`.ckpt`), which is exported first.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from transformers import AutoConfig, AutoModelForMaskedLM, PreTrainedModel

from distil.comparison_table import format_comparison, format_percent, percent
from distil.data.tokenization import check_tokenizer_matches, load_tokenizer
from distil.evaluation.masked_lm import held_out_batches, masked_lm_scores, masked_logits
from distil.evaluation.speed import measure_speed, timed_forward
from distil.export import hf_model_path
from distil.families import UnsupportedModelError, masked_lm_parts
from distil.families.size import ModelTooLargeError, check_model_size
from distil.quantization import ONNX_FLOAT, ExportedModel, exported_models
from distil.quiet import quiet_third_party_output

log = logging.getLogger(__name__)

MODELS = ("teacher", "student")  # column order of the table and keys of the report
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")  # weight files of a Hugging Face model directory


def load_masked_lm(key: str, name_or_path: str) -> PreTrainedModel:
    """Float32 masked-LM model in eval mode; raises naming `key` when it cannot load, is larger than this machine's
    memory (read from its config first) or has no complete MLM head."""
    try:
        check_model_size(AutoConfig.from_pretrained(name_or_path), f"{key}={name_or_path!r}")
        model, info = AutoModelForMaskedLM.from_pretrained(name_or_path, dtype=torch.float32, output_loading_info=True)
    except ModelTooLargeError:
        raise
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"{key}={name_or_path!r} could not be loaded as a masked-LM model: {error}") from error
    if info["missing_keys"]:
        raise ValueError(
            f"{key}={name_or_path!r} has no masked-LM head (weights missing: {sorted(info['missing_keys'])}); "
            "give a model saved with its MLM head, e.g. BertForMaskedLM, DistilBertForMaskedLM or RobertaForMaskedLM"
        )
    try:
        masked_lm_parts(model, f"{key}={name_or_path!r}")
    except UnsupportedModelError as error:
        raise ValueError(str(error)) from error
    return model.eval()


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied weights, such as the input and output embeddings, counted once)."""
    return sum(p.numel() for p in model.parameters())


def weights_dir(name_or_path: str) -> Path:
    """The local directory holding the model's weight files (the hub cache's snapshot for a hub id)."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name_or_path, local_files_only=True))


def disk_bytes(directory: Path) -> int:
    """Total size in bytes of the weight files in `directory` (config and tokenizer files not included)."""
    files = {f for pattern in WEIGHT_PATTERNS for f in directory.glob(pattern)}
    if not files:
        raise FileNotFoundError(f"no weight files ({', '.join(WEIGHT_PATTERNS)}) in {directory}")
    return sum(f.stat().st_size for f in files)


def speed_devices(requested: Sequence[str]) -> list[torch.device]:
    """The requested devices that exist here ("cuda" is dropped, with a log line, when no GPU is present)."""
    allowed = ("cpu", "cuda")
    bad = [d for d in requested if d not in allowed]
    if bad:
        raise ValueError(f"speed.devices has {bad}; allowed: {list(allowed)}")
    if "cuda" in requested and not torch.cuda.is_available():
        log.info("no CUDA GPU present: timing on the CPU only")
    return [torch.device(d) for d in requested if d == "cpu" or torch.cuda.is_available()]


def report_rows(report: dict) -> list[tuple[str, str, str, str]]:
    """The table of an evaluate report: label | teacher | student | student as % of teacher (or the speed-up)."""
    teacher, student, pct = report["teacher"], report["student"], report["student_pct_of_teacher"]
    speed = report["settings"]["speed"]

    def row(label: str, key: str, fmt: str, scale: float = 1.0) -> tuple[str, str, str, str]:
        cells = (format(teacher[key] * scale, fmt), format(student[key] * scale, fmt))
        return (label, *cells, format_percent(pct[key]))

    rows = [
        row("parameters (M)", "parameters", ".2f", 1e-6),
        row("weights on disk (MB)", "disk_bytes", ".1f", 1e-6),
        row("bytes on disk per parameter (4 = float32)", "disk_bytes_per_parameter", ".2f"),
        row("masked-LM accuracy (%)", "mlm_acc", ".2f", 100.0),
        row("masked-LM loss (nats)", "mlm_loss", ".3f"),
        row("perplexity", "ppl", ".2f"),
    ]
    for device, speedup in report["speedup"].items():
        name = device.upper()
        rows += [
            row(
                f"{name} latency, batch {speed['latency_batch']} x {speed['seq_len']} (ms)",
                f"{device}_latency_ms",
                ".2f",
            ),
            row(
                f"{name} throughput, batch {speed['throughput_batch']} x {speed['seq_len']} (seq/s)",
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
    exported: dict[str, ExportedModel],
    scores: dict,
    student_bytes: int,
    speed: DictConfig,
    vocab_size: int,
    time_cpu: bool,
) -> dict:
    """Report entries of the float ONNX and INT8 models of the student's export: size on disk (and as % of the
    student's weights), held-out scores with top-1 agreement with the PyTorch student, and CPU latency and throughput
    when `time_cpu`."""
    entries = {}
    for name, model in exported.items():
        entry = {
            "file": model.file,
            "disk_bytes": model.disk_bytes,
            "disk_pct_of_student": percent(model.disk_bytes, student_bytes),
            **scores[name],
            "timed_with_mlm_head": model.with_mlm_head,
        }
        if time_cpu:
            timing = (speed.seq_len, speed.latency_batch, speed.throughput_batch, speed.min_run_time)
            cpu_speed = measure_speed(model.forward, torch.device("cpu"), vocab_size, *timing)
            entry.update({f"cpu_{key}": value for key, value in cpu_speed.items()})
        entries[name] = entry
    return entries


EXPORTED_LABELS = {  # row labels of the exported models
    ONNX_FLOAT: "student fp32 ONNX",
    "onnx_dynamic": "student INT8 ONNX dynamic",
    "onnx_static": "student INT8 ONNX static",
    "torch_dynamic": "student INT8 PyTorch dynamic",
}


def exported_rows(report: dict) -> list[tuple[str, ...]]:
    """The size/speed table of the student's export: teacher and student (PyTorch, float32), then the float ONNX and
    INT8 models; CPU columns are "n/a" when the CPU was not timed."""
    speed = report["settings"]["speed"]

    def cells(entry: dict, agreement: str) -> tuple[str, ...]:
        timed = "cpu_latency_ms" in entry
        return (
            f"{entry['disk_bytes'] / 1e6:.1f}",
            f"{100 * entry['mlm_acc']:.2f}",
            agreement,
            f"{entry['cpu_latency_ms']:.2f}" if timed else "n/a",
            f"{entry['cpu_throughput_seq_per_s']:.1f}" if timed else "n/a",
        )

    torch_head = "with" if speed["with_mlm_head"] else "without"
    rows = [
        (f"teacher fp32 (PyTorch, {torch_head} MLM head)", *cells(report["teacher"], "")),
        (f"student fp32 (PyTorch, {torch_head} MLM head)", *cells(report["student"], "100.00")),
    ]
    for name, entry in report["exported"].items():
        head = "with" if entry["timed_with_mlm_head"] else "without"
        label = EXPORTED_LABELS[name]
        rows.append(
            (
                f"{label} ({entry['file'] or 'in memory'}, {head} MLM head)",
                *cells(entry, f"{100 * entry['top1_agreement']:.2f}"),
            )
        )
    return rows


def exported_header(report: dict) -> tuple[str, ...]:
    """Column titles of `exported_rows`, with the timed batch shapes."""
    speed = report["settings"]["speed"]
    return (
        "",
        "on disk (MB)",
        "masked-LM acc (%)",
        "top-1 = student (%)",
        f"CPU latency, batch {speed['latency_batch']} x {speed['seq_len']} (ms)",
        f"CPU seq/s, batch {speed['throughput_batch']}",
    )


def pick_device(name: str) -> torch.device:
    """ "auto" -> cuda when present, else cpu; "cpu" and "cuda" as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device={name!r} is not allowed: use auto, cpu or cuda")
    return torch.device(name)


def evaluate(cfg: DictConfig) -> dict:
    """The report of `cfg` (see the module docstring): loads, scores and times both models; writes nothing."""
    paths = {
        name: hf_model_path(f"{name}_model", str(cfg[f"{name}_model"]), Path(cfg.report).parent / "exported")
        for name in MODELS
    }
    speed_on = speed_devices(list(cfg.speed.devices))
    scoring_device = pick_device(cfg.device)
    tokenizer = load_tokenizer(cfg.data.tokenizer)  # refuses a folder without tokenizer files before any weights
    models = {name: load_masked_lm(f"{name}_model", paths[name]) for name in MODELS}
    for name, model in models.items():
        model_words = f"{name}_model={paths[name]!r}"
        check_tokenizer_matches(tokenizer, cfg.data.tokenizer, "data.tokenizer", model.config.vocab_size, model_words)
    vocab_sizes = {name: model.config.vocab_size for name, model in models.items()}
    if len(set(vocab_sizes.values())) > 1:
        raise ValueError(f"vocabulary sizes differ {vocab_sizes}: teacher and student must share the tokenizer")

    # model.onnx and the INT8 variants of an `int8=true` export ({} otherwise), built while the student is on the CPU
    exported = exported_models(Path(paths["student"]), models["student"], cfg.speed.with_mlm_head)
    for model in models.values():
        model.to(scoring_device)
    scorers = {name: masked_logits(model) for name, model in models.items()}
    scorers.update({name: model.masked_logits for name, model in exported.items()})
    agreement = {"student": "teacher", **{name: "student" for name in exported}}
    batches = held_out_batches(instantiate(cfg.data), cfg.max_batches)
    scores = masked_lm_scores(scorers, batches, scoring_device, agreement)
    report = {"top1_agreement": scores["student"].pop("top1_agreement")}
    for name, model in models.items():
        entry = {
            "path": paths[name],
            "parameters": count_parameters(model),
            "disk_bytes": disk_bytes(weights_dir(paths[name])),
            **scores[name],
        }
        entry["disk_bytes_per_parameter"] = entry["disk_bytes"] / entry["parameters"]  # shows the stored dtype
        for device in speed_on:
            speed = measure_speed(
                timed_forward(model.to(device), cfg.speed.with_mlm_head),
                device,
                model.config.vocab_size,
                cfg.speed.seq_len,
                cfg.speed.latency_batch,
                cfg.speed.throughput_batch,
                cfg.speed.min_run_time,
            )
            entry.update({f"{device.type}_{key}": value for key, value in speed.items()})
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
        cpu = torch.device("cpu") in speed_on
        vocab_size = vocab_sizes["student"]
        report["exported"] = exported_entries(exported, scores, student["disk_bytes"], cfg.speed, vocab_size, cpu)
    report["masked_tokens"] = scores["masked_tokens"]
    report["settings"] = {"speed": OmegaConf.to_container(cfg.speed), "cpu_threads": torch.get_num_threads()}
    return report


@hydra.main(version_base="1.3", config_path="../../conf", config_name="evaluate")
def main(cfg: DictConfig) -> dict:
    quiet_third_party_output()
    report = evaluate(cfg)
    path = Path(cfg.report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(format_comparison(report_rows(report), ("", "teacher", "student", "student/teacher")))
    if "exported" in report:
        print(format_comparison(exported_rows(report), exported_header(report)))
    print(f"{report['masked_tokens']} masked tokens scored; report: {path}")
    return report


if __name__ == "__main__":
    main()
