"""Fine-tuning a model on a task, alone or distilled from a teacher fine-tuned on it: what `distil.finetune` and
`distil.finetune_comparison` run.

The model (an exported student or any encoder directory or hub id; a `distil.train` `.ckpt` is exported first) gets
the task's head (`conf/task/*.yaml`: sequence classification or regression, token classification, extractive QA) and
is trained end to end on the task's training split; the reported numbers are the task's official metrics on the dev
split after the last epoch (no model selection on dev). With a teacher (`distill_from`, a model already fine-tuned on
the task, e.g. the `model/` folder of an earlier run with `save_model=true`) the student learns the gold labels plus
the teacher's soft targets (`distil.tasks.fine_tuned_teacher`); the teacher's outputs are computed once and cached
(`distil.tasks.teacher_cache`). Everything that can be checked (task files and their labels, model folders, the
teacher's task, head and vocabulary, the output folder) is checked before the model is trained. The report goes to
`finetune.json` in the run directory, the training log to `log/metrics.csv`, and with `save_model=true` the model in
Hugging Face format (config, weights, tokenizer) to `model/`, with `int8=true` also as ONNX with its INT8 variants and
`quantization.json` (`distil.exporting.task_int8`): a failing variant's file is deleted, and the gate raises after
the model folder and `finetune.json` are written, so the float model stays usable.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from transformers import AutoConfig

from distil.data.tokenization import check_tokenizer_matches, read_tokenizer
from distil.evaluation.models import count_parameters
from distil.exporting.checkpoint_export import hf_model_path
from distil.exporting.hf_model import save_model_folder
from distil.exporting.int8_gate import check_gate, format_gate
from distil.exporting.onnx_model import check_onnx_installed
from distil.exporting.task_int8 import TaskInt8Settings, write_task_int8
from distil.families.size import check_model_size
from distil.modules.objective import ObjectiveWeights
from distil.run.output_dirs import check_replaceable, replace_output_dir
from distil.tasks.batches import Collator
from distil.tasks.fine_tuned_teacher import attach_teacher_outputs, check_fine_tuned_on
from distil.tasks.module import TaskModule
from distil.tasks.task import Task
from distil.value_checks import check_integer

log = logging.getLogger(__name__)

HYPERPARAMETERS = ("seed", "batch_size", "learning_rate", "weight_decay", "warmup_fraction")  # in the report
MODEL_DIR = "model"  # the folder of the run directory that save_model=true writes
LOG_DIR = "log"  # the folder of the run directory with the training log (metrics.csv)
REPORT_FILE = "finetune.json"  # the report in the run directory


def check_model_folder(key: str, path: str):
    """The model's config and tokenizer, read first (small and fast) so that a bad path, a folder without a tokenizer
    that fits its embeddings, or a config larger than this machine's memory, fails before any model is trained."""
    try:
        config = AutoConfig.from_pretrained(path)
        tokenizer = read_tokenizer(path, key)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"{key}={path!r} is not a loadable model: {error}") from error
    check_tokenizer_matches(tokenizer, path, key, config.vocab_size, "its model")
    check_model_size(config, f"{key}={path!r}")
    return config, tokenizer


def save_fine_tuned(model, tokenizer, target: Path, details: dict, int8=None) -> Path:
    """Write the fine-tuned model and its tokenizer to `target` whole (`distil.run.output_dirs`); `int8(directory)`,
    when given, writes more files into the folder before it takes its place."""

    def write(directory: Path) -> None:
        save_model_folder(model, tokenizer, directory, "float32")
        if int8 is not None:
            int8(directory)

    return replace_output_dir(target, "hf_model", write, key="save_model", details=details)


