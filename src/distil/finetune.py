"""`python -m distil.finetune task=sst2 model=PATH [teacher_model=PATH]`: fine-tune on a GLUE task, report dev accuracy.

The model (an exported student or any masked-LM/encoder directory or hub id; a `distil.train` `.ckpt` is exported
first) gets a fresh sequence-classification head (`AutoModelForSequenceClassification`) and is trained end to end
on the task's train split; the reported number is the accuracy on the dev split after the last epoch (no model
selection on dev). With `teacher_model=PATH` the teacher is fine-tuned the same way (same seed, data order and
hyper-parameters) and the table shows the student's accuracy as a percentage of the teacher's, in the format of
`distil.evaluate`. Results go to `finetune.json` in the run directory.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from pathlib import Path

import hydra
import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PreTrainedModel,
    get_linear_schedule_with_warmup,
)

from distil.comparison_table import format_comparison, format_percent, percent
from distil.data.tokenization import check_tokenizer_matches
from distil.evaluate import count_parameters
from distil.evaluation.glue_tasks import Example, check_task_source, load_examples
from distil.export import hf_model_path
from distil.quiet import quiet_third_party_output

log = logging.getLogger(__name__)

HYPERPARAMETERS = ("seed", "max_length", "batch_size", "learning_rate", "weight_decay", "warmup_fraction")  # in report
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight")  # parameters kept out of weight decay (as in BERT)


class SequenceClassifier(pl.LightningModule):
    """A Hugging Face sequence-classification model trained with AdamW and linear warm-up/decay; logs dev accuracy.

    Args:
        model: an `AutoModelForSequenceClassification` model.
        num_labels: number of classes (for the accuracy metric).
        learning_rate: peak AdamW learning rate.
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        warmup_fraction: fraction of the optimizer steps spent warming the LR up from 0.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        num_labels: int,
        learning_rate: float,
        weight_decay: float,
        warmup_fraction: float,
    ) -> None:
        super().__init__()
        self.model = model.train()  # from_pretrained returns eval mode; dropout is part of fine-tuning
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.warmup_fraction = warmup_fraction
        self.dev_accuracy = MulticlassAccuracy(num_classes=num_labels, average="micro")

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        labels = batch.pop("labels")
        self.dev_accuracy.update(self.model(**batch).logits, labels)
        self.log("val/acc", self.dev_accuracy, on_epoch=True, prog_bar=True)

    def configure_optimizers(self):
        named = list(self.model.named_parameters())
        groups = [
            {"params": [p for n, p in named if not n.endswith(NO_DECAY)], "weight_decay": self.weight_decay},
            {"params": [p for n, p in named if n.endswith(NO_DECAY)], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=self.learning_rate)
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(self.warmup_fraction * total_steps), total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def encode(examples: list[Example], tokenizer, max_length: int, input_names: set[str]) -> list[dict]:
    """Tokenized examples (unpadded), each with only the inputs the model's forward accepts, plus `labels`."""
    columns = list(zip(*(e.texts for e in examples)))
    features = tokenizer(*columns, truncation=True, max_length=max_length)
    keys = [k for k in features if k in input_names]
    return [{**{k: features[k][i] for k in keys}, "labels": example.label} for i, example in enumerate(examples)]


def check_model_folder(key: str, path: str) -> None:
    """Read the model's config and tokenizer (small and fast) so that a bad path, or a folder without a tokenizer
    that fits its embeddings, fails before any model is trained."""
    try:
        config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"{key}={path!r} is not a loadable model: {error}") from error
    check_tokenizer_matches(tokenizer, path, key, config.vocab_size, "its model")


