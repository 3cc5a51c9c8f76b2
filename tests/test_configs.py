"""Every experiment composes, and the composed values are the documented ones."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from transformers import BertConfig, ModernBertConfig, RobertaConfig, XLMRobertaConfig

from distil.config_checks import check_distill_config, check_sequence_length, check_student_config
from distil.modules.distillation import DistillationModule
from tests.conftest import CONF_DIR, masked_batch, tiny_masked_lm

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment):
    cfg = compose_train(f"experiment={experiment}")
    for group in ("teacher", "student", "distill", "data", "trainer"):
        assert "_target_" in cfg[group], group


PUBLISHED_TEACHERS = {  # the hub teachers' configs as published (nothing is downloaded here)
    "bert-base-uncased": BertConfig(),  # 512 positions
    "FacebookAI/roberta-base": RobertaConfig(vocab_size=50265, max_position_embeddings=514, pad_token_id=1),
    "FacebookAI/xlm-roberta-base": XLMRobertaConfig(vocab_size=250002, max_position_embeddings=514, pad_token_id=1),
    "answerdotai/ModernBERT-base": ModernBertConfig(num_hidden_layers=22, max_position_embeddings=8192),
}


@pytest.mark.parametrize("experiment", ["distilbert", "distilroberta", "distil_xlmr", "distil_modernbert"])
def test_each_family_recipe_fits_its_teacher_and_keeps_the_published_tokens_per_step(experiment):
    cfg = compose_train(f"experiment={experiment}")
    teacher_config = PUBLISHED_TEACHERS[cfg.teacher.name_or_path]
    check_sequence_length(cfg.data.max_length, teacher_config)
    check_student_config(cfg, teacher_config)
    check_distill_config(cfg)
    rows = cfg.data.batch_size * cfg.trainer.devices * cfg.trainer.num_nodes * cfg.trainer.accumulate_grad_batches
    assert rows * cfg.data.max_length == 4096 * 512  # the published run's tokens per optimizer step
    assert cfg.data.tokenizer == cfg.teacher.name_or_path


def test_experiments_found():
    assert {"demo", "distilbert", "distilroberta", "distil_xlmr", "distil_modernbert"} <= set(EXPERIMENTS)


def test_paper_experiment_values():
    cfg = compose_train("experiment=distilbert")
    assert cfg.teacher.name_or_path == "bert-base-uncased"
    assert cfg.data.tokenizer == "bert-base-uncased"
    assert (cfg.distill.temperature, cfg.distill.alpha_ce, cfg.distill.alpha_mlm, cfg.distill.alpha_cos) == (
        2.0,
        5.0,
        2.0,
        1.0,
    )
    assert cfg.distill.optimizer.lr == 5e-4 and cfg.distill.optimizer.eps == 1e-6
    assert cfg.distill.scheduler.warmup_fraction == 0.05 and cfg.trainer.gradient_clip_val == 5.0
    assert cfg.distill.kl_positions == "all" and cfg.distill.vocab_chunk_rows == 4096
    assert cfg.distill.teacher_dtype == "bfloat16" and cfg.trainer.precision == "bf16-mixed"
    assert cfg.trainer.devices == 8 and cfg.trainer.strategy == "ddp"
    assert cfg.data.batch_size * cfg.trainer.devices * cfg.trainer.accumulate_grad_batches == 4096


def test_an_extra_loss_term_in_the_config_reaches_the_objective():
    cfg = compose_train("distill.alpha_mse=0")
    cfg.distill.extra_terms = [
        {
            "_target_": "distil.modules.objective.LogitsTerm",
            "name": "reverse_kl",
            "weight": 0.5,
            "loss": {"_target_": "tests.modules.test_objective.reverse_kl", "_partial_": True},
        }
    ]
    teacher = tiny_masked_lm()
    module = instantiate(cfg.distill)(teacher=teacher, student=instantiate(cfg.student)(teacher=teacher))
    assert [(term.name, term.weight) for term in module.logits_terms] == [
        ("ce", 5.0),
        ("mlm", 2.0),
        ("reverse_kl", 0.5),
    ]
    assert "extra_terms" not in module.hparams  # functions stay out of the checkpoint's plain hyperparameters
    assert "reverse_kl" in module.eval().distillation_losses(masked_batch())


def test_command_line_overrides_reach_the_config():
    cfg = compose_train("distill.temperature=4", "trainer.devices=2", "trainer.precision=bf16-mixed")
    assert cfg.distill.temperature == 4 and cfg.trainer.devices == 2 and cfg.trainer.precision == "bf16-mixed"


def test_demo_is_the_default_and_instantiates_the_objects():
    cfg = compose_train("distill.temperature=3")
    assert cfg.student.num_layers is None and cfg.student.init == "teacher"
    teacher = tiny_masked_lm()
    student = instantiate(cfg.student)(teacher=teacher)
    module = instantiate(cfg.distill)(teacher=teacher, student=student)
    assert isinstance(module, DistillationModule)
    assert module.hparams.temperature == 3.0 and module.hparams.kl_positions == cfg.distill.kl_positions
    optimizer = module.optimizer_factory(student.parameters())
    assert optimizer.defaults["lr"] == 5e-4 and tuple(optimizer.defaults["betas"]) == (0.9, 0.999)
