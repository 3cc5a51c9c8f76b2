"""No remote code unless asked, no W&B API key in any file of a run, no pickles read from data or checkpoints."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers.dynamic_module_utils

from distil.data.datamodule import CorpusDataModule
from distil.data.sources import LocalFiles
from distil.data.tokenization import load_tokenizer
from distil.modules.teacher import load_teacher, load_teacher_config
from distil.run.callbacks.run_config import REDACTED, redact_secrets
from distil.run.checkpoint_io import CheckpointError, read_checkpoint
from tests.reliability.conftest import WANDB_KEY_SENTINEL

SRC_DIR = Path(__file__).resolve().parents[2] / "src" / "distil"
UNSAFE_LOADING = re.compile(
    r"pickle\.loads?\(|allow_pickle\s*=\s*True|load\w*\(.*weights_only\s*=\s*False|read_pickle|joblib\.load|dill\.load"
    r"|trust_remote_code\s*=\s*True"
)


def test_the_wandb_api_key_is_in_no_file_of_the_run(uninterrupted_run):
    files = [path for path in uninterrupted_run.rglob("*") if path.is_file()]
    assert any("wandb" in path.parts for path in files)  # the W&B logger did write its files here
    assert any(path.suffix == ".ckpt" for path in files)
    leaking = [str(path) for path in files if WANDB_KEY_SENTINEL.encode() in path.read_bytes()]
    assert leaking == []


def test_credential_keys_are_redacted_from_the_run_config_in_checkpoints():
    config = {
        "logger": {"wandb": {"api_key": "k", "project": "p"}},
        "hub": [{"hf_token": "t"}],
        "data": {"token_counts": "c.npy"},
    }
    assert redact_secrets(config) == {
        "logger": {"wandb": {"api_key": REDACTED, "project": "p"}},
        "hub": [{"hf_token": REDACTED}],
        "data": {"token_counts": "c.npy"},
    }


def test_checkpoints_of_a_run_load_with_weights_only_and_hold_the_plain_run_config(uninterrupted_run):
    checkpoint = torch.load(uninterrupted_run / "checkpoints" / "last.ckpt", weights_only=True)
    run_config = checkpoint["run_config"]
    assert type(run_config) is dict and run_config["trainer"]["max_steps"] == 16
    assert run_config["callbacks"]["model_checkpoint"]["dirpath"] == str(uninterrupted_run / "checkpoints")
    assert not any(key.startswith("teacher.") for key in checkpoint["state_dict"])


@pytest.fixture
def remote_code_teacher(tiny_teacher_dir, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """The tiny teacher with an `auto_map` to a module that, when imported, writes a sentinel file."""
    monkeypatch.setattr(transformers.dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "hf_modules"))
    directory, sentinel = tmp_path / "teacher", tmp_path / "remote_code_ran"
    shutil.copytree(tiny_teacher_dir, directory)
    (directory / "evil.py").write_text(
        f"import pathlib\npathlib.Path({str(sentinel)!r}).write_text('ran')\n"
        "from transformers import BertConfig, BertForMaskedLM\n"
        "class EvilConfig(BertConfig):\n    pass\n"
        "class EvilModel(BertForMaskedLM):\n    config_class = EvilConfig\n"
    )
    for name, auto_map in (
        ("config.json", {"AutoConfig": "evil.EvilConfig", "AutoModelForMaskedLM": "evil.EvilModel"}),
        ("tokenizer_config.json", {"AutoTokenizer": ["evil.EvilConfig", None]}),
    ):
        content = json.loads((directory / name).read_text())
        (directory / name).write_text(json.dumps({**content, "auto_map": auto_map}))
    return directory, sentinel


def test_code_shipped_with_a_teacher_or_tokenizer_never_runs_by_default(remote_code_teacher):
    directory, sentinel = remote_code_teacher
    assert type(load_teacher_config(str(directory))).__name__ == "BertConfig"
    assert type(load_teacher(str(directory))).__name__ == "BertForMaskedLM"
    load_tokenizer(str(directory))
    assert not sentinel.exists()
    load_teacher_config(str(directory), trust_remote_code=True)  # only an explicit teacher.trust_remote_code=true
    assert sentinel.read_text() == "ran"


def test_a_checkpoint_carrying_a_code_payload_is_refused_without_running_it(tmp_path):
    sentinel = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (sentinel, "ran"))

    path = tmp_path / "malicious.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": Payload()}, path)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        read_checkpoint(path)
    assert not sentinel.exists()


def test_pickled_token_counts_in_a_data_directory_are_refused(tiny_teacher_dir, tiny_corpus_dir, tmp_path):
    counts = tmp_path / "token_counts.npy"
    np.save(counts, np.array([{"not": "counts"}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        CorpusDataModule(
            str(tiny_teacher_dir),
            sources=[LocalFiles(str(tiny_corpus_dir / "*.txt"))],
            mlm_smoothing=0.7,
            token_counts=str(counts),
        )


def test_no_source_file_unpickles_or_trusts_remote_code():
    offending = [
        f"{path.relative_to(SRC_DIR)}:{number}: {line.strip()}"
        for path in sorted(SRC_DIR.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if UNSAFE_LOADING.search(line)
    ]
    assert offending == []
