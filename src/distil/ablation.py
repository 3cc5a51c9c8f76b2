"""`python -m distil.ablation`: the DistilBERT paper's ablation table (Sanh et al. 2019, table 4) from one command.

Every variant is one `distil.train` run with the same recipe, steps and data (`train_overrides`) plus its own
overrides (no KL term, no cosine term, no masked-LM term, random initialisation, ...). Each exported student is scored
by `distil.evaluate` on every `evaluate_data` (held-out accuracy of the masked or the next tokens, perplexity, top-1
agreement, share of the teacher) and fine-tuned by `distil.finetune` (`finetune_overrides`: the task and its subset;
null for none, as for causal LMs), the teacher once, the same way. The
commands are the ones a user would type; each writes its usual report into `out_dir/<variant>/`, and the table (in
`distil.evaluate`'s layout: one row per quantity, one column per model) is built from those reports, printed and
written to `out_dir/ablation.json`. With `teacher_cache`, every variant trains from that one cache of the teacher's
outputs (`distil.cache_teacher`) instead of running the teacher. A step whose report already exists is not run
again, so the same command continues an interrupted ablation (pass the same `hydra.run.dir`).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from distil.evaluation.tables import format_comparison, format_percent, percent
from distil.modules.metrics import PREDICTIONS

log = logging.getLogger(__name__)

Runner = Callable[[str, list[str], Path], None]  # (module, arguments, log file) -> None; raises when the command fails
TEACHER = "teacher"  # the column and folder of the teacher


def run_module(module: str, arguments: list[str], log_file: Path) -> None:
    """`python -m <module> <arguments>`, its output appended to `log_file` after a line naming the command (an earlier
    attempt's output, or that of a run still writing there, is kept); a failure names the command and the log."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", module, *arguments]
    log.info("%s >> %s", " ".join(command), log_file)
    with open(log_file, "a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {result.returncode}; see {log_file}")


def check_variants(variants: Mapping[str, Sequence[str]]) -> None:
    """Variant names are folder names other than the teacher's, each with a list of overrides."""
    if not variants:
        raise ValueError("variants is empty: give at least one name -> list of distil.train overrides")
    for name, overrides in variants.items():
        if name == TEACHER or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"variants.{name}: the name must be letters, digits, - or _ and not {TEACHER!r}")
        if isinstance(overrides, str) or not all(isinstance(o, str) for o in overrides):
            raise ValueError(f"variants.{name}={overrides!r}: give a list of overrides such as [distill.alpha_kl=0]")


def teacher_of_run(run_dir: Path) -> str:
    """The teacher a distil.train run distilled: `teacher.name_or_path` of the config Hydra saved, resolved (it is
    written unresolved, e.g. `${distil.local_or_hub:${paths.shared_dir}/...}`; the same environment resolves it the
    same way)."""
    config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    return str(OmegaConf.select(config, "teacher.name_or_path", throw_on_missing=True))


def run_ablation(cfg: DictConfig, out_dir: Path, run: Runner = run_module) -> dict:
    """Train, score and fine-tune every variant (steps with a report already present are skipped); the results."""
    variants = OmegaConf.to_container(cfg.variants)
    check_variants(variants)
    results: dict = {"variants": {}, "evaluate_data": list(cfg.evaluate_data)}
    teacher = None
    cache = [f"distill.teacher_cache={cfg.teacher_cache}"] if cfg.get("teacher_cache") else []  # one for all runs
    for name, overrides in variants.items():
        run_dir = out_dir / name
        if not (run_dir / "student" / "config.json").is_file():
            arguments = [*cfg.train_overrides, *cache, *overrides, f"hydra.run.dir={run_dir}"]
            run("distil.train", arguments, run_dir / "train.out")
        teacher = teacher or teacher_of_run(run_dir)
        scores = {}
        for data in cfg.evaluate_data:
            report = run_dir / f"evaluate_{data}" / "report.json"
            if not report.is_file():
                arguments = [f"student_model={run_dir / 'student'}", f"teacher_model={teacher}", f"data={data}"]
                arguments += [*cfg.evaluate_overrides, f"hydra.run.dir={report.parent}"]
                run("distil.evaluate", arguments, report.parent / "evaluate.out")
            scores[data] = json.loads(report.read_text())
        results["variants"][name] = {"overrides": list(overrides), "evaluate": scores, **finetuned(cfg, run, run_dir)}
    results[TEACHER] = finetuned(cfg, run, out_dir / TEACHER, teacher)
    return results


