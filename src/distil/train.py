"""`python -m distil.train`: distil a teacher into a student with the composed Hydra config, then export it.

compose (the run directory locked: `distil.run.run_dir_lock`) -> validate (no weights loaded yet) -> data, teacher,
student, module, trainer -> fit -> export student/.
The checkpoint to resume from is chosen and checked first (`distil.run.resume`: one run per folder), its student is
compared with the one the config builds before training, and the run's checkpoint folder is tidied just before fit.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from distil.evaluation.tables import format_comparison, format_percent, percent
from distil.exporting.hf_model import save_model_folder, stored_dtype
from distil.families import teacher_family
from distil.modules.cached_teacher import skeleton_teacher
from distil.modules.metrics import PREDICTIONS
from distil.modules.teacher import load_teacher_config
from distil.run.callbacks.run_config import RunConfigInCheckpoint
from distil.run.checkpoint_io import AtomicCheckpointIO, check_free_space
from distil.run.config_checks import (
    check_distill_config,
    check_sequence_length,
    check_student_config,
    check_teacher_cache,
    check_trainer_config,
    check_vocabulary,
)
from distil.run.extras import check_sweeper_installed
from distil.run.launch import pinned_job
from distil.run.output_dirs import replace_output_dir
from distil.run.quiet import quiet_third_party_output
from distil.run.resume import check_resumed_student, resolve_ckpt_path, run_checkpoint_dir, tidy_checkpoint_folder
from distil.run.wandb_run import finished_wandb_run, log_run_config

log = logging.getLogger(__name__)


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    return [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node is not None]


def build_plugins(cfg: DictConfig) -> list:
    """`trainer.plugins` of the config, plus the atomic, weights-only checkpoint IO (always)."""
    return [*(instantiate(node) for node in cfg.trainer.get("plugins") or []), AtomicCheckpointIO()]


def build_loggers(cfg: DictConfig) -> list:
    return [instantiate(node) for node in (cfg.get("logger") or {}).values() if node is not None]


def export_student(student, tokenizer, out_dir: Path, dtype: str) -> None:
    """Write the student in Hugging Face format (config, weights in `dtype`, tokenizer) to the run's own `student/`
    folder, whole, replacing an earlier export (`distil.run.output_dirs`)."""

    def write(directory: Path) -> None:
        save_model_folder(student, tokenizer, directory, dtype)

    replace_output_dir(out_dir, "hf_model", write, overwrite=True, key="paths.output_dir/student")
    log.info("student written in %s, the dtype its teacher is stored in", dtype)


def train(cfg: DictConfig) -> float | None:
    """Run one distillation; returns the value of `cfg.optimized_metric` (for sweepers), when it was logged."""
    check_distill_config(cfg)
    check_trainer_config(cfg)
    checkpoint_dir = run_checkpoint_dir(cfg)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.get("resume"), checkpoint_dir)
    callbacks = [*build_callbacks(cfg), RunConfigInCheckpoint(OmegaConf.to_container(cfg, resolve=True))]
    teacher_config = load_teacher_config(cfg.teacher.name_or_path, cfg.teacher.trust_remote_code)
    check_student_config(cfg, teacher_config)
    check_sequence_length(cfg.data.max_length, teacher_config)
    check_teacher_cache(cfg)
    cache = {"teacher_cache": cfg.distill.teacher_cache} if cfg.distill.get("teacher_cache") else {}

    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data, causal=teacher_family(teacher_config).causal, **cache)
    check_vocabulary(
        teacher_config,
        cfg.teacher.name_or_path,
        datamodule.tokenizer,
        cfg.data.tokenizer,
        cfg.student.get("name_or_path"),
    )

    pretrained = cfg.student.get("name_or_path")  # from a cache with a given student: the teacher's weights unread
    teacher = skeleton_teacher(teacher_config) if cache and pretrained else instantiate(cfg.teacher)
    student = instantiate(cfg.student)(teacher=teacher)
    log.info("%s", describe_models(teacher, student, cfg.student.get("name_or_path")))
    check_resumed_student(ckpt_path, student.config.to_dict(), OmegaConf.to_container(cfg.student, resolve=True))
    module = instantiate(cfg.distill)(teacher=teacher, student=student)
    del teacher  # with a teacher cache the module has dropped it: it is freed now
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=build_loggers(cfg), plugins=build_plugins(cfg)
    )
    log_run_config(trainer.loggers, cfg)

    check_free_space(checkpoint_dir, checkpoint_bytes(module), checkpoints_kept(cfg))
    tidy_checkpoint_folder(checkpoint_dir, ckpt_path)
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    student_dir = Path(cfg.paths.output_dir) / "student"
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if trainer.is_global_zero:
        export_student(module.student, datamodule.tokenizer, student_dir, stored_dtype(teacher_config))
        print(run_summary(metrics, trainer.global_step, time.perf_counter() - started, student_dir))
    return metrics.get(cfg.get("optimized_metric")) if cfg.get("optimized_metric") else None


def checkpoint_bytes(module: pl.LightningModule) -> int:
    """Bytes of one checkpoint of the run: three float32 numbers per trainable parameter (the weight and AdamW's two
    moments; the frozen teacher is never saved)."""
    return 3 * 4 * sum(p.numel() for p in module.parameters() if p.requires_grad)


def checkpoints_kept(cfg: DictConfig) -> int:
    """Periodic checkpoints the run keeps on disk (`save_top_k`; -1 keeps one per `every_n_train_steps`)."""
    model_checkpoint = (cfg.get("callbacks") or {}).get("model_checkpoint") or {}
    kept = model_checkpoint.get("save_top_k", 1)
    every = model_checkpoint.get("every_n_train_steps") or cfg.trainer.max_steps
    return kept if kept >= 0 else cfg.trainer.max_steps // every


def describe_models(teacher, student, pretrained: str | None = None) -> str:
    """One line: the teacher and the student, their parameters and shapes, and the teacher layers the student starts
    from."""
    millions = [sum(p.numel() for p in model.parameters()) / 1e6 for model in (teacher, student)]
    layers = student.config.distil_layer_map
    start = f"pretrained {pretrained}" if pretrained else f"from teacher layers {layers}" if layers else "random init"
    shapes = [f"{m.config.num_hidden_layers} layers x {m.config.hidden_size}" for m in (teacher, student)]
    return (
        f"teacher {type(teacher).__name__} ({millions[0]:.1f}M parameters, {shapes[0]}, frozen) -> student "
        f"{type(student).__name__} ({millions[1]:.1f}M, {shapes[1]}, {start})"
    )


def run_summary(metrics: dict[str, float], steps: int, seconds: float, student_dir: Path) -> str:
    """The end-of-run table: teacher and student on the last validation, and where the student is."""
    minutes, rest = divmod(round(seconds), 60)
    footer = f"{steps} steps in {minutes} min {rest:02d} s; student written to {student_dir}"
    prediction = next((p for p in PREDICTIONS.values() if f"val/student_{p.accuracy}" in metrics), None)
    if prediction is None:
        return footer
    accuracy = prediction.accuracy
    scored = ((f"held-out {prediction.label} accuracy (%)", accuracy, 100), ("perplexity", "ppl", 1))
    if f"val/teacher_{accuracy}" not in metrics:  # trained from a teacher cache: no teacher was scored
        rows = [(label, f"{metrics[f'val/student_{key}'] * scale:.2f}") for label, key, scale in scored]
        return format_comparison(rows, ("", "student")) + "\n" + footer
    rows = [
        (label, f"{metrics[f'val/teacher_{key}'] * scale:.2f}", f"{metrics[f'val/student_{key}'] * scale:.2f}")
        for label, key, scale in scored
    ]
    share = percent(metrics[f"val/student_{accuracy}"], metrics[f"val/teacher_{accuracy}"])
    rows[0] += (format_percent(share),)
    rows[1] += ("",)
    rows.append(("top-1 agreement with the teacher (%)", "", f"{100 * metrics['val/top1_agreement']:.2f}", ""))
    return format_comparison(rows, ("", "teacher", "student", "student/teacher")) + "\n" + footer


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    quiet_third_party_output()
    log.info("run directory: %s", HydraConfig.get().runtime.output_dir)
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
    with finished_wandb_run(), pinned_job():
        return train(cfg)


if __name__ == "__main__":
    check_sweeper_installed(sys.argv[1:])
    main()