def finetune(cfg: DictConfig, out_dir: Path) -> dict:
    """Fine-tune `cfg.model` on `cfg.task` (distilled from `cfg.distill_from` when set); return the report."""
    check_integer("batch_size", cfg.batch_size, 1)
    check_integer("trainer.max_epochs", cfg.trainer.max_epochs, 1)
    for key in ("max_train_examples", "max_dev_examples"):
        check_integer(key, cfg[key], 1, optional=True)
    int8 = None
    if cfg.int8:
        if not cfg.save_model:
            raise ValueError("int8=true quantizes the saved model: add save_model=true")
        check_onnx_installed("int8=true")
        int8 = TaskInt8Settings(**cfg.quantization)  # checks the settings
    task: Task = instantiate(cfg.task)
    distillation: ObjectiveWeights | None = instantiate(cfg.task_distillation) if cfg.distill_from else None
    task.check_source()
    model_path = hf_model_path("model", str(cfg.model), out_dir / "exported")
    config, tokenizer = check_model_folder("model", model_path)
    teacher_path = None
    if distillation is not None:
        teacher_path = hf_model_path("distill_from", str(cfg.distill_from), out_dir / "exported")
        check_fine_tuned_on(teacher_path, task)
        check_model_folder("distill_from", teacher_path)
    if cfg.save_model:
        check_replaceable(out_dir / MODEL_DIR, "hf_model", False, "save_model")
    train = task.examples("train")[: cfg.max_train_examples]
    dev = task.examples("dev")[: cfg.max_dev_examples]
    train_set = task.encode(train, tokenizer, training=True)
    dev_set = task.encode(dev, tokenizer, training=False)
    log.info(
        "task %s: %d train examples (%d features), %d dev examples (%d features) from %s",
        task.describe(),
        len(train),
        len(train_set.features),
        len(dev),
        len(dev_set.features),
        task.source,
    )
    collate = Collator(tokenizer.pad_token_id, tokenizer.padding_side, task.per_token)
    teacher_report = None
    if distillation is not None:
        teacher_report = attach_teacher_outputs(
            teacher_path,
            task,
            tokenizer,
            config.hidden_size,
            distillation,
            train_set.features,
            collate,
            cfg.batch_size,
            cfg.teacher_cache_dir,
            cfg.trainer.max_epochs,
        )
    pl.seed_everything(cfg.seed, workers=True)
    try:
        model = task.model_class.from_pretrained(model_path, dtype=torch.float32, **task.head_config())
    except (OSError, ValueError) as error:
        raise FileNotFoundError(
            f"model={model_path!r} could not be loaded with task {task.name}'s head: {error}"
        ) from error
    loader = {"batch_size": cfg.batch_size, "collate_fn": collate, "num_workers": cfg.num_workers}
    train_loader = DataLoader(train_set.features, shuffle=True, **loader)
    dev_loader = DataLoader(dev_set.features, **loader)
    module = TaskModule(model, task, dev_set, cfg.learning_rate, cfg.weight_decay, cfg.warmup_fraction, distillation)
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        callbacks=[instantiate(cfg.nonfinite_guard)],
        logger=CSVLogger(out_dir, name=LOG_DIR, version=""),
        enable_checkpointing=False,
        default_root_dir=out_dir,
    )
    start = time.perf_counter()
    trainer.fit(module, train_loader, dev_loader)
    seconds = time.perf_counter() - start
    saved, quantization = None, []
    if cfg.save_model:
        details = {"fine_tuned_from": model_path, "task": task.name, "dev": module.dev_scores}

        def write_int8(directory: Path) -> None:
            features, batch_size = train_set.features, cfg.batch_size
            quantization.append(write_task_int8(model, task, dev_set, features, collate, batch_size, directory, int8))

        int8_writer = write_int8 if int8 is not None else None
        saved = str(save_fine_tuned(model.eval(), tokenizer, out_dir / MODEL_DIR, details, int8_writer))
    return {
        "task": task.name,
        "kind": type(task).__name__,
        "source": task.source,
        "train_examples": len(train),
        "train_features": len(train_set.features),
        "dev_examples": len(dev),
        "metrics": task.metrics,
        "model": {
            "path": model_path,
            "parameters": count_parameters(model),
            "dev": module.dev_scores,
            "train_seconds": seconds,
            "saved": saved,
        },
        "int8": quantization[0] if quantization else None,
        "distillation": None if distillation is None else {**asdict(distillation), "teacher": teacher_report},
        "settings": {key: cfg[key] for key in HYPERPARAMETERS}
        | {"max_length": task.max_length, "max_epochs": cfg.trainer.max_epochs},  # the length the task used
    }


def finetune_and_report(cfg: DictConfig) -> tuple[dict, Path]:
    """Fine-tune as `cfg` says and write the report to `<cfg.out_dir>/finetune.json`; returns it and its path. With
    `int8=true`, prints the INT8 gate's table and raises `QualityGateError` when a variant fails it."""
    out_dir = Path(cfg.out_dir)
    report = finetune(cfg, out_dir)
    path = out_dir / REPORT_FILE
    path.write_text(json.dumps(report, indent=2))
    if report["int8"] is not None:
        print(format_gate(report["int8"]))
        check_gate(report["int8"])
    return report, path
