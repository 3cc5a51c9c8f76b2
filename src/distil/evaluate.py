"""`python -m distil.evaluate student_model=PATH teacher_model=PATH data=NAME`: the DistilBERT claims on your run.

For the teacher and the student it reports parameters and weights on disk, masked-LM accuracy, loss and perplexity
on the held-out split of `data` (both models score the very same masked batches, so the masks are identical), top-1
agreement between them, and inference latency (batch 1) and throughput (batch 32) on the CPU and, when present, the
GPU, with the student's numbers as a percentage of the teacher's and the speed-ups. The result goes to `report.json`
and is printed as a table.

The student may be a Hugging Face directory or a `distil.train` checkpoint (`.ckpt`), which is exported first.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForMaskedLM, PreTrainedModel

from distil.comparison_table import format_comparison, format_percent, percent
from distil.data.tokenization import check_tokenizer_matches, load_tokenizer
from distil.evaluation.speed import measure_speed
from distil.export import hf_model_path
from distil.families import UnsupportedModelError, masked_lm_parts
from distil.modules.metrics import MaskedLMMetrics, Top1Agreement

log = logging.getLogger(__name__)

MODELS = ("teacher", "student")  # column order of the table and keys of the report
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")  # weight files of a Hugging Face model directory


def load_masked_lm(key: str, name_or_path: str) -> PreTrainedModel:
    """Float32 masked-LM model in eval mode; raises naming `key` when it cannot load or has no complete MLM head."""
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(name_or_path, dtype=torch.float32, output_loading_info=True)
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


@torch.inference_mode()
def masked_lm_scores(
    teacher: PreTrainedModel, student: PreTrainedModel, batches: Iterable[dict], device: torch.device
) -> dict:
    """Masked-LM metrics of both models on the same batches, and their top-1 agreement.

    Each batch holds `input_ids`, `attention_mask` and `labels` (-100 where a token is not masked). The vocabulary
    head runs only at masked positions. Returns {"teacher": {...}, "student": {...}} with mlm_loss (nats),
    mlm_acc and ppl, plus "top1_agreement" and "masked_tokens".
    """
    metrics = {name: MaskedLMMetrics().to(device) for name in MODELS}
    agreement = Top1Agreement().to(device)
    parts = {"teacher": masked_lm_parts(teacher), "student": masked_lm_parts(student)}
    for batch in batches:
        input_ids, attention_mask, labels = (batch[k].to(device) for k in ("input_ids", "attention_mask", "labels"))
        masked = labels != -100
        logits = {}
        for name, model_parts in parts.items():
            hidden = model_parts.encode(input_ids, attention_mask)
            logits[name] = model_parts.vocab_head(hidden[masked])
            metrics[name].update(logits[name], labels[masked])
        agreement.update(logits["student"], logits["teacher"])
    if int(metrics["teacher"].count) == 0:
        raise ValueError("the held-out data has no masked tokens (labels are all -100): nothing to score")
    scores = {name: {k: float(v) for k, v in metrics[name].compute().items()} for name in MODELS}
    scores["top1_agreement"] = float(agreement.compute())
    scores["masked_tokens"] = int(metrics["teacher"].count)
    return scores


def timed_forward(model: PreTrainedModel, with_mlm_head: bool):
    """What is timed: the encoder alone (what a downstream task runs), or the full masked-LM forward."""
    if with_mlm_head:
        return lambda input_ids, attention_mask: model(input_ids=input_ids, attention_mask=attention_mask).logits
    return masked_lm_parts(model).encode


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


def pick_device(name: str) -> torch.device:
    """ "auto" -> cuda when present, else cpu; "cpu" and "cuda" as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device={name!r} is not allowed: use auto, cpu or cuda")
    return torch.device(name)


def held_out_batches(data_cfg: DictConfig, max_batches: int | None) -> Iterable[dict]:
    """The validation batches of the data module that `data_cfg` instantiates (the first `max_batches`)."""
    datamodule = instantiate(data_cfg)
    datamodule.prepare_data()
    datamodule.setup("validate")
    batches = datamodule.val_dataloader()
    return batches if max_batches is None else itertools.islice(batches, max_batches)


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

    for model in models.values():
        model.to(scoring_device)
    scores = masked_lm_scores(
        models["teacher"], models["student"], held_out_batches(cfg.data, cfg.max_batches), scoring_device
    )
    report = {}
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
    report["top1_agreement"] = scores["top1_agreement"]
    report["masked_tokens"] = scores["masked_tokens"]
    report["settings"] = {"speed": OmegaConf.to_container(cfg.speed), "cpu_threads": torch.get_num_threads()}
    return report


@hydra.main(version_base="1.3", config_path="../../conf", config_name="evaluate")
def main(cfg: DictConfig) -> dict:
    report = evaluate(cfg)
    path = Path(cfg.report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(format_comparison(report_rows(report), ("", "teacher", "student", "student/teacher")))
    print(f"{report['masked_tokens']} masked tokens scored; report: {path}")
    return report


if __name__ == "__main__":
    main()