def finetune_model(
    name: str, key: str, path: str, train: list[Example], dev: list[Example], cfg: DictConfig, out_dir: Path
) -> dict:
    """Fine-tune the model at `path` (config key `key`) on `train`; return its dev accuracy, size, training time.

    Its training log goes to `out_dir/<name>/metrics.csv`.
    """
    pl.seed_everything(cfg.seed, workers=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=cfg.task.num_labels, dtype=torch.float32
        )
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"{key}={path!r} could not be loaded with its tokenizer: {error}") from error
    input_names = set(inspect.signature(model.forward).parameters)
    collate = DataCollatorWithPadding(tokenizer)
    loader = {"batch_size": cfg.batch_size, "collate_fn": collate, "num_workers": cfg.num_workers}
    train_loader = DataLoader(encode(train, tokenizer, cfg.max_length, input_names), shuffle=True, **loader)
    dev_loader = DataLoader(encode(dev, tokenizer, cfg.max_length, input_names), **loader)
    module = SequenceClassifier(model, cfg.task.num_labels, cfg.learning_rate, cfg.weight_decay, cfg.warmup_fraction)
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        logger=CSVLogger(out_dir, name=name, version=""),
        enable_checkpointing=False,
        default_root_dir=out_dir,
    )
    start = time.perf_counter()
    trainer.fit(module, train_loader, dev_loader)
    seconds = time.perf_counter() - start
    return {
        "path": path,
        "parameters": count_parameters(model),
        "dev_accuracy": float(trainer.callback_metrics["val/acc"]),
        "train_seconds": seconds,
    }


def comparison_rows(models: dict[str, dict]) -> list[tuple[str, ...]]:
    """Table rows (evaluate's format): dev accuracy, parameters, training time; ratio column when two models."""
    quantities = (
        ("dev accuracy (%)", "dev_accuracy", 100.0, ".2f"),
        ("parameters (M)", "parameters", 1e-6, ".2f"),
        ("fine-tuning time (s)", "train_seconds", 1.0, ".1f"),
    )
    rows = []
    for label, key, scale, fmt in quantities:
        cells = [format(entry[key] * scale, fmt) for entry in models.values()]
        if len(models) == 2:
            cells.append(format_percent(percent(models["student"][key], models["teacher"][key])))
        rows.append((label, *cells))
    return rows


def finetune(cfg: DictConfig, out_dir: Path) -> dict:
    """Fine-tune `cfg.model` (and `cfg.teacher_model` when set) on `cfg.task`; return the report (module docstring)."""
    task = cfg.task
    check_task_source(task.source, task.name)
    keys = {"teacher": "teacher_model", "student": "model"} if cfg.teacher_model else {"model": "model"}
    paths = {name: hf_model_path(key, str(cfg[key]), out_dir / "exported") for name, key in keys.items()}
    for name, path in paths.items():
        check_model_folder(keys[name], path)
    fields = {"text_fields": list(task.text_fields), "label_field": task.label_field}
    train = load_examples(task.source, task.name, "train", task.train_split, **fields)[: cfg.max_train_examples]
    dev = load_examples(task.source, task.name, "dev", task.dev_split, **fields)[: cfg.max_dev_examples]
    bad = sorted({e.label for e in train + dev} - set(range(task.num_labels)))
    if bad:
        raise ValueError(f"task {task.name} has labels {bad} outside 0..{task.num_labels - 1} (task.num_labels)")
    log.info("task %s: %d train, %d dev examples from %s", task.name, len(train), len(dev), task.source)
    results = {name: finetune_model(name, keys[name], paths[name], train, dev, cfg, out_dir) for name in paths}
    report = {
        "task": task.name,
        "source": task.source,
        "train_examples": len(train),
        "dev_examples": len(dev),
        "models": results,
        "settings": {key: cfg[key] for key in HYPERPARAMETERS} | {"max_epochs": cfg.trainer.max_epochs},
    }
    if cfg.teacher_model:
        report["student_pct_of_teacher"] = percent(
            results["student"]["dev_accuracy"], results["teacher"]["dev_accuracy"]
        )
    return report


@hydra.main(version_base="1.3", config_path="../../conf", config_name="finetune")
def main(cfg: DictConfig) -> dict:
    quiet_third_party_output()
    out_dir = Path(cfg.out_dir)
    report = finetune(cfg, out_dir)
    path = out_dir / "finetune.json"
    path.write_text(json.dumps(report, indent=2))
    models = report["models"]
    header = ("", *models, "student/teacher") if len(models) == 2 else ("", *models)
    print(f"{report['task']}: {report['train_examples']} train, {report['dev_examples']} dev examples")
    print(format_comparison(comparison_rows(models), header))
    print(f"report: {path}")
    return report


if __name__ == "__main__":
    main()
