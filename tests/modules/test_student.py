"""build_student: architecture derived from the teacher, weights copied from the mapped teacher layers."""

import pytest
import torch
from transformers import AutoModelForMaskedLM, DistilBertForMaskedLM

from distil.modules.student import build_student, default_layer_map, teacher_to_student_names

LAYER_KINDS = 16  # weight + bias of q, k, v, out, sa_norm, lin1, lin2, out_norm


def assert_copied_from(student, teacher, layer_map):
    """Every student parameter equals the teacher tensor it came from (and none is left unchecked)."""
    teacher_params = dict(teacher.named_parameters())
    student_params = dict(student.named_parameters())
    checked = set()
    for student_layer, teacher_layer in enumerate(layer_map):
        names = teacher_to_student_names(student_layer, teacher_layer)
        assert len(names) == LAYER_KINDS
        for student_name, teacher_name in names.items():
            assert torch.equal(student_params[student_name], teacher_params[teacher_name]), student_name
            checked.add(student_name)
    t = teacher.bert.embeddings
    s = student.distilbert.embeddings
    assert torch.equal(s.word_embeddings.weight, t.word_embeddings.weight)
    assert torch.equal(s.position_embeddings.weight, t.position_embeddings.weight + t.token_type_embeddings.weight[0])
    assert torch.equal(s.LayerNorm.weight, t.LayerNorm.weight) and torch.equal(s.LayerNorm.bias, t.LayerNorm.bias)
    head = teacher.cls.predictions
    assert torch.equal(student.vocab_transform.weight, head.transform.dense.weight)
    assert torch.equal(student.vocab_transform.bias, head.transform.dense.bias)
    assert torch.equal(student.vocab_layer_norm.weight, head.transform.LayerNorm.weight)
    assert torch.equal(student.vocab_layer_norm.bias, head.transform.LayerNorm.bias)
    assert torch.equal(student.vocab_projector.bias, head.bias)
    assert student.vocab_projector.weight is student.distilbert.embeddings.word_embeddings.weight  # tied
    checked |= {f"distilbert.embeddings.{n}" for n in ("word_embeddings.weight", "position_embeddings.weight")}
    checked |= {f"distilbert.embeddings.LayerNorm.{n}" for n in ("weight", "bias")}
    checked |= {f"{m}.{n}" for m in ("vocab_transform", "vocab_layer_norm") for n in ("weight", "bias")}
    checked |= {"vocab_projector.bias"}
    assert set(student_params) == checked  # (the tied projector weight is not listed by named_parameters)


def test_default_layer_maps():
    assert default_layer_map(12, 6) == [0, 2, 4, 7, 9, 11]  # the original DistilBERT extraction
    assert default_layer_map(24, 12)[0] == 0 and default_layer_map(24, 12)[-1] == 23
    assert default_layer_map(4, 2) == [0, 3]
    assert default_layer_map(12, 1) == [11]


def test_student_shape_follows_teacher(tiny_teacher):
    student = build_student(tiny_teacher)
    assert isinstance(student, DistilBertForMaskedLM)
    c = student.config
    t = tiny_teacher.config
    assert (c.n_layers, c.dim, c.n_heads, c.hidden_dim, c.vocab_size) == (2, 32, 4, 64, t.vocab_size)
    assert not hasattr(student.distilbert.embeddings, "token_type_embeddings")
    assert not any("pooler" in name for name, _ in student.named_parameters())


def test_each_student_tensor_equals_its_teacher_tensor(tiny_teacher):
    student = build_student(tiny_teacher, num_layers=2, layer_map=[1, 3])
    assert_copied_from(student, tiny_teacher, [1, 3])
    assert student.config.distil_layer_map == [1, 3]


def test_full_depth_student_computes_the_teacher_function(tiny_teacher):
    student = build_student(tiny_teacher, num_layers=4, layer_map=[0, 1, 2, 3]).eval()
    ids = torch.randint(5, 64, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    with torch.no_grad():
        expected = tiny_teacher(input_ids=ids, attention_mask=mask).logits
        actual = student(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(actual, expected, atol=1e-5)


def test_random_init_keeps_architecture_but_not_weights(tiny_teacher):
    student = build_student(tiny_teacher, init="random")
    assert student.config.n_layers == 2
    assert not torch.equal(
        student.distilbert.transformer.layer[0].attention.q_lin.weight,
        tiny_teacher.bert.encoder.layer[0].attention.self.query.weight,
    )


@pytest.mark.parametrize(
    ("num_layers", "layer_map", "message"),
    [
        (5, None, "student.num_layers=5 is out of range: allowed 1..4"),
        (0, None, "student.num_layers=0 is out of range"),
        (2, [0, 4], "indices [4] outside the teacher's layers 0..3"),
        (2, [2, 1], "must be strictly increasing"),
        (2, [1], "has 1 entries"),
    ],
)
def test_bad_student_shape_is_rejected(tiny_teacher, num_layers, layer_map, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        build_student(tiny_teacher, num_layers=num_layers, layer_map=layer_map)


def test_bad_init_is_rejected(tiny_teacher):
    with pytest.raises(ValueError, match="student.init='zeros' is not allowed"):
        build_student(tiny_teacher, init="zeros")


@pytest.mark.shared
def test_shared_teacher_student_uses_layers_0_2_4_7_9_11(shared_dir):
    teacher = AutoModelForMaskedLM.from_pretrained(shared_dir / "models/bert-teacher-12x256", dtype=torch.float32)
    student = build_student(teacher)
    assert student.config.n_layers == 6
    assert_copied_from(student, teacher, [0, 2, 4, 7, 9, 11])
    assert sum(p.numel() for p in student.parameters()) < 0.75 * sum(p.numel() for p in teacher.parameters())
