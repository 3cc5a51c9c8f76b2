"""Every model family, masked and causal: the student copies the right teacher tensors, a full-depth student is the
teacher, the vocabulary head splits where the model's own head does, and unsupported or oversized models are refused
before weights load."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, ModernBertConfig, OPTConfig, RobertaConfig

from distil.families import FAMILIES, UnsupportedModelError, model_parts, teacher_family
from distil.families.size import parameter_count
from distil.modules.student import build_student
from distil.modules.teacher import load_teacher, load_teacher_config
from tests.conftest import CAUSAL_TYPES, FAMILY_TYPES, masked_batch, tiny_causal_lm, tiny_language_model

MODEL_TYPES = FAMILY_TYPES + CAUSAL_TYPES  # a teacher model_type of every family and causal layout

LAYERS = {  # where each family keeps its transformer layers (the test's own statement, not the family code's)
    "roberta": lambda model: model.roberta.encoder.layer,
    "xlm-roberta": lambda model: model.roberta.encoder.layer,
    "modernbert": lambda model: model.model.layers,
    "electra": lambda model: model.electra.encoder.layer,
    "gpt2": lambda model: model.transformer.h,
    "llama": lambda model: model.model.layers,
    "mistral": lambda model: model.model.layers,
    "qwen2": lambda model: model.model.layers,
    "qwen3": lambda model: model.model.layers,
}
BERT_LAYER_PAIRS = {  # DistilBERT layer tensor -> BERT layer tensor
    "attention.q_lin": "attention.self.query",
    "attention.k_lin": "attention.self.key",
    "attention.v_lin": "attention.self.value",
    "attention.out_lin": "attention.output.dense",
    "sa_layer_norm": "attention.output.LayerNorm",
    "ffn.lin1": "intermediate.dense",
    "ffn.lin2": "output.dense",
    "output_layer_norm": "output.LayerNorm",
}


def assert_bert_copy(student, teacher, layer_map) -> set[str]:
    """DistilBERT from BERT: each tensor named here equals its source; returns the student names checked."""
    s, t = dict(student.named_parameters()), dict(teacher.named_parameters())
    pairs = {
        "distilbert.embeddings.word_embeddings.weight": "bert.embeddings.word_embeddings.weight",
        "distilbert.embeddings.LayerNorm.weight": "bert.embeddings.LayerNorm.weight",
        "distilbert.embeddings.LayerNorm.bias": "bert.embeddings.LayerNorm.bias",
        "vocab_transform.weight": "cls.predictions.transform.dense.weight",
        "vocab_transform.bias": "cls.predictions.transform.dense.bias",
        "vocab_layer_norm.weight": "cls.predictions.transform.LayerNorm.weight",
        "vocab_layer_norm.bias": "cls.predictions.transform.LayerNorm.bias",
        "vocab_projector.bias": "cls.predictions.bias",
    }
    for i, j in enumerate(layer_map):
        for student_module, teacher_module in BERT_LAYER_PAIRS.items():
            for kind in ("weight", "bias"):
                pairs[f"distilbert.transformer.layer.{i}.{student_module}.{kind}"] = (
                    f"bert.encoder.layer.{j}.{teacher_module}.{kind}"
                )
    for student_name, teacher_name in pairs.items():
        assert torch.equal(s[student_name], t[teacher_name]), student_name
    embeddings = teacher.bert.embeddings  # segment 0's token-type row folded into the positions
    folded = embeddings.position_embeddings.weight + embeddings.token_type_embeddings.weight[0]
    assert torch.equal(student.distilbert.embeddings.position_embeddings.weight, folded)
    assert student.vocab_projector.weight is student.distilbert.embeddings.word_embeddings.weight  # tied
    return set(pairs) | {"distilbert.embeddings.position_embeddings.weight"}


def assert_same_architecture_copy(student, teacher, layer_map, model_type) -> set[str]:
    """Student of the teacher's class: layer i is teacher layer layer_map[i], every other tensor the teacher's."""
    checked = set()
    student_layers, teacher_layers = LAYERS[model_type](student), LAYERS[model_type](teacher)
    layer_prefix = next(name for name, module in student.named_modules() if module is student_layers)
    for i, j in enumerate(layer_map):
        teacher_layer = dict(teacher_layers[j].named_parameters())
        for name, tensor in student_layers[i].named_parameters():
            assert torch.equal(tensor, teacher_layer[name]), f"student layer {i} {name} (teacher layer {j})"
            checked.add(f"{layer_prefix}.{i}.{name}")
    teacher_params = dict(teacher.named_parameters())
    for name, tensor in student.named_parameters():
        if not name.startswith(f"{layer_prefix}."):
            assert torch.equal(tensor, teacher_params[name]), name
            checked.add(name)
    return checked


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_student_tensor_equals_the_teacher_tensor_it_came_from(model_type):
    teacher = tiny_language_model(model_type, num_layers=4)
    student = build_student(teacher, num_layers=2, layer_map=[1, 3])
    if model_type == "bert":
        checked = assert_bert_copy(student, teacher, [1, 3])
        assert student.config.model_type == "distilbert"
    else:
        checked = assert_same_architecture_copy(student, teacher, [1, 3], model_type)
        assert type(student) is type(teacher) and student.config.model_type == model_type
    assert checked == {name for name, _ in student.named_parameters()}  # no student parameter left unchecked
    assert student.config.distil_layer_map == [1, 3]


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_a_student_with_all_teacher_layers_computes_the_teacher_logits(model_type):
    teacher = tiny_language_model(model_type, num_layers=4)
    student = build_student(teacher, num_layers=4, layer_map=[0, 1, 2, 3]).eval()
    batch = masked_batch()
    args = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        torch.testing.assert_close(student(**args).logits, teacher(**args).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_the_parts_compose_to_the_models_own_logits(model_type):
    teacher = tiny_language_model(model_type, num_layers=4)
    batch = masked_batch()
    for model in (teacher, build_student(teacher).eval()):
        parts = model_parts(model)
        with torch.no_grad():
            expected = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            hidden = parts.encode(batch["input_ids"], batch["attention_mask"])
            torch.testing.assert_close(parts.vocab_head(hidden), expected, atol=1e-5, rtol=1e-5)
        weight, _ = parts.output_projection()
        assert weight is model.get_input_embeddings().weight  # the tied projection, not a copy


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_random_init_keeps_the_architecture_but_not_the_weights(model_type):
    teacher = tiny_language_model(model_type, num_layers=4)
    student = build_student(teacher, init="random")
    assert student.config.model_type == teacher_family(teacher.config).student_config(teacher.config, [0, 3]).model_type
    teacher_embeddings = teacher.get_input_embeddings().weight
    assert student.get_input_embeddings().weight.shape == teacher_embeddings.shape
    assert not torch.equal(student.get_input_embeddings().weight, teacher_embeddings)


@pytest.mark.parametrize("model_type", CAUSAL_TYPES)
def test_an_untied_output_projection_is_copied_and_stays_untied(model_type):
    teacher = tiny_causal_lm(model_type, num_layers=4, tied=False)
    assert not torch.equal(teacher.lm_head.weight, teacher.get_input_embeddings().weight)
    student = build_student(teacher, num_layers=2)
    checked = assert_same_architecture_copy(student, teacher, [0, 3], model_type)
    assert "lm_head.weight" in checked and checked == {name for name, _ in student.named_parameters()}
    assert student.lm_head.weight is not student.get_input_embeddings().weight
    weight, bias = model_parts(student).output_projection()
    assert weight is student.lm_head.weight and torch.equal(bias, torch.zeros(len(weight)))  # no bias: zeros


def test_llama_layout_students_keep_heads_key_value_heads_and_rope_and_qwen_layer_kinds():
    teacher = tiny_causal_lm("qwen2", num_layers=4)  # sliding-window attention from layer 2 on
    assert teacher.config.layer_types == ["full_attention", "full_attention", "sliding_attention", "sliding_attention"]
    student = build_student(teacher, num_layers=2, layer_map=[1, 2])
    assert student.config.layer_types == ["full_attention", "sliding_attention"]
    for key in ("num_attention_heads", "num_key_value_heads", "hidden_size", "rope_parameters", "sliding_window"):
        assert getattr(student.config, key) == getattr(teacher.config, key), key
    assert student.config.num_key_value_heads < student.config.num_attention_heads  # grouped-query heads kept


def test_modernbert_student_layers_keep_the_attention_of_their_teacher_layers():
    teacher_config = ModernBertConfig(num_hidden_layers=22, global_attn_every_n_layers=3)  # ModernBERT-base's pattern
    family = teacher_family(teacher_config)
    layer_map = family.default_layer_map(22, 11)
    assert layer_map == [0, 2, 4, 6, 8, 10, 13, 15, 17, 19, 21]
    student_config = family.student_config(teacher_config, layer_map)
    global_layers = [i for i, kind in enumerate(student_config.layer_types) if kind == "full_attention"]
    assert global_layers == [0, 3, 7, 10]
    assert student_config.num_hidden_layers == 11 and teacher_config.num_hidden_layers == 22


def test_longest_row_follows_each_familys_positions():
    roberta = RobertaConfig(max_position_embeddings=514, pad_token_id=1)  # roberta-base: positions start at pad + 1
    assert teacher_family(roberta).max_length(roberta) == 512
    bert = AutoConfig.for_model("bert", max_position_embeddings=512)
    assert teacher_family(bert).max_length(bert) == 512
    modernbert = ModernBertConfig(max_position_embeddings=8192)
    assert teacher_family(modernbert).max_length(modernbert) == 8192
    gpt2 = AutoConfig.for_model("gpt2", n_positions=1024)
    assert teacher_family(gpt2).max_length(gpt2) == 1024


def test_an_unsupported_teacher_is_refused_before_any_weights_load(tmp_path):
    OPTConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4).save_pretrained(tmp_path)  # config alone
    supported = sorted(model_type for family in FAMILIES for model_type in family.teacher_types)
    for load in (load_teacher_config, load_teacher):
        with pytest.raises(UnsupportedModelError) as error:
            load(str(tmp_path))
        assert (
            f"the teacher's model_type is 'opt'; supported teachers are language models of model_type "
            f"{supported}" in str(error.value)
        )
    assert supported == [
        "bert",
        "camembert",
        "electra",
        "gpt2",
        "llama",
        "mistral",
        "modernbert",
        "qwen2",
        "qwen3",
        "roberta",
        "xlm-roberta",
    ]


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_the_parameter_count_read_from_a_config_is_the_models_own(model_type):
    teacher = tiny_language_model(model_type, num_layers=4)
    student = build_student(teacher, num_layers=3)
    for model in (teacher, student):
        assert parameter_count(model.config) == sum(p.numel() for p in model.parameters())
