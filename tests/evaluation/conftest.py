"""Fixtures of the evaluate / finetune / export / notebook tests: tiny models, checkpoints, TSV tasks, a tiny run.

Everything is built from the tiny WordPiece vocabulary of tests/tiny_assets.py, so no test needs ../shared or the
hub (tests marked `shared` use ../shared and skip without it).
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM, BertForMaskedLM

from distil.modules.student import build_student
from tests.conftest import run_cli, tiny_config, tiny_data_overrides, tiny_run_overrides
from tests.tiny_assets import VOCAB_SIZE, tiny_tokenizer

FILLER = ["the", "a", "of", "and", "to", "in", "is", "was", "he", "she", "it", "they", "with"]
POSITIVE = ["loved great", "great light", "loved the queen"]  # every positive sentence holds one of these
NEGATIVE = ["feared dark", "dark night", "feared the sea"]  # every negative sentence holds one of these


def fresh_bert(num_layers: int = 2, seed: int = 0) -> BertForMaskedLM:
    """A randomly initialised tiny BERT with the library's default initialisation (fine-tunes reliably)."""
    torch.manual_seed(seed)
    return BertForMaskedLM(tiny_config("bert", num_layers, VOCAB_SIZE)).eval()


def save_with_tokenizer(model, directory: Path) -> Path:
    model.save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def fresh_teacher_dir(tmp_path_factory) -> Path:
    """A 2-layer BERT masked-LM with the tiny tokenizer, on disk."""
    return save_with_tokenizer(fresh_bert(), tmp_path_factory.mktemp("fresh_teacher"))


@pytest.fixture(scope="session")
def fresh_student_dir(tmp_path_factory, fresh_teacher_dir) -> Path:
    """A 1-layer DistilBERT student built from `fresh_teacher_dir`, with the tokenizer, on disk."""
    teacher = AutoModelForMaskedLM.from_pretrained(fresh_teacher_dir)
    return save_with_tokenizer(build_student(teacher, num_layers=1), tmp_path_factory.mktemp("fresh_student"))


def checkpoint_like_training(student, teacher_dir: Path) -> dict:
    """A checkpoint dict with the layout distil.train writes (student weights under `student.`, configs)."""
    return {
        "state_dict": {f"student.{name}": tensor for name, tensor in student.state_dict().items()},
        "student_config": student.config.to_dict(),
        "run_config": {"teacher": {"name_or_path": str(teacher_dir)}, "seed": 42},
    }


@pytest.fixture(scope="session")
def student_checkpoint(tmp_path_factory, fresh_teacher_dir) -> tuple[Path, torch.nn.Module]:
    """(path of a .ckpt in distil.train's layout, the student it holds); the student's weights are perturbed so
    that they differ from any teacher copy."""
    teacher = AutoModelForMaskedLM.from_pretrained(fresh_teacher_dir)
    student = build_student(teacher, num_layers=1).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    path = tmp_path_factory.mktemp("ckpt") / "last.ckpt"
    torch.save(checkpoint_like_training(student, fresh_teacher_dir), path)
    return path, student


def sentiment_rows(count: int, seed: int) -> str:
    """TSV text (header `sentence<TAB>label`) of `count` sentences whose label is given by a key phrase."""
    rng = random.Random(seed)
    lines = ["sentence\tlabel"]
    for i in range(count):
        label = i % 2
        phrase = rng.choice(POSITIVE if label else NEGATIVE)
        words = rng.choices(FILLER, k=rng.randint(2, 5)) + phrase.split() + rng.choices(FILLER, k=rng.randint(1, 4))
        lines.append(f"{' '.join(words)} .\t{label}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def sentiment_task_dir(tmp_path_factory) -> Path:
    """A local SST-2-like task: train.tsv (64 rows) and dev.tsv (16 rows), separable by key phrases."""
    directory = tmp_path_factory.mktemp("sentiment")
    (directory / "train.tsv").write_text(sentiment_rows(64, seed=0), encoding="utf-8")
    (directory / "dev.tsv").write_text(sentiment_rows(16, seed=1), encoding="utf-8")
    return directory


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory, tiny_teacher_dir, tiny_corpus_dir) -> Path:
    """A real `python -m distil.train` run directory: 4 steps on the tiny teacher and corpus, validated twice."""
    run_dir = tmp_path_factory.mktemp("tiny_run")
    overrides = tiny_run_overrides(tiny_teacher_dir, tiny_corpus_dir, 4, validate_every=2)
    result = run_cli(run_dir.parent / f"{run_dir.name}.home", f"hydra.run.dir={run_dir}", *overrides, "logger=csv")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


FAST_SPEED = [  # timing settings small enough for tests: 16-token rows, batch 4, 20 ms of timing, CPU only
    "speed.seq_len=16",
    "speed.throughput_batch=4",
    "speed.min_run_time=0.02",
    "speed.devices=[cpu]",
]


@pytest.fixture(scope="session")
def evaluated_tiny_run(tiny_run_dir, tiny_teacher_dir, tiny_corpus_dir) -> tuple[Path, subprocess.CompletedProcess]:
    """(tiny run dir, the finished `python -m distil.evaluate` of its last.ckpt into <run>/evaluate)."""
    result = run_cli(
        tiny_run_dir.parent / f"{tiny_run_dir.name}.home",
        f"student_model={tiny_run_dir}/checkpoints/last.ckpt",
        f"teacher_model={tiny_teacher_dir}",
        f"hydra.run.dir={tiny_run_dir}/evaluate",
        *tiny_data_overrides(tiny_corpus_dir),
        *FAST_SPEED,
        module="distil.evaluate",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return tiny_run_dir, result
