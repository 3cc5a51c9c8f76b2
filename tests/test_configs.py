"""Every experiment composes, and the composed values are the documented ones."""

import pytest
from hydra.utils import instantiate
from transformers import BertConfig, GPT2Config, LlamaConfig, ModernBertConfig, RobertaConfig, XLMRobertaConfig

from distil.modules.distillation import DistillationModule
from distil.run.config_checks import check_distill_config, check_sequence_length, check_student_config
from tests.conftest import CONF_DIR, compose_config, masked_batch, tiny_masked_lm

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment):
    cfg = compose_config("train", f"experiment={experiment}")
    for group in ("teacher", "student", "distill", "data", "trainer"):
        assert "_target_" in cfg[group], group


PUBLISHED_TEACHERS = {  # the hub teachers' configs as published (nothing is downloaded here)
    "bert-base-uncased": BertConfig(),  # 512 positions
    "FacebookAI/roberta-base": RobertaConfig(vocab_size=50265, max_position_embeddings=514, pad_token_id=1),
    "FacebookAI/xlm-roberta-base": XLMRobertaConfig(vocab_size=250002, max_position_embeddings=514, pad_token_id=1),
    "answerdotai/ModernBERT-base": ModernBertConfig(num_hidden_layers=22, max_position_embeddings=8192),
    "gpt2": GPT2Config(),  # 12 layers, 1024 positions, 50,257 tokens
    "HuggingFaceTB/SmolLM2-360M": LlamaConfig(
        vocab_size=49152,
        hidden_size=960,
        intermediate_size=2560,
        num_hidden_layers=32,
        num_attention_heads=15,
        num_key_value_heads=5,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
    ),
}
RECIPE_TOKENS = {  # tokens per optimizer step: each recipe's published batch (DistilBERT's 4096 x 512 for its kin)
    "distilbert": 4096 * 512,
    "distilroberta": 4096 * 512,
    "distil_xlmr": 4096 * 512,
    "distil_modernbert": 4096 * 512,
    "distilgpt2": 2048 * 1024,
    "distil_llama": 1024 * 2048,
    "minilm": 1024 * 512,  # MiniLM v2's 1,024 rows of 512 tokens
    "tinybert": 256 * 128,  # TinyBERT's general distillation: 256 rows of 128 tokens
}


@pytest.mark.parametrize("experiment", sorted(RECIPE_TOKENS))
def test_each_family_recipe_fits_its_teacher_and_keeps_the_published_tokens_per_step(experiment):
    cfg = compose_config("train", f"experiment={experiment}")
    teacher_config = PUBLISHED_TEACHERS[cfg.teacher.name_or_path]
    check_sequence_length(cfg.data.max_length, teacher_config)
    check_student_config(cfg, teacher_config)
    check_distill_config(cfg)
    rows = cfg.data.batch_size * cfg.trainer.devices * cfg.trainer.num_nodes * cfg.trainer.accumulate_grad_batches
    assert rows * cfg.data.max_length == RECIPE_TOKENS[experiment]
    assert cfg.data.tokenizer == cfg.teacher.name_or_path


def test_experiments_found():
    assert {"demo", "distilbert", "distilroberta", "distil_xlmr", "distil_modernbert"} <= set(EXPERIMENTS)


def test_an_extra_loss_term_in_the_config_reaches_the_objective():
    cfg = compose_config("train", "distill.alpha_mse=0")
    cfg.distill.extra_terms = [
        {
            "_target_": "distil.modules.objective.LogitsTerm",
            "name": "reverse_kl",
            "weight": 0.5,
            "loss": {"_target_": "distil.modules.losses.reverse_kl_loss", "_partial_": True},
        }
    ]
    teacher = tiny_masked_lm()
    module = instantiate(cfg.distill)(teacher=teacher, student=instantiate(cfg.student)(teacher=teacher))
    assert [(term.name, term.weight) for term in module.logits_terms] == [
        ("kl", 5.0),
        ("label", 2.0),
        ("reverse_kl", 0.5),
    ]
    assert "extra_terms" not in module.hparams  # functions stay out of the checkpoint's plain hyperparameters
    assert "reverse_kl" in module.eval().distillation_losses(masked_batch())


def test_the_default_config_instantiates_the_objects_with_its_values():
    cfg = compose_config("train", "distill.temperature=3", "distill.speed.vocab_chunk_rows=16")
    teacher = tiny_masked_lm()
    student = instantiate(cfg.student)(teacher=teacher)
    module = instantiate(cfg.distill)(teacher=teacher, student=student)
    assert isinstance(module, DistillationModule) and student.config.num_hidden_layers == 2
    assert module.hparams.temperature == 3.0 and module.speed.vocab_chunk_rows == 16
    optimizer = module.optimizer_factory(student.parameters())
    assert (
        optimizer.defaults["lr"] == cfg.distill.optimizer.lr and optimizer.defaults["eps"] == cfg.distill.optimizer.eps
    )
