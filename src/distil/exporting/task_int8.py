"""INT8 variants of a fine-tuned model (`distil.finetune ... save_model=true int8=true`), gated on its dev metric.

The fine-tuned model is exported to `model.onnx` (its task outputs, e.g. `logits`; inputs `input_ids`,
`attention_mask` and `token_type_ids` where the model takes them and the tokenizer returns them, `onnx_model`)
beside its Hugging Face files, and quantized with the functions of `int8_files` (`onnx_dynamic`, `onnx_static`
calibrated on the first `calibration_rows` training features of the task, `torch_dynamic` in memory). The float
PyTorch model and every variant are scored on the dev features with the task's own `score`, the code that scores
fine-tuning; the gate compares the task's main metric (its first). Every task kind goes through the same code (its
`outputs`, e.g. QA's start and end logits, are the ONNX outputs); the tests cover sequence classification.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedModel

from distil.exporting.int8_files import (
    VARIANT_FILES,
    limit_rows,
    state_dict_bytes,
    torch_dynamic_int8,
    write_onnx_int8_files,
)
from distil.exporting.int8_gate import FLOAT, check_int8_settings, write_gate_report
from distil.exporting.onnx_model import (
    ONNX_FILE,
    cpu_session,
    export_onnx,
    onnx_feed,
    onnx_file_bytes,
    session_input_names,
)
from distil.tasks.batches import Collator, model_inputs, per_feature
from distil.tasks.task import Encoded, Task

Outputs = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]  # a padded batch -> the task's outputs


@dataclass(frozen=True)
class TaskInt8Settings:
    """What `distil.finetune ... int8=true` quantizes and how it is gated (its `quantization` keys).

    Args:
        variants: names among `distil.exporting.int8_files.VARIANTS`.
        max_drop_points: largest allowed drop of the task's main dev metric, in points (metric x 100).
        calibration_rows: training features whose activations calibrate `onnx_static`.
        onnx_opset: ONNX opset of `model.onnx`.
    """

    variants: Sequence[str]
    max_drop_points: float
    calibration_rows: int
    onnx_opset: int

    def __post_init__(self) -> None:
        check_int8_settings(self.variants, self.max_drop_points, self.calibration_rows)


def torch_outputs(model: torch.nn.Module, names: Sequence[str]) -> Outputs:
    """The outputs `names` of a PyTorch model (on the CPU) for a batch."""
    accepted = set(inspect.signature(model.forward).parameters)

    def run(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            output = model(**model_inputs(batch, accepted))
        return {name: getattr(output, name) for name in names}

    return run


def onnx_outputs(path: Path, names: Sequence[str]) -> Outputs:
    """The outputs `names` of the ONNX file at `path` (run by ONNX Runtime on the CPU) for a batch."""
    session = cpu_session(path)
    inputs = session_input_names(session)

    def run(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        values = session.run(list(names), onnx_feed(inputs, batch))
        return {name: torch.from_numpy(value) for name, value in zip(names, values)}

    return run


def dev_scores(run: Outputs, task: Task, dev: Encoded, batches: DataLoader) -> dict[str, float]:
    """The task's metrics (`task.score`) of the outputs `run` gives on the dev `batches`."""
    outputs: dict[str, list[torch.Tensor]] = {}
    for batch in batches:
        rows = per_feature(SimpleNamespace(**run(batch)), task.outputs, task.per_token, batch["attention_mask"])
        for name, values in rows.items():
            outputs.setdefault(name, []).extend(values)
    return task.score(dev, outputs)


def write_task_int8(
    model: PreTrainedModel,
    task: Task,
    dev: Encoded,
    train_features: list[dict],
    collate: Collator,
    batch_size: int,
    directory: Path,
    settings: TaskInt8Settings,
) -> dict:
    """Write `directory/model.onnx` of the fine-tuned `model` and its ONNX INT8 variants, score the float model and
    every variant on `dev` with the task's metrics, and write `directory/quantization.json` (as
    `int8_gate.write_gate_report`); returns its content. Does not apply the gate (`check_gate`)."""
    model = model.float().cpu().eval()
    dev_batches = DataLoader(dev.features, batch_size=batch_size, collate_fn=collate)
    export_onnx(model, next(iter(dev_batches)), directory / ONNX_FILE, settings.onnx_opset, outputs=task.outputs)
    train_batches = DataLoader(train_features, batch_size=batch_size, collate_fn=collate)
    write_onnx_int8_files(directory, settings.variants, limit_rows(train_batches, settings.calibration_rows))
    runs = {FLOAT: torch_outputs(model, task.outputs)}
    sizes = {}
    for variant in settings.variants:
        file = VARIANT_FILES[variant]
        if file is None:
            quantized = torch_dynamic_int8(model)
            runs[variant], sizes[variant] = torch_outputs(quantized, task.outputs), state_dict_bytes(quantized)
        else:
            runs[variant] = onnx_outputs(directory / file, task.outputs)
            sizes[variant] = onnx_file_bytes(directory / file)
    scores = {name: dev_scores(run, task, dev, dev_batches) for name, run in runs.items()}
    metric = task.metrics[0]
    report = {
        "metric": metric,
        "metric_label": f"task {task.name}'s dev {metric}",
        "column": f"dev {metric} (x100)",
        "scored_on": f"{len(dev.features)} dev features of task {task.name}",
        "dev_features": len(dev.features),
        "calibration_rows": settings.calibration_rows if "onnx_static" in settings.variants else None,
    }
    return write_gate_report(report, directory, scores, sizes, settings.variants, settings.max_drop_points)
