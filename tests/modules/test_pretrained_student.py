"""A given pretrained student (`student.name_or_path`): checked against the teacher before any weights load (its kind,
its vocabulary, an unset depth, the cosine term's width), then loaded with its own weights and trained as it is."""

from __future__ import annotations

import functools

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from distil.data.tokenization import load_tokenizer
from distil.modules.distillation import DistillationModule
from distil.modules.student import build_student
from distil.run.config_checks import check_student_config, check_vocabulary
from tests.conftest import compose_config, tiny_causal_lm, tiny_masked_lm
from tests.tiny_assets import causal_tokenizer, write_tiny_causal_teacher


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return write_tiny_causal_teacher(tmp_path_factory.mktemp("teacher"), "llama", num_layers=4)


def save_student(directory, model, tokenizer=None):
    model.save_pretrained(directory)
    (tokenizer or causal_tokenizer()).save_pretrained(directory)
    return str(directory)


def student_cfg(teacher_dir, student_dir, *overrides):
    return compose_config(
        "train",
        "experiment=demo_causal",
        f"teacher.name_or_path={teacher_dir}",
        f"student.name_or_path={student_dir}",
        "student.num_layers=null",
        *overrides,
    )


def test_the_given_student_is_loaded_with_its_own_weights_and_trains(teacher_dir, tmp_path):
    vocab = len(causal_tokenizer())
    given = tiny_causal_lm("qwen3", num_layers=2, vocab_size=vocab, seed=5)  # another family of the same kind
    student_dir = save_student(tmp_path, given)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    cfg = student_cfg(teacher_dir, student_dir)
    check_student_config(cfg, teacher.config)
    check_vocabulary(
        teacher.config, str(teacher_dir), load_tokenizer(str(teacher_dir), causal=True), str(teacher_dir), student_dir
    )
    student = build_student(teacher, name_or_path=student_dir)
    assert student.config.distil_layer_map is None and student.config.model_type == "qwen3"
    for name, tensor in given.state_dict().items():
        assert torch.equal(student.state_dict()[name], tensor), name
    module = DistillationModule(teacher, student, functools.partial(torch.optim.SGD, lr=0.1), alpha_cos=0.0)
    ids = torch.randint(1, vocab, (2, 12))
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": torch.cat([ids[:, 1:], torch.full((2, 1), -100)], 1),
    }
    losses = module.distillation_losses(batch)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"]) and student.lm_head.weight.grad.abs().sum() > 0


def test_a_student_of_the_other_kind_is_refused_naming_both(teacher_dir, tmp_path):
    student_dir = save_student(tmp_path, tiny_masked_lm("bert", num_layers=2, vocab_size=400))
    teacher_config = AutoConfig.from_pretrained(teacher_dir)
    with pytest.raises(
        ValueError,
        match=r"student.name_or_path=.* is a masked LM \(model_type 'bert'\) and the teacher a causal LM "
        r"\(model_type 'llama'\)",
    ):
        check_student_config(student_cfg(teacher_dir, student_dir), teacher_config)


def test_a_student_with_fewer_embeddings_than_the_teachers_vocabulary_is_refused(teacher_dir, tmp_path):
    student_dir = save_student(tmp_path, tiny_causal_lm("llama", num_layers=2, vocab_size=64))
    with pytest.raises(ValueError, match=r"has 64 token embeddings, fewer than the teacher's vocabulary of 300"):
        check_student_config(student_cfg(teacher_dir, student_dir), AutoConfig.from_pretrained(teacher_dir))


def test_a_student_of_another_tokenizer_is_refused(teacher_dir, tmp_path):
    other = causal_tokenizer()
    other.add_tokens(["zebra-token"])  # another vocabulary
    student_dir = save_student(tmp_path, tiny_causal_lm("llama", num_layers=2, vocab_size=len(other)), other)
    teacher_config = AutoConfig.from_pretrained(teacher_dir)
    tokenizer = load_tokenizer(str(teacher_dir), causal=True)
    with pytest.raises(
        ValueError, match=r"vocabulary mismatch: data.tokenizer=.* than the tokenizer of student.name_or_path"
    ):
        check_vocabulary(teacher_config, str(teacher_dir), tokenizer, str(teacher_dir), student_dir)


@pytest.mark.parametrize("key", ["num_layers", "hidden_size"])
def test_depth_or_width_with_a_given_student_is_refused(key, teacher_dir, tmp_path):
    student_dir = save_student(tmp_path, tiny_causal_lm("llama", num_layers=2, vocab_size=300))
    cfg = student_cfg(teacher_dir, student_dir, f"student.{key}=2")
    with pytest.raises(ValueError, match=rf"student.{key}=2 cannot be combined with student.name_or_path="):
        check_student_config(cfg, AutoConfig.from_pretrained(teacher_dir))


def test_the_cosine_term_needs_the_teachers_width(teacher_dir, tmp_path):
    narrow = AutoConfig.for_model(
        "llama",
        vocab_size=300,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    student_dir = save_student(tmp_path, AutoModelForCausalLM.from_config(narrow))
    cfg = student_cfg(teacher_dir, student_dir)
    with pytest.raises(
        ValueError,
        match=r"distill.alpha_cos=1.0 needs the student's hidden size to be the teacher's: the student has 16, "
        r"the teacher 32; set distill.alpha_cos=0",
    ):
        check_student_config(cfg, AutoConfig.from_pretrained(teacher_dir))
    check_student_config(
        student_cfg(teacher_dir, student_dir, "distill.alpha_cos=0"), AutoConfig.from_pretrained(teacher_dir)
    )
