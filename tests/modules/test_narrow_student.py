"""Narrow students: a student shape in config for every family, the width-mismatch errors before any weights load, the
internal terms (hidden-state MSE through projections, attention KL, MiniLM v2 relations) by hand from the models'
own outputs, and a narrow run whose projections train, resume bitwise and stay out of the exported student."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForMaskedLM

from distil.exporting.checkpoint_export import read_checkpoint, student_from_checkpoint
from distil.modules.distillation import DistillationModule
from distil.modules.losses import relation_kl_loss
from distil.modules.student import build_student, student_model_config
from distil.run.config_checks import check_student_config
from distil.train import train
from tests.conftest import (
    CAUSAL_TYPES,
    FAMILY_TYPES,
    assert_logged_terms_weigh_into_the_loss,
    compose_config,
    masked_batch,
    tiny_language_model,
    tiny_run_overrides,
)

NARROW = dict(hidden_size=16, num_attention_heads=2, intermediate_size=24)  # half the tiny teachers' width of 32


def internal_module(teacher, student, **weights) -> DistillationModule:
    return DistillationModule(teacher, student, optimizer=torch.optim.AdamW, alpha_cos=0.0, **weights)


@pytest.mark.parametrize("model_type", FAMILY_TYPES + CAUSAL_TYPES)
def test_every_family_builds_a_narrow_random_student_of_the_asked_shape(model_type):
    teacher = tiny_language_model(model_type, num_layers=4)
    student = build_student(teacher, num_layers=2, init="random", **NARROW)
    config = student.config
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers) == (16, 2, 2)
    embeddings = student.get_input_embeddings().weight
    assert embeddings.shape[0] == teacher.config.vocab_size
    if model_type != "electra":  # ELECTRA's embeddings keep their own width, projected up to the layers'
        assert embeddings.shape[1] == 16
    inputs = masked_batch()
    with torch.no_grad():
        logits = student(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    assert logits.shape == (*inputs["input_ids"].shape, teacher.config.vocab_size)
    feed_forward = [p for n, p in student.named_parameters() if p.ndim == 2 and 24 in p.shape and 16 in p.shape]
    assert feed_forward, "no 16 x 24 feed-forward weight: intermediate_size was not applied"


def test_defaults_keep_the_teachers_heads_and_feed_forward_ratio_and_grouped_query_ratio():
    bert = tiny_language_model("bert").config
    config, _ = student_model_config(bert, 2, None, "random", hidden_size=16)
    assert (config.dim, config.n_heads, config.hidden_dim) == (16, 4, 32)  # 64 / 32 x 16
    llama = tiny_language_model("llama").config  # 4 query heads over 2 key-value heads
    config, _ = student_model_config(llama, 2, None, "random", hidden_size=48, num_attention_heads=6)
    assert (config.num_key_value_heads, config.head_dim, config.intermediate_size) == (3, 8, 96)


@pytest.mark.parametrize(
    ("init", "width", "message"),
    [
        ("teacher", dict(hidden_size=16), r"student.init=teacher .* student.hidden_size=16 \(teacher 32\)"),
        ("teacher", dict(num_attention_heads=2), r"student.num_attention_heads=2 \(teacher 4\)"),
        ("random", dict(hidden_size=18), r"student.hidden_size=18 is not divisible by the teacher's 4 attention heads"),
        ("random", dict(hidden_size=16, num_attention_heads=3), r"num_attention_heads=3 does not divide .*=16"),
        ("random", dict(hidden_size=0), r"student.hidden_size=0 is not allowed"),
    ],
)
def test_a_bad_shape_is_refused_from_the_config_alone(init, width, message):
    with pytest.raises(ValueError, match=message):
        student_model_config(tiny_language_model("bert").config, 2, None, init, **width)


def test_grouped_query_heads_must_keep_whole_groups():
    with pytest.raises(ValueError, match=r"num_attention_heads=3 is not a multiple of the teacher's 2 query heads"):
        student_model_config(
            tiny_language_model("llama").config, 2, None, "random", hidden_size=24, num_attention_heads=3
        )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["distill.alpha_attention=1", "student.num_attention_heads=2"], r"alpha_attention=1.* 2 heads .* teacher 4"),
        (["distill.alpha_relation=1", "distill.relation_heads=3"], r"distill.relation_heads=3 is not allowed"),
        (["distill.alpha_relation=1", "distill.relation_heads=0"], r"relation_heads=0 .* student queries 16"),
        (["distill.alpha_relation=1", "distill.relation_teacher_layer=4"], r"relation_teacher_layer=4 is not allowed"),
        (["distill.alpha_hidden_mse=1", "distill.layer_targets=[3,1]"], r"distill.layer_targets=\[3, 1\] must be"),
        (["distill.alpha_cos=1"], r"distill.alpha_cos=1 needs the student's hidden size"),
    ],
)
def test_the_run_check_refuses_internal_terms_that_do_not_fit_before_weights_load(overrides, message, tiny_teacher_dir):
    narrow = ["student.init=random", "student.num_layers=2", "student.hidden_size=16", "distill.alpha_cos=0"]
    cfg = compose_config("train", f"teacher.name_or_path={tiny_teacher_dir}", *narrow, *overrides)
    with pytest.raises(ValueError, match=message):
        check_student_config(cfg, AutoConfig.from_pretrained(tiny_teacher_dir))


def eager_twin(model):
    """The same weights with the eager attention, whose `output_attentions` are the reference maps."""
    twin = type(model)._from_config(model.config, attn_implementation="eager")
    twin.load_state_dict(model.state_dict())
    return twin.eval()


def test_internal_terms_equal_their_definitions_on_the_models_own_outputs():
    teacher = tiny_language_model("bert", num_layers=4)
    student = build_student(teacher, num_layers=2, init="random", hidden_size=16).eval()
    module = internal_module(
        teacher, student, alpha_hidden_mse=1.0, alpha_attention=1.0, alpha_relation=1.0, relation_heads=2
    )
    inputs = masked_batch()
    inputs["attention_mask"][0, 12:] = 0  # one padded row: the terms cover real tokens only
    losses = module.distillation_losses(inputs)

    real = inputs["attention_mask"].flatten().bool()
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    with torch.no_grad():
        t = eager_twin(teacher).base_model(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        s = eager_twin(student).base_model(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        projections = module.internal_terms.hidden_projections
        pairs = [(0, 0), (1, 2), (2, 4)]  # embeddings; student layers 0, 1 -> teacher layers 1, 3 (TinyBERT's map)
        hidden = [
            F.mse_loss(projections[i](s.hidden_states[a].flatten(0, 1)[real]), t.hidden_states[b].flatten(0, 1)[real])
            for i, (a, b) in enumerate(pairs)
        ]
        attention = []
        for student_layer, teacher_layer in ((0, 1), (1, 3)):
            p, q = t.attentions[teacher_layer], s.attentions[student_layer]  # (B, H, L, L)
            kl = (p * (p.clamp_min(1e-30).log() - q.clamp_min(1e-30).log())).sum(-1).mean(1).flatten()
            attention.append(kl[real].mean())
    assert losses["hidden_mse"].item() == pytest.approx(torch.stack(hidden).mean().item(), rel=1e-5)
    assert losses["attention"].item() == pytest.approx(torch.stack(attention).mean().item(), rel=1e-4)
    weighted = 5 * losses["kl"] + 2 * losses["label"] + sum(losses[k] for k in ("hidden_mse", "attention", "relation"))
    assert losses["loss"].item() == pytest.approx(weighted.item(), rel=1e-6)
    assert losses["relation"].item() > 0


def test_the_relation_term_reads_the_teachers_chosen_layer_and_the_students_last():
    teacher = tiny_language_model("bert", num_layers=4)
    student = build_student(teacher, num_layers=2, init="random", hidden_size=16).eval()
    inputs = masked_batch()
    terms = {}
    for layer in (1, 3):
        module = internal_module(teacher, student, alpha_relation=1.0, relation_teacher_layer=layer, relation_heads=2)
        terms[layer] = module.distillation_losses(inputs)["relation"]
        student_taps, teacher_taps = module.internal_terms.student_taps, module.internal_terms.teacher_taps
        assert list(student_taps.modules) == [1] and list(teacher_taps.modules) == [layer]
    assert terms[1].item() != pytest.approx(terms[3].item(), rel=1e-3)


def test_a_student_equal_to_its_teacher_has_zero_internal_terms():
    teacher = tiny_language_model("roberta", num_layers=2)
    student = build_student(teacher, num_layers=2, init="teacher").eval()  # no dropout
    module = internal_module(teacher, student, alpha_attention=1.0, alpha_relation=1.0, layer_targets=[0, 1])
    losses = module.distillation_losses(masked_batch())
    assert losses["attention"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["relation"].item() == pytest.approx(0.0, abs=1e-6)


def test_gradients_reach_the_projections_and_the_student_and_the_optimizer_holds_both():
    teacher = tiny_language_model("bert", num_layers=4)
    student = build_student(teacher, num_layers=2, init="random", hidden_size=16)
    module = internal_module(teacher, student, alpha_hidden_mse=1.0, alpha_kl=0.0, alpha_label=0.0)
    module.distillation_losses(masked_batch())["loss"].backward()
    projections = module.internal_terms.hidden_projections
    assert len(projections) == 3 and all(p.weight.shape == (32, 16) for p in projections)
    assert all(p.weight.grad.abs().sum() > 0 for p in projections)
    assert student.get_input_embeddings().weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    trainable = {id(p) for p in module.trainable_parameters()}
    assert {id(p) for p in projections.parameters()} <= trainable and len(trainable) == len(
        list(student.parameters())
    ) + len(list(projections.parameters()))


def narrow_overrides(teacher_dir, corpus_dir, steps: int) -> list[str]:
    return [
        *tiny_run_overrides(teacher_dir, corpus_dir, steps=steps, checkpoint_every=2),
        "logger=csv",
        "student.init=random",
        "student.hidden_size=16",
        "distill.alpha_cos=0",
        "distill.alpha_hidden_mse=1",
        "distill.alpha_attention=1",
        "distill.alpha_relation=1",
        "distill.relation_heads=2",
        "callbacks.model_checkpoint.save_top_k=-1",
    ]


@pytest.fixture(scope="module")
def narrow_run(tmp_path_factory, tiny_teacher_dir, tiny_corpus_dir):
    """A 4-step narrow run with every internal term (checkpoints at steps 2 and 4), in this process."""
    run_dir = tmp_path_factory.mktemp("narrow")
    train(
        compose_config("train", *narrow_overrides(tiny_teacher_dir, tiny_corpus_dir, 4), f"paths.output_dir={run_dir}")
    )
    return run_dir


def test_a_narrow_run_logs_each_internal_term_in_its_loss(narrow_run):
    weights = {"kl": 5.0, "label": 2.0, "hidden_mse": 1.0, "attention": 1.0, "relation": 1.0}
    assert_logged_terms_weigh_into_the_loss(narrow_run, 4, weights)


def test_the_exported_narrow_student_loads_without_the_projections(narrow_run):
    checkpoint = read_checkpoint(narrow_run / "checkpoints" / "last.ckpt")
    projection_keys = [k for k in checkpoint["state_dict"] if k.startswith("internal_terms.hidden_projections.")]
    assert len(projection_keys) == 2 * 3  # weight and bias of the embeddings' pair and of each of the 2 layers
    student, info = AutoModelForMaskedLM.from_pretrained(narrow_run / "student", output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert student.config.hidden_size == 16
    exported = student_from_checkpoint(checkpoint).state_dict()
    assert set(exported) == set(student.state_dict()) and not any("projection" in k for k in exported)


def test_a_resumed_narrow_run_restores_the_projections_bitwise(narrow_run, tiny_teacher_dir, tiny_corpus_dir, tmp_path):
    overrides = narrow_overrides(tiny_teacher_dir, tiny_corpus_dir, 4)
    step2 = narrow_run / "checkpoints" / "step0000002.ckpt"
    train(compose_config("train", *overrides, f"ckpt_path={step2}", f"paths.output_dir={tmp_path}"))
    uninterrupted = read_checkpoint(narrow_run / "checkpoints" / "last.ckpt")["state_dict"]
    resumed = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["state_dict"]
    at_step2 = read_checkpoint(step2)["state_dict"]
    assert set(resumed) == set(uninterrupted)
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed[name], tensor), name
    moved = [k for k in uninterrupted if "projection" in k and not torch.equal(uninterrupted[k], at_step2[k])]
    assert len(moved) == 6  # the projections trained between steps 2 and 4, and the resume reproduced them


def test_relation_loss_is_what_the_module_logs_from_the_taps():
    """The module's relation term is `relation_kl_loss` of the student's last layer and the teacher's chosen layer
    at the real tokens (one definition, in losses.py)."""
    teacher = tiny_language_model("bert", num_layers=4)
    student = build_student(teacher, num_layers=2, init="random", hidden_size=16).eval()
    module = internal_module(teacher, student, alpha_relation=1.0, relation_heads=4)
    inputs = masked_batch()
    logged = module.distillation_losses(inputs)["relation"]
    with torch.no_grad():
        module.student_parts.encode(inputs["input_ids"], inputs["attention_mask"])
        module.teacher_parts.encode(inputs["input_ids"], inputs["attention_mask"])
    s, t = module.internal_terms.student_taps.take()[1], module.internal_terms.teacher_taps.take()[3]
    expected = relation_kl_loss((s.query, s.key, s.value), (t.query, t.key, t.value), 4, s.allowed, t.allowed)
    real = inputs["attention_mask"].flatten().bool()
    assert logged.item() == pytest.approx(expected.flatten()[real].mean().item(), rel=1e-5)


@pytest.mark.parametrize(("experiment", "millions"), [("minilm", 22.7), ("tinybert", 14.5)])
def test_the_narrow_recipes_build_students_of_the_published_size(experiment, millions):
    """MiniLM-L6-H384 (all-MiniLM-L6-v2's 22.7M parameters) and TinyBERT-4 (14.5M) from bert-base-uncased's config."""
    from transformers import BertConfig

    cfg = compose_config("train", f"experiment={experiment}")
    width = {key: cfg.student[key] for key in ("hidden_size", "num_attention_heads", "intermediate_size")}
    config, _ = student_model_config(BertConfig(), cfg.student.num_layers, None, cfg.student.init, **width)
    parameters = sum(p.numel() for p in AutoModelForMaskedLM.from_config(config).parameters()) / 1e6
    assert parameters == pytest.approx(millions, rel=0.01)


def test_teacher_embeddings_are_the_teachers_table_on_its_leading_principal_directions():
    """`init=teacher_embeddings` keeps the most variance a linear map to the narrower width can (Eckart-Young): the
    variance of the student's table is the top singular values' share of the teacher's."""
    teacher = tiny_language_model("bert", num_layers=4)
    student = build_student(teacher, num_layers=2, init="teacher_embeddings", hidden_size=16)
    table = teacher.get_input_embeddings().weight.detach()
    projected = student.get_input_embeddings().weight.detach()
    singular = torch.linalg.svdvals(table - table.mean(dim=0))
    kept = (projected - projected.mean(dim=0)).square().sum()
    assert kept.item() == pytest.approx(singular[:16].square().sum().item(), rel=1e-4)
    assert kept.item() < 0.99 * singular.square().sum().item()
    assert torch.equal(student.vocab_projector.weight, student.get_input_embeddings().weight)  # tied: the head too
    with pytest.raises(ValueError, match=r"teacher_embeddings .* student.hidden_size=64 is above the teacher's 32"):
        student_model_config(teacher.config, 2, None, "teacher_embeddings", hidden_size=64, num_attention_heads=4)


@pytest.mark.parametrize("model_type", ["modernbert", "llama", "gpt2"])
def test_every_internal_term_trains_a_narrow_student_of_other_layouts(model_type):
    """Rotary positions and sliding windows (ModernBERT), grouped-query heads (Llama), GPT-2's fused projection:
    each term is finite and > 0, and the step's gradient reaches the student, the projections and nothing of the
    teacher."""
    teacher = tiny_language_model(model_type, num_layers=4)
    student = build_student(teacher, num_layers=2, init="random", hidden_size=16, num_attention_heads=4)
    weights = dict(alpha_hidden_mse=1.0, alpha_attention=1.0, alpha_relation=1.0, relation_heads=2)
    module = internal_module(teacher, student, **weights)
    losses = module.distillation_losses(masked_batch())
    assert all(torch.isfinite(losses[k]) and losses[k] > 0 for k in ("hidden_mse", "attention", "relation"))
    losses["loss"].backward()
    attention = module.student_parts.attention_module(1)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in attention.parameters())
    assert all(p.weight.grad.abs().sum() > 0 for p in module.internal_terms.hidden_projections)
    assert all(p.grad is None for p in teacher.parameters())
