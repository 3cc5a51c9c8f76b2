"""Bad configs fail before any weights are loaded, with an error naming the key, the value and the allowed range."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hydra.errors import InstantiationException

from distil.modules import teacher as teacher_module
from distil.run import config_checks, devices
from distil.train import train
from tests.conftest import compose_config, tiny_data_overrides

# (overrides, phrases the error must contain); the tiny teacher has 4 layers and 64 positions
BAD_CONFIGS = [
    (["distill.temperature=0"], ["distill.temperature=0", "> 0"]),
    (["distill.temperature=-2.0"], ["distill.temperature=-2.0", "> 0"]),
    (["distill.temperature=inf"], ["distill.temperature=inf", "finite number > 0"]),
    (["distill.temperature=abc"], ["distill.temperature='abc'", "finite number > 0"]),
    (["distill.speed.vocab_chunk_rows=0"], ["distill.speed.vocab_chunk_rows=0", "null or an integer >= 1"]),
    (["distill.speed.teacher_dtype=float16"], ["distill.speed.teacher_dtype='float16'", "float32"]),
    (["distill.warmup_fraction=1.5"], ["distill.warmup_fraction=1.5", "[0, 1)"]),
    (["distill.alpha_label=-1"], ["distill.alpha_label=-1", ">= 0"]),
    (
        ["distill.alpha_kl=0", "distill.alpha_label=0", "distill.alpha_cos=0", "distill.alpha_mse=0"],
        ["all zero", "> 0"],
    ),
    (["student.num_layers=0"], ["student.num_layers=0", "1..4"]),
    (["student.num_layers=5"], ["student.num_layers=5", "1..4"]),
    (["student.num_layers=2", "student.layer_map=[0,4]"], ["student.layer_map=[0, 4]", "0..3"]),
    (["student.num_layers=2", "student.layer_map=[2,1]"], ["student.layer_map=[2, 1]", "strictly increasing"]),
    (["student.num_layers=2", "student.layer_map=[1,1]"], ["student.layer_map=[1, 1]", "strictly increasing"]),
    (["student.num_layers=2", "student.layer_map=[0,1,2]"], ["student.layer_map=[0, 1, 2]", "num_layers=2"]),
    (["student.num_layers=2", "student.layer_map=[0.7,2.2]"], ["student.layer_map=[0.7, 2.2]", "integer"]),
    (["student.init=zeros"], ["student.init='zeros'", "'teacher', 'random'"]),
    (["data.mlm_probability=0"], ["data.mlm_probability=0", "0 < p < 1"]),
    (["data.mlm_probability=1.0"], ["data.mlm_probability=1.0", "0 < p < 1"]),
    (["data.mlm_probability=abc"], ["data.mlm_probability='abc'", "a number"]),
    (["data.batch_size=abc"], ["data.batch_size='abc'", "an integer >= 1"]),
    (["data.batch_size=2.5"], ["data.batch_size=2.5", "an integer >= 1"]),
    (["data.num_workers=-1"], ["data.num_workers=-1", "an integer >= 0"]),
    (["data.max_length=abc"], ["data.max_length='abc'", "an integer in 8..64"]),
    (["trainer.devices=-1"], ["trainer.devices=-1", "trainer.accelerator='cpu'", "an integer >= 1"]),
    (["trainer.devices=0"], ["trainer.devices=0", "trainer.accelerator='cpu'", "an integer >= 1"]),
    (["trainer.devices=abc"], ["trainer.devices='abc'", "an integer >= 1"]),
    (["trainer.num_nodes=0"], ["trainer.num_nodes=0", "an integer >= 1"]),
    (["data.sources.0.paths=/nonexistent/*.txt"], ["data.sources", "no file matches '/nonexistent/*.txt'"]),
    (["trainer.precision=16-mixed"], ["trainer.precision='16-mixed'", "not supported on the CPU", "32-true"]),
    (["trainer.precision=16-true"], ["trainer.precision='16-true'", "not supported on the CPU"]),
    (
        ["trainer.precision=16-mixed", "distill.optimizer.fused=true"],
        ["distill.optimizer.fused=True", "trainer.precision='16-mixed'", "gradient_clip_val=5.0", "bf16-mixed"],
    ),
    (["trainer.precision=fp8"], ["trainer.precision='fp8'", "not allowed", "32-true", "bf16-mixed"]),
    (["data.max_length=65"], ["data.max_length=65", "8..64", "max_position_embeddings"]),
    (["resume=always"], ["resume='always'", "auto"]),
    (["trainer.max_steps=-1"], ["trainer.max_steps=-1", "integer >= 1"]),
    (["trainer.max_steps=0"], ["trainer.max_steps=0", "integer >= 1"]),
    (["trainer.accumulate_grad_batches=0"], ["trainer.accumulate_grad_batches=0", "an integer >= 1"]),
    (["callbacks.nonfinite_guard.max_consecutive=0"], ["callbacks.nonfinite_guard.max_consecutive=0", ">= 1"]),
    (["+callbacks.preemption.signals=[SIGTERM,SIGFOO]"], ["callbacks.preemption.signals", "SIGFOO"]),
]


def compose_tiny(teacher_dir: Path, corpus_dir: Path, output_dir: Path, *overrides: str):
    return compose_config(
        "train",
        f"teacher.name_or_path={teacher_dir}",
        *tiny_data_overrides(corpus_dir),
        "logger=csv",
        f"paths.output_dir={output_dir}",
        *overrides,
    )


@pytest.fixture
def no_weight_loading(monkeypatch):
    """Loading the teacher's weights fails the test: every check must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("teacher weights were loaded before the config was rejected")

    monkeypatch.setattr(teacher_module, "load_teacher", refuse)


