"""`python -m distil.train teacher.name_or_path=<tiny causal teacher> distill=distilgpt2` for every causal layout
(gpt2, llama, mistral, qwen2, qwen3; 2 steps each): the exported student is the teacher's class at
half depth, holds the run's trained weights, loads with `AutoModelForCausalLM` and generates in
`pipeline("text-generation")`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, pipeline

from distil.train import train
from tests.conftest import CAUSAL_TYPES, compose_config, tiny_run_overrides
from tests.tiny_assets import write_tiny_causal_teacher


@pytest.fixture(scope="module")
def causal_runs(tmp_path_factory, tiny_corpus_dir) -> dict[str, tuple[Path, Path]]:
    """model_type -> (teacher dir, run dir) of a finished 2-step run (`distil.train.train` in this process: the
    command without its interpreter start); the gpt2 teacher's output embeddings untied."""
    runs = {}
    for model_type in CAUSAL_TYPES:
        teacher_dir = tmp_path_factory.mktemp(model_type)
        write_tiny_causal_teacher(teacher_dir, model_type, num_layers=4, tied=model_type != "gpt2")
        run_dir = tmp_path_factory.mktemp(f"{model_type}_run")
        overrides = [*tiny_run_overrides(teacher_dir, tiny_corpus_dir), "distill=distilgpt2", "logger=csv"]
        train(compose_config("train", *overrides, f"paths.output_dir={run_dir}"))
        runs[model_type] = teacher_dir, run_dir
    return runs


@pytest.mark.parametrize("model_type", CAUSAL_TYPES)
def test_each_causal_layout_exports_a_half_depth_student_that_generates(model_type, causal_runs):
    teacher_dir, run_dir = causal_runs[model_type]
    student, info = AutoModelForCausalLM.from_pretrained(run_dir / "student", output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    teacher_config = AutoConfig.from_pretrained(teacher_dir)
    assert type(student).__name__ == teacher_config.architectures[0] and student.config.model_type == model_type
    assert student.config.num_hidden_layers == 2 and student.config.distil_layer_map == [0, 3]
    assert student.config.tie_word_embeddings == teacher_config.tie_word_embeddings
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    for name, tensor in student.state_dict().items():
        assert torch.equal(tensor, checkpoint["state_dict"][f"student.{name}"]), name
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "student")
    generate = pipeline("text-generation", model=str(run_dir / "student"))
    text = generate("the old captain", max_new_tokens=6, min_new_tokens=6, do_sample=False)[0]["generated_text"]
    prompt = tokenizer("the old captain", return_tensors="pt")
    with torch.no_grad():
        greedy = student.eval().generate(**prompt, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert text == tokenizer.decode(greedy[0], skip_special_tokens=True)
    assert len(greedy[0]) == prompt["input_ids"].shape[1] + 6