def finetuned(cfg: DictConfig, run: Runner, run_dir: Path, model: str | None = None) -> dict:
    """The `distil.finetune` report of the model (default: the run's student), fine-tuned when not done yet; nothing
    without `finetune_overrides`."""
    if cfg.finetune_overrides is None:
        return {}
    report = run_dir / "finetune" / "finetune.json"
    if not report.is_file():
        arguments = [f"model={model or run_dir / 'student'}", *cfg.finetune_overrides, f"hydra.run.dir={report.parent}"]
        run("distil.finetune", arguments, report.parent / "finetune.out")
    return {"finetune": json.loads(report.read_text())}


def ablation_rows(results: dict) -> tuple[list[str], list[tuple[str, ...]]]:
    """The header (quantity, teacher, variants) and rows of the table: per evaluated text the accuracy (of the masked
    or the next tokens, as the report says), the student's share of the teacher's, perplexity and top-1 agreement;
    then, when fine-tuned, the task's main dev metric and share."""
    variants = results["variants"]
    header = ["", TEACHER, *variants]
    rows = []
    for data in results["evaluate_data"]:
        reports = [variant["evaluate"][data] for variant in variants.values()]
        prediction = PREDICTIONS[reports[0]["prediction"]]
        accuracy, teacher_acc = prediction.accuracy, reports[0][TEACHER][prediction.accuracy]
        rows.append((f"{data}: {prediction.label} accuracy (%)", f"{100 * teacher_acc:.2f}"))
        rows[-1] += tuple(f"{100 * report['student'][accuracy]:.2f}" for report in reports)
        rows.append((f"{data}: student / teacher", ""))
        rows[-1] += tuple(format_percent(percent(report["student"][accuracy], teacher_acc)) for report in reports)
        rows.append((f"{data}: perplexity", f"{reports[0][TEACHER]['ppl']:.2f}"))
        rows[-1] += tuple(f"{report['student']['ppl']:.2f}" for report in reports)
        rows.append((f"{data}: top-1 agreement (%)", ""))
        rows[-1] += tuple(f"{100 * report['top1_agreement']:.2f}" for report in reports)
    if "finetune" not in results[TEACHER]:
        return header, rows
    task = results[TEACHER]["finetune"]
    metric = task["metrics"][0]  # the task's main dev metric (accuracy for SST-2)
    teacher_dev = task["model"]["dev"][metric]
    dev = [variant["finetune"]["model"]["dev"][metric] for variant in variants.values()]
    rows.append((f"{task['task']} dev {metric} (%)", f"{100 * teacher_dev:.2f}", *(f"{100 * d:.2f}" for d in dev)))
    rows.append((f"{task['task']}: student / teacher", "", *(format_percent(percent(d, teacher_dev)) for d in dev)))
    return header, rows


@hydra.main(version_base="1.3", config_path="../../conf", config_name="ablation")
def main(cfg: DictConfig) -> dict:
    out_dir = Path(cfg.out_dir)
    results = run_ablation(cfg, out_dir)
    path = out_dir / "ablation.json"
    path.write_text(json.dumps(results, indent=2))
    header, rows = ablation_rows(results)
    if "finetune" in results[TEACHER]:
        task = results[TEACHER]["finetune"]
        examples = f"fine-tuned on {task['train_examples']} train examples, scored on {task['dev_examples']} dev"
        print(f"{task['task']}: {examples}")
    print(format_comparison(rows, header))
    print(f"results: {path}")
    return results


if __name__ == "__main__":
    main()
