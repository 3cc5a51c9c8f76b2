"""Every experiment composes, and the composed values are the documented ones."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from distil.modules.distillation import DistillationModule
from tests.conftest import CONF_DIR, tiny_bert

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment):
    cfg = compose_train(f"experiment={experiment}")
    for group in ("teacher", "student", "distill", "data", "trainer"):
        assert "_target_" in cfg[group], group
    assert cfg.data.max_length <= 512


def test_experiments_found():
    assert {"demo", "distilbert"} <= set(EXPERIMENTS)


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


def test_command_line_overrides_reach_the_config():
    cfg = compose_train("distill.temperature=4", "trainer.devices=2", "trainer.precision=bf16-mixed")
    assert cfg.distill.temperature == 4 and cfg.trainer.devices == 2 and cfg.trainer.precision == "bf16-mixed"


def test_demo_is_the_default_and_instantiates_the_objects():
    cfg = compose_train("distill.temperature=3")
    assert cfg.student.num_layers is None and cfg.student.init == "teacher"
    teacher = tiny_bert()
    student = instantiate(cfg.student)(teacher=teacher)
    module = instantiate(cfg.distill)(teacher=teacher, student=student)
    assert isinstance(module, DistillationModule)
    assert module.temperature == 3.0 and module.kl_positions == cfg.distill.kl_positions
    optimizer = module.optimizer_factory(student.parameters())
    assert optimizer.defaults["lr"] == 5e-4 and tuple(optimizer.defaults["betas"]) == (0.9, 0.999)
