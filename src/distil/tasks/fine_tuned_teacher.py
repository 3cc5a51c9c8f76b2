"""The fine-tuned teacher of task distillation, whose soft targets the student learns (`distil.tasks.module`).

The teacher is loaded with the task's head, checked (its task, head, vocabulary and width), frozen and in eval mode;
it runs once over the training features (`teacher_cache`), so it is never part of the trained module and never saved
with the student.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel

from distil.data.tokenization import read_tokenizer, vocabulary_fingerprint
from distil.modules.objective import ObjectiveWeights
from distil.run.output_dirs import MARKER_FILE, output_marker
from distil.tasks.batches import HIDDEN, TEACHER_PREFIX
from distil.tasks.task import Task
from distil.tasks.teacher_cache import fingerprint, run_teacher, teacher_outputs


def check_fine_tuned_on(path: str, task: Task) -> None:
    """Raise when the folder `path` (`distill_from`) records, in the marker `distil.finetune` writes beside a saved
    model, that it was fine-tuned on another task (its head would score other classes). A folder without that record
    (e.g. a hub model) is checked by `load_fine_tuned_teacher` only."""
    recorded = output_marker(Path(path)).get("task")
    if recorded is not None and recorded != task.name:
        raise ValueError(
            f"distill_from={path!r} was fine-tuned on task {recorded} (its {MARKER_FILE} says so), not {task.name}: "
            f"give a model fine-tuned on {task.name}"
        )


def load_fine_tuned_teacher(
    path: str, task: Task, student_tokenizer, student_hidden_size: int, weights: ObjectiveWeights
) -> PreTrainedModel:
    """The teacher at `path` (`distill_from`) with its fine-tuned task head, frozen, in eval mode.

    Raises before any training when its weights lack the task head (a folder not fine-tuned on this kind of task
    would get a random head), when its head's outputs differ from the task's, when its tokenizer maps tokens to other
    ids than the student's (its outputs would be for other tokens), or when the hidden-state loss is on and the
    widths differ.
    """
    try:
        teacher, info = task.model_class.from_pretrained(path, dtype=torch.float32, output_loading_info=True)
        tokenizer = read_tokenizer(path, "distill_from")
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"distill_from={path!r} could not be loaded: {error}") from error
    if info["missing_keys"]:
        raise ValueError(
            f"distill_from={path!r} has no fine-tuned {task.model_class.__name__} head (missing "
            f"{sorted(info['missing_keys'])[:4]}): give a model fine-tuned on task {task.name}, e.g. the "
            "model/ folder of a `distil.finetune ... save_model=true` run"
        )
    expected = task.head_config().get("num_labels", teacher.config.num_labels)
    if teacher.config.num_labels != expected:
        raise ValueError(
            f"distill_from={path!r} has a head of {teacher.config.num_labels} outputs; task {task.name} has {expected}"
        )
    if vocabulary_fingerprint(tokenizer) != vocabulary_fingerprint(student_tokenizer):
        raise ValueError(
            f"distill_from={path!r} has a tokenizer with another vocabulary than the student's ({len(tokenizer)} vs "
            f"{len(student_tokenizer)} tokens): its outputs would be for other tokens; use a teacher of the same "
            "vocabulary"
        )
    if weights.alpha_cos > 0 and teacher.config.hidden_size != student_hidden_size:
        raise ValueError(
            f"task_distillation.alpha_cos={weights.alpha_cos} needs equal widths, but distill_from={path!r} "
            f"has hidden size {teacher.config.hidden_size} and the student {student_hidden_size}: set alpha_cos=0"
        )
    return teacher.eval().requires_grad_(False)


def attach_teacher_outputs(
    path: str,
    task: Task,
    tokenizer,
    student_hidden_size: int,
    weights: ObjectiveWeights,
    features: list[dict],
    collate,
    batch_size: int,
    cache_dir: str | None,
    epochs: int,
) -> dict:
    """Put the outputs of the teacher at `path` on each training feature (`teacher_<name>`), from the cache or
    computed once (`teacher_cache`); returns the cache report with the teacher's path."""
    teacher = load_fine_tuned_teacher(path, task, tokenizer, student_hidden_size, weights)
    names = task.outputs + ((HIDDEN,) if weights.alpha_cos > 0 else ())
    fields = fingerprint(teacher, tokenizer, task.max_length, task.data_identity("train"), features, names)

    def compute() -> dict[str, list[torch.Tensor]]:
        outputs = run_teacher(teacher, features, collate, batch_size, names, task.per_token)
        non_finite = [name for name, values in outputs.items() if not all(torch.isfinite(v).all() for v in values)]
        if non_finite:
            raise ValueError(
                f"distill_from={path!r} gives NaN or inf {non_finite} on the training features: its soft targets "
                "cannot teach; check its weights"
            )
        return outputs

    outputs, report = teacher_outputs(features, fields, compute, cache_dir, task.name, epochs)
    for index, feature in enumerate(features):
        for name in names:
            feature[TEACHER_PREFIX + name] = outputs[name][index]
    return {"path": path, **report}
