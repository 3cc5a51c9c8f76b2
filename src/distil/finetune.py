"""`python -m distil.finetune task=NAME model=PATH [distill_from=TEACHER] [save_model=true [int8=true]]`: fine-tune
on a task, alone or distilled from a teacher fine-tuned on it (`distil.tasks.finetuning`), and print the task's
official dev metrics."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from distil.evaluation.tables import format_comparison
from distil.run.quiet import quiet_third_party_output
from distil.tasks.finetuning import finetune_and_report
from distil.tasks.score_table import score_rows


@hydra.main(version_base="1.3", config_path="../../conf", config_name="finetune")
def main(cfg: DictConfig) -> dict:
    quiet_third_party_output()
    report, path = finetune_and_report(cfg)
    name = "student distilled" if report["distillation"] else "model"
    print(f"{report['task']}: {report['train_examples']} train, {report['dev_examples']} dev examples")
    print(format_comparison(score_rows(report["metrics"], {name: [report]}), ("", name)))
    print(f"report: {path}")
    return report


if __name__ == "__main__":
    main()
