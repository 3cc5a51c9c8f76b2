"""Fixtures of the data tests: a tiny WordPiece tokenizer saved on disk and a tiny text corpus."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.tiny_assets import causal_tokenizer, tiny_tokenizer

WORDS = (
    "the a of and to in is was he she it they we that this with for on at by from his her "
    "king queen house door sea ship whale captain river city night day light dark walked opened saw said"
).split()


def write_tokenizer(directory: Path, words: list[str] = WORDS) -> Path:
    """`tiny_tokenizer` over `words` (no [unused*] padding), saved to `directory`."""
    tiny_tokenizer(words, vocab_size=None).save_pretrained(directory)
    return directory


def random_documents(count: int, seed: int, min_words: int = 3, max_words: int = 40) -> list[str]:
    """Documents of random WORDS, each ending with a period; lengths vary so packing crosses document borders."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))) + " ." for _ in range(count)]


def write_text_file(path: Path, documents: list[str]) -> Path:
    """A .txt file with documents separated by blank lines."""
    path.write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    return write_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def causal_tokenizer_dir(tmp_path_factory) -> Path:
    """A byte-level BPE tokenizer with `<|endoftext|>` (id 0) as end-of-text, as a causal LM's."""
    directory = tmp_path_factory.mktemp("causal_tokenizer")
    causal_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """Two .txt files of 150 and 100 random documents."""
    directory = tmp_path_factory.mktemp("corpus")
    write_text_file(directory / "part-a.txt", random_documents(150, seed=1))
    write_text_file(directory / "part-b.txt", random_documents(100, seed=2))
    return directory


@pytest.fixture
def shared_dir() -> Path:
    """The shared assets folder ($DISTIL_SHARED or ../shared); the test is skipped when it is absent."""
    path = Path(os.environ.get("DISTIL_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
    if not (path / "data" / "corpus").is_dir():
        pytest.skip(f"shared assets not found at {path} (set DISTIL_SHARED to the folder holding models/ and data/)")
    return path
