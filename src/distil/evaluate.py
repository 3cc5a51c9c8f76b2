"""`python -m distil.evaluate student_model=PATH teacher_model=PATH data=NAME`: the DistilBERT claims on your run.

For the teacher and the student it reports parameters and weights on disk, held-out accuracy, loss and perplexity
on the validation split of `data` (both models score the very same batches), top-1 agreement between them, and
inference latency (batch 1) and throughput (batch 32) on the CPU and, when present, the GPU, with the student's
numbers as a percentage of the teacher's and the speed-ups (`distil.evaluation.report`). The result goes to
`report.json` and is printed as a table.

The models' family decides what is scored (`distil.evaluation.scoring`): masked LMs are scored at the masked tokens
of masked batches (the masks are identical for both), causal LMs on every next token of causal batches (the data
module is built with `causal=` from the teacher's family). For causal LMs the report also holds both models' greedy
continuations of the `continuations.prompts`, printed under the table. Teacher and student must be of one kind.

When the student folder is an `int8=true` export of `distil.export` (it holds `quantization.json`), the float
`model.onnx` and every INT8 variant are scored on the same batches (accuracy, top-1 agreement with the PyTorch
student) and timed on the CPU, and a second table puts their size on disk, accuracy, latency and throughput beside
the float teacher and student (`report["exported"]`).

The student may be a Hugging Face directory or a `distil.train` checkpoint (`.ckpt`), which is exported first.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from distil.data.tokenization import check_tokenizer_matches, load_tokenizer
from distil.evaluation.models import language_model_family, load_language_model, shared_kind
from distil.evaluation.report import (
    MODELS,
    build_report,
    check_continuations,
    exported_header,
    exported_rows,
    format_continuations,
    greedy_continuations,
    report_rows,
)
from distil.evaluation.scoring import held_out_batches, held_out_scores, scored_logits
from distil.evaluation.tables import format_comparison
from distil.exporting.checkpoint_export import hf_model_path
from distil.exporting.lm_int8 import exported_models
from distil.modules.metrics import PREDICTIONS, prediction_of
from distil.run.devices import present_devices, resolve_device
from distil.run.quiet import quiet_third_party_output


def evaluate(cfg: DictConfig) -> dict:
    """The report of `cfg` (see the module docstring): loads, scores and times both models; writes nothing."""
    paths = {
        name: hf_model_path(f"{name}_model", str(cfg[f"{name}_model"]), Path(cfg.report).parent / "exported")
        for name in MODELS
    }
    speed_on = present_devices(list(cfg.speed.devices), "speed.devices")
    scoring_device = resolve_device(cfg.device, "device")
    causal = shared_kind({name: language_model_family(f"{name}_model", paths[name]) for name in MODELS}, paths)
    if causal:
        check_continuations(cfg.continuations.prompts, cfg.continuations.max_new_tokens)
    # refuses a folder without tokenizer files, or without the special tokens of the models' kind, before any weights
    tokenizer = load_tokenizer(cfg.data.tokenizer, causal=causal)
    models = {name: load_language_model(f"{name}_model", paths[name]) for name in MODELS}
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
    scorers = {name: scored_logits(model) for name, model in models.items()}
    scorers.update({name: model.scored_logits for name, model in exported.items()})
    agreement = {"student": "teacher", **{name: "student" for name in exported}}
    prediction = prediction_of(causal)
    batches = held_out_batches(instantiate(cfg.data, causal=causal), cfg.max_batches)
    scores = held_out_scores(scorers, batches, scoring_device, agreement, prediction)
    continuations = None
    if causal:
        prompts, max_new_tokens = cfg.continuations.prompts, cfg.continuations.max_new_tokens
        continuations = greedy_continuations(models, tokenizer, prompts, max_new_tokens, scoring_device)
    return build_report(models, paths, scores, exported, cfg.speed, speed_on, prediction, continuations)


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
    if "continuations" in report:
        print(format_continuations(report))
    prediction = PREDICTIONS[report["prediction"]]
    print(f"{report[prediction.count_key]} {prediction.tokens} scored; report: {path}")
    return report


if __name__ == "__main__":
    main()
