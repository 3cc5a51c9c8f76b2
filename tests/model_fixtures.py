"""Fixtures of the evaluation, export, fine-tuning and notebook tests (registered by tests/conftest.py): tiny models,
checkpoints, TSV tasks, a tiny run.

Everything is built from the tiny WordPiece vocabulary of tests/tiny_assets.py, so no test needs ../shared or the
hub (tests marked `shared` use ../shared and skip without it).
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM, BertForMaskedLM

from distil.modules.student import build_student
from tests.conftest import perturb, run_cli, tiny_config, tiny_data_overrides, tiny_run_overrides
from tests.tiny_assets import VOCAB_SIZE, tiny_tokenizer

FILLER = ["the", "a", "of", "and", "to", "in", "is", "was", "he", "she", "it", "they", "with"]
POSITIVE = ["loved great", "great light", "loved the queen"]  # every positive sentence holds one of these
NEGATIVE = ["feared dark", "dark night", "feared the sea"]  # every negative sentence holds one of these


def fresh_bert(num_layers: int = 2, seed: int = 0) -> BertForMaskedLM:
    """A randomly initialised tiny BERT with the library's default initialisation (fine-tunes reliably)."""
    torch.manual_seed(seed)
    return BertForMaskedLM(tiny_config("bert", num_layers, VOCAB_SIZE)).eval()


def save_with_tokenizer(model, directory: Path) -> Path:
    """`model` and the tiny tokenizer in `directory`; the tokenizer returns token types, as BERT's does (a student
    without token types must be exported and fed without them)."""
    model.save_pretrained(directory)
    tiny_tokenizer(with_token_types=True).save_pretrained(directory)
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
    student = perturb(build_student(teacher, num_layers=1).eval(), 0.01, seed=1)
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


def task_dir(tmp_path_factory, name: str, files: dict[str, str]) -> Path:
    """A fresh folder `name` holding `files` (file name -> text): a local task source."""
    directory = tmp_path_factory.mktemp(name)
    for file_name, text in files.items():
        (directory / file_name).write_text(text, encoding="utf-8")
    return directory


@pytest.fixture(scope="session")
def sentiment_task_dir(tmp_path_factory) -> Path:
    """A local SST-2-like task: train.tsv (64 rows) and dev.tsv (16 rows), separable by key phrases."""
    return task_dir(
        tmp_path_factory, "sentiment", {"train.tsv": sentiment_rows(64, 0), "dev.tsv": sentiment_rows(16, 1)}
    )


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory, tiny_teacher_dir, tiny_corpus_dir) -> Path:
    """A real `python -m distil.train` run directory: 4 steps on the tiny teacher and corpus, validated twice."""
    run_dir = tmp_path_factory.mktemp("tiny_run")
    overrides = tiny_run_overrides(tiny_teacher_dir, tiny_corpus_dir, 4, validate_every=2)
    result = run_cli(run_dir.parent / f"{run_dir.name}.home", f"hydra.run.dir={run_dir}", *overrides, "logger=csv")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


FAST_SPEED = [  # timing settings small enough for tests: 16-token rows, batch 4, 20 ms of timing, CPU only
    "speed.max_length=16",
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


def similarity_rows(count: int, seed: int) -> str:
    """STS-B-like TSV (`sentence1 sentence2 score`): the score is 4 for a positive key phrase in the first sentence
    plus 1 for one in the second (0, 1, 4 or 5)."""
    rng = random.Random(seed)
    lines = ["sentence1\tsentence2\tscore"]
    for _ in range(count):
        first, second = rng.random() < 0.5, rng.random() < 0.5
        a, b = (rng.choice(POSITIVE if positive else NEGATIVE) for positive in (first, second))
        lines.append(f"the {a} .\tit was {b} .\t{4.0 * first + 1.0 * second}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def similarity_task_dir(tmp_path_factory) -> Path:
    """A local STS-B-like regression task: train.tsv (64 pairs), dev.tsv (16 pairs), header with `score`."""
    files = {"train.tsv": similarity_rows(64, 0), "dev.tsv": similarity_rows(16, 1)}
    return task_dir(tmp_path_factory, "similarity", files)


ENTITY_TYPES = {"king": "PER", "queen": "PER", "captain": "PER", "sea": "LOC", "river": "LOC", "city": "LOC"}


def conll_text(count: int, seed: int) -> str:
    """CoNLL-2003 column text (`word POS chunk NER`, IOB1 tags, `-DOCSTART-` lines): the word decides its tag."""
    rng = random.Random(seed)
    lines = ["-DOCSTART- -X- O O", ""]
    for _ in range(count):
        words = rng.choices(FILLER + list(ENTITY_TYPES), k=rng.randint(3, 8))
        lines += [f"{w} NN O {'I-' + ENTITY_TYPES[w] if w in ENTITY_TYPES else 'O'}" for w in words] + [""]
    return "\n".join(lines)


@pytest.fixture(scope="session")
def ner_task_dir(tmp_path_factory) -> Path:
    """A local CoNLL-2003-like task: eng.train (64 sentences) and eng.testa (16), in the original column format."""
    return task_dir(tmp_path_factory, "ner", {"eng.train": conll_text(64, 0), "eng.testa": conll_text(16, 1)})


ANSWERS = ["king", "queen", "whale", "captain"]  # who walked, in the QA task's contexts


def squad_json(count: int, seed: int) -> dict:
    """SQuAD v1.1 JSON: each context says who walked (after filler words); the question asks who walked."""
    rng = random.Random(seed)
    paragraphs = []
    for i in range(count):
        who = rng.choice(ANSWERS)
        before = " ".join(rng.choices(FILLER, k=rng.randint(1, 6)))
        context = f"{before} . the {who} walked to the sea . {' '.join(rng.choices(FILLER, k=3))} ."
        start = context.index(f"the {who} walked") + 4
        qa = {"id": f"q{seed}-{i}", "question": "who walked ?", "answers": [{"text": who, "answer_start": start}]}
        paragraphs.append({"context": context, "qas": [qa]})
    return {"version": "1.1", "data": [{"title": "tiny", "paragraphs": paragraphs}]}


@pytest.fixture(scope="session")
def qa_task_dir(tmp_path_factory) -> Path:
    """A local SQuAD-like task: train.json (64 questions) and dev.json (16)."""
    files = {"train.json": json.dumps(squad_json(64, 0)), "dev.json": json.dumps(squad_json(16, 1))}
    return task_dir(tmp_path_factory, "squad", files)
