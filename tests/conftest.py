"""Fixtures and helpers shared by all tests: tiny models built in memory, the ../shared assets when present, and the
one of each that every test uses: `compose_config` (Hydra configs), `tiny_run_overrides` (a tiny run of
`distil.train`) and `run_cli` / `start_cli` (the commands in a forked child or a subprocess, isolated from this
machine's W&B setup)."""

from __future__ import annotations

import atexit
import logging
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    BertConfig,
    ElectraConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    ModernBertConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen3Config,
    RobertaConfig,
    XLMRobertaConfig,
)

pytest_plugins = ["tests.model_fixtures"]  # tiny models, checkpoints, task folders and runs, as fixtures

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"  # the Hydra config tree


# One torch thread in the tests and in every command they start: their models are tiny (thread hand-offs cost more
# than they save), and two processes each spinning two threads on two cores slow each other down many times over.
torch.set_num_threads(1)
MACHINE_ENV = ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_BASE_URL", "DISTIL_RUN_DIR", "RANK", "SLURM_PROCID")


def compose_config(config_name: str, *overrides: str, with_hydra: bool = False) -> DictConfig:
    """The composed root config `config_name` of conf/ (train, evaluate, ...) with command-line style overrides (and
    Hydra's own node with `with_hydra`)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=with_hydra)


def cli_env(home: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without `MACHINE_ENV` (no W&B key, mode or directory, no rank variables), W&B's
    files under `home`, W&B offline, then `env`."""
    isolated = {k: v for k, v in os.environ.items() if k not in MACHINE_ENV}
    isolated.update(
        NETRC=str(home / "no-netrc"),  # a missing file: no W&B login of the machine
        WANDB_CONFIG_DIR=str(home / "wandb-config"),
        WANDB_DATA_DIR=str(home / "wandb-data"),  # staged artifact files
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",  # see torch.set_num_threads above
    )
    return isolated | (env or {})


def cli_command(home: Path, module: str, args: tuple[str, ...], command: list[str] | None) -> list[str]:
    """`python -m <module> <args>` (or `command <args>`), with the run directories of Hydra under `home`."""
    return [*(command or [sys.executable, "-m", module]), *args, f"++paths.log_dir={home / 'outputs'}"]


