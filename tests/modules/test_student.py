"""build_student: depth, layer map and initialisation chosen and checked the same way for every family."""

import re

import pytest
import torch
from transformers import AutoModelForMaskedLM

from distil.families import teacher_family
from distil.modules.student import build_student
from tests.conftest import FAMILY_TYPES, tiny_masked_lm


def test_default_layer_map_spreads_the_student_over_the_teacher():
    family = teacher_family(tiny_masked_lm().config)
    assert family.default_layer_map(12, 6) == [0, 2, 4, 7, 9, 11]  # the original DistilBERT extraction
    assert family.default_layer_map(24, 12)[0] == 0 and family.default_layer_map(24, 12)[-1] == 23
    assert family.default_layer_map(4, 2) == [0, 3]
    assert family.default_layer_map(12, 1) == [11]


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_default_student_has_half_the_layers_and_the_teachers_width(model_type):
    teacher = tiny_masked_lm(model_type, num_layers=4)
    student = build_student(teacher)
    assert student.config.distil_layer_map == [0, 3] and student.config.num_hidden_layers == 2
    layer_indices = {int(index) for name in student.state_dict() for index in re.findall(r"layers?\.(\d+)\.", name)}
    assert layer_indices == {0, 1}
    assert student.get_input_embeddings().weight.shape == teacher.get_input_embeddings().weight.shape
    assert not any("pooler" in name for name, _ in student.named_parameters())


def test_distilbert_student_has_no_token_types_and_the_teachers_shape(tiny_teacher):
    student = build_student(tiny_teacher)
    c = student.config
    assert (c.n_layers, c.dim, c.n_heads, c.hidden_dim, c.vocab_size) == (2, 32, 4, 64, tiny_teacher.config.vocab_size)
    assert not hasattr(student.distilbert.embeddings, "token_type_embeddings")


@pytest.mark.parametrize(
    ("num_layers", "layer_map", "message"),
    [
        (5, None, "student.num_layers=5 is out of range: allowed an integer in 1..4"),
        (0, None, "student.num_layers=0 is out of range"),
        (2.0, None, "student.num_layers=2.0 is out of range: allowed an integer"),
        (2, [0, 4], "indices [4] outside the teacher's layers 0..3"),
        (2, [2, 1], "must be strictly increasing"),
        (2, [1], "has 1 entries"),
        (2, [0.7, 2.2], "student.layer_map=[0.7, 2.2] is not allowed: it must list integer teacher layer indices"),
    ],
)
def test_bad_student_shape_is_rejected(tiny_teacher, num_layers, layer_map, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        build_student(tiny_teacher, num_layers=num_layers, layer_map=layer_map)


def test_bad_init_is_rejected(tiny_teacher):
    allowed = r"\['teacher', 'random', 'teacher_embeddings'\]"
    with pytest.raises(ValueError, match=rf"student.init='zeros' is not allowed: use one of {allowed}"):
        build_student(tiny_teacher, init="zeros")


@pytest.mark.shared
def test_shared_teacher_student_uses_layers_0_2_4_7_9_11(shared_dir):
    teacher = AutoModelForMaskedLM.from_pretrained(shared_dir / "models/bert-teacher-12x256", dtype=torch.float32)
    student = build_student(teacher)
    assert student.config.n_layers == 6 and student.config.distil_layer_map == [0, 2, 4, 7, 9, 11]
    teacher_layer_7 = teacher.bert.encoder.layer[7].attention.self.query.weight
    assert torch.equal(student.distilbert.transformer.layer[3].attention.q_lin.weight, teacher_layer_7)
    assert sum(p.numel() for p in student.parameters()) < 0.75 * sum(p.numel() for p in teacher.parameters())