@pytest.mark.parametrize("overrides, phrases", BAD_CONFIGS, ids=[" ".join(o) for o, _ in BAD_CONFIGS])
def test_bad_config_fails_before_weights_load_naming_key_value_and_range(
    overrides, phrases, tiny_teacher_dir, tiny_corpus_dir, tmp_path, no_weight_loading
):
    cfg = compose_tiny(tiny_teacher_dir, tiny_corpus_dir, tmp_path, *overrides)
    with pytest.raises((ValueError, InstantiationException)) as error:  # Hydra wraps errors of callback constructors
        train(cfg)
    for phrase in phrases:
        assert phrase in str(error.value)
    assert not (tmp_path / "checkpoints").exists()


def test_a_teacher_config_larger_than_memory_is_refused_before_any_weights_load(
    tiny_teacher_dir, tiny_corpus_dir, tmp_path, no_weight_loading
):
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_teacher_dir, teacher)
    config = json.loads((teacher / "config.json").read_text())
    (teacher / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 100_000, "hidden_size": 4096}))
    cfg = compose_tiny(teacher, tiny_corpus_dir, tmp_path / "run", "student.num_layers=2")
    with pytest.raises(ValueError, match=rf"teacher.name_or_path='{teacher}': its config \(num_hidden_layers=100000, "):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_bf16_on_a_cpu_without_native_bf16_is_refused(tiny_teacher_dir, tiny_corpus_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(devices, "cpu_supports_bf16", lambda: False)
    cfg = compose_tiny(tiny_teacher_dir, tiny_corpus_dir, tmp_path, "trainer.precision=bf16-mixed")
    with pytest.raises(ValueError, match=r"trainer.precision='bf16-mixed' needs native bf16 on the CPU.*use 32-true"):
        config_checks.check_trainer_config(cfg)


@pytest.mark.parametrize("precision", ["32-true", "32", 32, "bf16-mixed"])
def test_supported_cpu_precisions_pass(precision, monkeypatch):
    monkeypatch.setattr(devices, "cpu_supports_bf16", lambda: True)
    devices.check_precision(precision, "cpu")


def test_a_gpu_accelerator_without_a_visible_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(devices.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="trainer.accelerator='gpu' but no CUDA GPU is visible"):
        devices.check_precision("bf16-mixed", "gpu")


def test_bf16_on_a_gpu_without_bf16_is_refused(monkeypatch):
    cuda = devices.torch.cuda
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(cuda, "get_device_capability", lambda: (7, 0))
    monkeypatch.setattr(cuda, "get_device_name", lambda: "Tesla V100")
    with pytest.raises(ValueError, match=r"trainer.precision='bf16-mixed' needs a GPU with bf16.*V100 has 7.0"):
        devices.check_precision("bf16-mixed", "gpu")
    devices.check_precision("16-mixed", "gpu")
