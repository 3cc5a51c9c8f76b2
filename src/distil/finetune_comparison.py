"""`python -m distil.finetune_comparison task=NAME teacher_model=PATH student_model=PATH [seeds=[1,2,3]]`.

DistilBERT's downstream comparison in one command. For each seed, three `distil.finetune` runs with the same
settings: the teacher fine-tuned on the task (and saved), the student fine-tuned alone, and the student distilled
from that fine-tuned teacher (`distill_from`: gold labels plus the teacher's soft targets). With
`teacher_per_seed=false` the teacher is fine-tuned once, with the first seed, and every seed's student is distilled
from it (a third of the cost when the teacher is the expensive model); `finetuned_teacher=RUN_DIR` reuses the teacher
of an earlier `distil.finetune ... save_model=true` run on the task (its `finetune.json` and `model/`) instead of
fine-tuning one. The table gives each
dev metric of the three as mean ± sample standard deviation over the seeds, and the two students as a percentage of
the teacher. Everything goes under the run directory: `seed<N>/<run>/` (each run's `finetune.json`, `log/`, the
teacher's `model/`) and `comparison.json` (every run's report, the means and standard deviations).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from distil.evaluation.tables import format_comparison
from distil.run.quiet import quiet_third_party_output
from distil.tasks.finetuning import MODEL_DIR, REPORT_FILE, finetune_and_report
from distil.tasks.score_table import mean_and_std, run_values, score_rows

log = logging.getLogger(__name__)

RUNS = ("teacher", "student", "distilled")  # the three fine-tuning runs of every seed, in this order
HEADER = ("", "teacher", "student", "student distilled", "student/teacher", "distilled/teacher")


def run_config(cfg: DictConfig, seed: int, run: str, teacher_dir: Path) -> DictConfig:
    """The `distil.finetune` config of one run: the shared settings with this run's seed, model and teacher."""
    settings = {
        "teacher": {"model": cfg.teacher_model, "distill_from": None, "save_model": True},
        "student": {"model": cfg.student_model, "distill_from": None, "save_model": False},
        "distilled": {"model": cfg.student_model, "distill_from": str(teacher_dir / MODEL_DIR), "save_model": False},
    }[run]
    run_cfg = OmegaConf.merge(cfg, {"seed": seed, **settings})
    run_cfg.out_dir = str(Path(cfg.out_dir) / f"seed{seed}" / run)
    return run_cfg


def earlier_teacher(run_dir: str, task: str) -> dict:
    """The report of an earlier teacher fine-tuning at `run_dir`; raises unless it is a saved model of `task`."""
    report_file, model_dir = Path(run_dir) / REPORT_FILE, Path(run_dir) / MODEL_DIR
    if not report_file.is_file() or not (model_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"finetuned_teacher={run_dir!r} lacks finetune.json or {MODEL_DIR}/config.json: give the run folder of "
            "`python -m distil.finetune model=TEACHER save_model=true` on this task"
        )
    report = json.loads(report_file.read_text())
    if report["task"] != task:
        raise ValueError(f"finetuned_teacher={run_dir!r} was fine-tuned on task {report['task']}, not {task}")
    return report


def compare(cfg: DictConfig, out_dir: Path) -> dict:
    """Run the three fine-tunings of every seed (module docstring); return the comparison report."""
    seeds = list(cfg.seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds} must be one or more different integers")
    reports: dict[str, list[dict]] = {run: [] for run in RUNS}
    if cfg.finetuned_teacher:
        reports["teacher"].append(earlier_teacher(cfg.finetuned_teacher, cfg.task.name))
    for seed in seeds:
        teacher_seed = seed if cfg.teacher_per_seed and not cfg.finetuned_teacher else seeds[0]
        teacher_dir = Path(cfg.finetuned_teacher or out_dir / f"seed{teacher_seed}" / "teacher")
        fine_tune_teacher = seed == teacher_seed and not cfg.finetuned_teacher
        for run in RUNS if fine_tune_teacher else RUNS[1:]:
            log.info("seed %d: fine-tuning the %s", seed, run)
            reports[run].append(finetune_and_report(run_config(cfg, seed, run, teacher_dir))[0])
    first = reports["student"][0]
    summary = {
        run: {key: dict(zip(("mean", "std"), mean_and_std(values))) for key, values in run_values(runs).items()}
        for run, runs in reports.items()
    }
    return {
        "task": first["task"],
        "metrics": first["metrics"],
        "train_examples": first["train_examples"],
        "dev_examples": first["dev_examples"],
        "seeds": seeds,
        "summary": summary,
        "teacher_cache": [run["distillation"]["teacher"] for run in reports["distilled"]],
        "runs": reports,
    }


@hydra.main(version_base="1.3", config_path="../../conf", config_name="finetune_comparison")
def main(cfg: DictConfig) -> dict:
    quiet_third_party_output()
    out_dir = Path(cfg.out_dir)
    report = compare(cfg, out_dir)
    path = out_dir / "comparison.json"
    path.write_text(json.dumps(report, indent=2))
    columns = dict(zip(HEADER[1:4], report["runs"].values()))
    print(
        f"{report['task']}: {report['train_examples']} train, {report['dev_examples']} dev examples, "
        f"seeds {report['seeds']} (mean ± std)"
    )
    print(format_comparison(score_rows(report["metrics"], columns, reference="teacher"), HEADER))
    print(f"report: {path}")
    return report


if __name__ == "__main__":
    main()