def run_cli(
    home: Path,
    *args: str,
    module: str = "distil.train",
    env: dict[str, str] | None = None,
    command: list[str] | None = None,
    timeout: int = 300,
    new_interpreter: bool = False,
) -> subprocess.CompletedProcess:
    """Run `python -m <module>` (default distil.train; or `command`) with Hydra overrides `args` from the repository
    root, isolated from this machine's W&B setup (`cli_env`), to the end; output captured.

    The module runs in a fork of this test process (`run_forked`), which has torch, Lightning and transformers
    imported already (a fresh interpreter spends about 6 s importing them). A `command`, and a module whose `env`
    holds a variable some library reads when it is imported (as huggingface_hub reads HF_HUB_OFFLINE: say
    `new_interpreter=True`), run in a subprocess; so does every command off Linux (macOS cannot fork a process that
    has loaded its system frameworks safely)."""
    argv = cli_command(home, module, args, command)
    if command is not None or new_interpreter or sys.platform != "linux":
        return subprocess.run(
            argv, cwd=REPO_ROOT, env=cli_env(home, env), capture_output=True, text=True, timeout=timeout, check=False
        )
    return run_forked(module, argv, cli_env(home, env), timeout)


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Print a warning to stderr as a fresh interpreter does."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def run_forked(module: str, argv: list[str], env: dict[str, str], timeout: int) -> subprocess.CompletedProcess:
    """`python -m module argv[3:]` as a fresh interpreter would run it (its environment `env`, the repository root as
    working directory, default warning filters, no exit handler of this process), in a forked child: its exit status,
    stdout and stderr."""
    outputs = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            # torch replaces the parent's thread pool on first use after a fork; do it now, while this is the only
            # thread (threads racing for it, as transformers' weight loading threads do, can find none)
            torch.set_num_threads(torch.get_num_threads())
            for fd, file in enumerate(outputs, start=1):
                os.dup2(file.fileno(), fd)
            sys.stdout, sys.stderr = (open(fd, "w", buffering=1, closefd=False) for fd in (1, 2))
            os.environ.clear()
            os.environ.update(env)
            os.chdir(REPO_ROOT)
            atexit._clear()  # this process's exit handlers (pytest's) are not the command's
            warnings.resetwarnings()  # then a fresh interpreter's filters (the first that matches applies)
            for category in (ResourceWarning, ImportWarning, PendingDeprecationWarning, DeprecationWarning):
                warnings.simplefilter("ignore", category)
            warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
            warnings.showwarning = show_warning  # printed, not recorded by pytest
            GlobalHydra.instance().clear()
            sys.argv = [module, *argv[3:]]
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
            if isinstance(exit.code, str):
                print(exit.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            atexit._run_exitfuncs()
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + timeout
    while (status := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise subprocess.TimeoutExpired(argv, timeout)
        time.sleep(0.02)
    stdout, stderr = (file.seek(0) or file.read().decode(errors="replace") for file in outputs)
    return subprocess.CompletedProcess(argv, os.waitstatus_to_exitcode(status[1]), stdout, stderr)


def start_cli(home: Path, *args: str, log_file: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `python -m distil.train` with overrides `args` in the background, as `run_cli` would; output to
    `log_file`."""
    with open(log_file, "w") as log:
        return subprocess.Popen(
            cli_command(home, "distil.train", args, None),
            cwd=REPO_ROOT,
            env=cli_env(home, env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def tiny_data_overrides(corpus_dir: Path) -> list[str]:
    """The data of every tiny run: the tiny corpus's .txt files, 4 rows of 32 tokens, no worker, 5 documents held out
    per source, blocks of 8 documents."""
    return [
        "data=local_files",
        f"data.sources.0.paths={corpus_dir}/*.txt",
        "data.max_length=32",
        "data.batch_size=4",
        "data.val_batch_size=4",
        "data.num_workers=0",
        "data.val_documents=5",
        "data.documents_per_block=8",
    ]


def tiny_run_overrides(
    teacher_dir: Path, corpus_dir: Path, steps: int = 2, validate_every: int | None = None, checkpoint_every=None
) -> list[str]:
    """`distil.train` overrides of a tiny run: the tiny teacher and data, `steps` optimizer steps on the CPU, 2
    validation batches every `validate_every` steps (default: once, at the end), checkpoints every `checkpoint_every`
    steps (default: the config's), metrics every step, no progress bar. Callers add the logger."""
    overrides = [
        f"teacher.name_or_path={teacher_dir}",
        *tiny_data_overrides(corpus_dir),
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={validate_every or steps}",
        "trainer.limit_val_batches=2",
        "trainer.log_every_n_steps=1",
        "callbacks.progress_bar.refresh_rate=0",
    ]
    if checkpoint_every is not None:
        overrides.append(f"callbacks.model_checkpoint.every_n_train_steps={checkpoint_every}")
    return overrides


DISTILBERT_WEIGHTS = {"kl": 5.0, "label": 2.0, "cos": 1.0}  # the published objective's weights (conf/distill/)


def assert_logged_terms_weigh_into_the_loss(run_dir: Path, steps: int, weights=DISTILBERT_WEIGHTS) -> list[dict]:
    """A run's csv/metrics.csv logs every term at each of its `steps` steps, finite and > 0, and `train/loss` is their
    sum with `weights`; returns all logged rows (training and validation)."""
    import csv
    import math

    with open(run_dir / "csv" / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    train_rows = [row for row in rows if row.get("train/loss")]
    assert [int(row["step"]) for row in train_rows] == list(range(steps))
    for row in train_rows:
        terms = {name: float(row[f"train/loss_{name}"]) for name in weights}
        assert all(math.isfinite(value) and value > 0 for value in terms.values()), terms
        weighted = sum(weights[name] * value for name, value in terms.items())
        assert float(row["train/loss"]) == pytest.approx(weighted, rel=1e-4)
    return rows


def assert_fill_mask_is_the_models_own(model_dir: Path, text: str) -> None:
    """`pipeline("fill-mask")` on the folder returns the model's own top 5 at the mask of `text` (`{mask}` marks it):
    the tokenizer and the weights in the folder belong together."""
    from transformers import AutoTokenizer, pipeline

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
    text = text.format(mask=tokenizer.mask_token)
    inputs = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[inputs["input_ids"] == tokenizer.mask_token_id][0]
    expected = torch.softmax(logits, dim=-1).topk(5)
    predictions = pipeline("fill-mask", model=str(model_dir))(text)
    assert [p["token"] for p in predictions] == expected.indices.tolist()
    assert [p["score"] for p in predictions] == pytest.approx(expected.values.tolist(), rel=1e-4)


# files of end-to-end runs, run first
LONG_RUNNING_FIRST = (
    "reliability",
    "scaling",
    "families",
    "exporting",
    "evaluation",
    "tasks",
    "test_train.py",
    "test_shared_demo.py",
    "test_shared_causal_demo.py",
    "test_ablation.py",
    "test_extending.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files of end-to-end runs first (in this order), the unit tests after them: run in parallel (the README's
    `-n auto --dist loadfile`), the short files then fill the gaps at the end instead of a long file running alone.
    The sort is stable, so a file's tests keep their order (and their module fixtures)."""

    def rank(item: pytest.Item) -> int:
        parts = item.path.relative_to(REPO_ROOT / "tests").parts
        return next((i for i, name in enumerate(LONG_RUNNING_FIRST) if name == parts[0]), len(LONG_RUNNING_FIRST))

    items.sort(key=rank)


def shared_assets_dir() -> Path:
    return Path(os.environ.get("DISTIL_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture
def shared_dir() -> Path:
    """The shared assets folder; the test is skipped when it is absent (e.g. a fresh clone elsewhere)."""
    path = shared_assets_dir()
    if not (path / "models" / "bert-teacher-12x256").is_dir():
        pytest.skip(f"shared assets not found at {path} (set DISTIL_SHARED to the folder holding models/ and data/)")
    return path


FAMILY_TYPES = ("bert", "roberta", "xlm-roberta", "modernbert", "electra")  # a teacher model_type of each family


def tiny_config(model_type: str = "bert", num_layers: int = 4, vocab_size: int = 64, special_ids=None):
    """A masked-LM config small enough for unit tests: hidden 32, 4 heads, FFN 64, rows of up to 64 tokens.

    `special_ids` (pad, bos/cls, eos/sep) defaults to the ids of the tiny vocabularies of `masked_batch`: padding 0
    for every family, as `masked_batch` pads with 0. ModernBERT gets 6 layers' worth of its attention pattern with a
    local window of 8 tokens, so rows of 16 see both kinds."""
    pad, start, end = special_ids or (0, 2, 3)
    shape = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=64,
        pad_token_id=pad,
    )
    if model_type == "bert":
        return BertConfig(**shape, max_position_embeddings=64)
    if model_type in ("roberta", "xlm-roberta"):
        config_class = RobertaConfig if model_type == "roberta" else XLMRobertaConfig
        return config_class(**shape, max_position_embeddings=64 + pad + 1, bos_token_id=start, eos_token_id=end)
    if model_type == "modernbert":
        ids = dict(bos_token_id=start, cls_token_id=start, eos_token_id=end, sep_token_id=end)
        return ModernBertConfig(**shape, **ids, max_position_embeddings=64, local_attention=8)
    if model_type == "electra":  # embeddings narrower than the layers, as ELECTRA generators have them
        return ElectraConfig(**shape, embedding_size=16, max_position_embeddings=64)
    raise ValueError(f"no tiny config for model_type {model_type!r}")


CAUSAL_TYPES = ("gpt2", "llama", "mistral", "qwen2", "qwen3")  # a teacher model_type of each causal layout


def tiny_causal_config(
    model_type: str = "llama", num_layers: int = 4, vocab_size: int = 64, eos_id: int = 0, tied=True
):
    """A causal-LM config small enough for unit tests: hidden 32, FFN 64, rows of up to 64 tokens; the Llama layouts
    with grouped-query attention (4 heads over 2 key-value heads); Mistral with a sliding window of 8 tokens; Qwen2
    with sliding-window attention from layer 2 on (`layer_types` mixed); output embeddings tied or not (`tied`)."""
    if model_type == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size,
            n_positions=64,
            n_embd=32,
            n_layer=num_layers,
            n_head=4,
            n_inner=64,
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            tie_word_embeddings=tied,
        )
    shape = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        tie_word_embeddings=tied,
    )
    if model_type == "llama":
        return LlamaConfig(**shape)
    if model_type == "mistral":
        return MistralConfig(**shape, sliding_window=8)
    if model_type == "qwen2":
        return Qwen2Config(**shape, use_sliding_window=True, sliding_window=8, max_window_layers=2)
    if model_type == "qwen3":
        return Qwen3Config(**shape, head_dim=8)
    raise ValueError(f"no tiny causal config for model_type {model_type!r}")


def tiny_causal_lm(model_type: str = "llama", num_layers: int = 4, vocab_size: int = 64, seed: int = 0, **config):
    """A randomly initialised causal LM of `tiny_causal_config`, in eval mode, every parameter moved off its initial
    value (norm weights off 1), so that a forgotten copy shows up."""
    return perturbed(AutoModelForCausalLM, tiny_causal_config(model_type, num_layers, vocab_size, **config), seed)


def tiny_masked_lm(
    model_type: str = "bert", num_layers: int = 4, vocab_size: int = 64, seed: int = 0, special_ids=None
):
    """A randomly initialised masked-LM of `tiny_config`, in eval mode, every parameter moved off its initial value
    (LayerNorm weights off 1, biases off 0, BERT's token-type rows apart), so that a forgotten copy shows up."""
    model = perturbed(AutoModelForMaskedLM, tiny_config(model_type, num_layers, vocab_size, special_ids), seed)
    if model_type == "bert":
        with torch.no_grad():
            model.bert.embeddings.token_type_embeddings.weight.normal_(0.0, 0.5)
    return model


def perturbed(auto_class, config, seed: int) -> PreTrainedModel:
    """A model of `config` (built by `auto_class`) in eval mode, every parameter moved by noise of scale 0.1."""
    torch.manual_seed(seed)
    return perturb(auto_class.from_config(config).eval(), 0.1)


def perturb(model: torch.nn.Module, scale: float, seed: int | None = None) -> torch.nn.Module:
    """`model` with every parameter moved by Gaussian noise of `scale` (drawn after seeding torch with `seed`, if
    given), so that it predicts otherwise than the weights it was copied from."""
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn_like(parameter))
    return model


def tiny_language_model(model_type: str, num_layers: int = 4, **config) -> PreTrainedModel:
    """`tiny_causal_lm` for the causal model types (`CAUSAL_TYPES`), else `tiny_masked_lm`."""
    if model_type in CAUSAL_TYPES:
        return tiny_causal_lm(model_type, num_layers, **config)
    return tiny_masked_lm(model_type, num_layers, **config)


@pytest.fixture
def tiny_teacher() -> PreTrainedModel:
    return tiny_masked_lm()


def masked_batch(vocab_size: int = 64, batch: int = 3, length: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ids with padding at the end of row 1 and 3 masked positions per row (labels -100 elsewhere)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab_size, (batch, length), generator=generator)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[1, length - 5 :] = 0
    input_ids[attention_mask == 0] = 0
    labels = torch.full((batch, length), -100)
    for row in range(batch):
        positions = torch.randperm(length - 6, generator=generator)[:3] + 1  # inside the real tokens of every row
        labels[row, positions] = input_ids[row, positions]
        input_ids[row, positions] = 4  # the [MASK] id of these tiny vocabularies
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory) -> Path:
    """A tiny BERT teacher + WordPiece tokenizer saved on disk (see tests/tiny_assets.py)."""
    from tests.tiny_assets import write_tiny_teacher

    return write_tiny_teacher(tmp_path_factory.mktemp("tiny_teacher"))


@pytest.fixture(scope="session")
def tiny_corpus_dir(tmp_path_factory) -> Path:
    """A folder of small .txt files (blank-line-separated documents) over the tiny tokenizer's words."""
    from tests.tiny_assets import write_tiny_corpus

    return write_tiny_corpus(tmp_path_factory.mktemp("tiny_corpus"))


@pytest.fixture(scope="session")
def model_without_tokenizer_dir(tmp_path_factory) -> Path:
    """A tiny BERT (128-token vocabulary) saved without tokenizer files: transformers 5 builds a 5-token tokenizer
    for such a folder on its own."""
    directory = tmp_path_factory.mktemp("no_tokenizer")
    tiny_masked_lm(vocab_size=128).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_shards_dir(tiny_teacher_dir, tiny_corpus_dir, tmp_path_factory) -> Path:
    """`distil.prepare`'s shards of the tiny corpus with the tiny teacher's tokenizer (5 documents held out)."""
    from distil.data.sources import LocalFiles
    from distil.prepare import prepare

    output = tmp_path_factory.mktemp("tiny_shards") / "shards"
    sources = [LocalFiles(str(tiny_corpus_dir / "*.txt"))]
    prepare(str(tiny_teacher_dir), sources, [], str(output), val_documents=5, seed=0, num_proc=1)
    return output


def copy_with_a_flipped_byte(folder: Path, destination: Path, file_name: str, offset: int) -> Path:
    """A copy of `folder` at `destination` whose file `file_name` has its byte at `offset` inverted: the same size,
    other contents (what only a checksum finds); returns that file."""
    shutil.copytree(folder, destination)
    path = destination / file_name
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    return path
