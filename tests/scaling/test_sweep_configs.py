"""The sweep configs compose: W&B sweep commands become Hydra overrides, the hparams_search spaces name existing
keys, the SLURM launcher takes its size from the trainer."""

from __future__ import annotations

import csv
import importlib.util
import sys

import pytest
import yaml
from omegaconf import OmegaConf
from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

from distil.run import extras
from tests.conftest import CONF_DIR, compose_config, run_cli, tiny_run_overrides

SWEEPS = sorted((CONF_DIR / "sweeps").glob("*.yaml"))


def sample_value(spec: dict):
    """A value the W&B controller could send for one parameter: the last listed value, or the upper bound."""
    return spec["values"][-1] if "values" in spec else spec["max"]


def render_agent_command(sweep: dict, values: dict) -> list[str]:
    """The command `wandb agent` runs for these parameter values (its macro expansion,
    wandb_agent.Agent._command_run)."""
    macros = create_sweep_command_args({"args": {name: {"value": value} for name, value in values.items()}})
    macros.update(env=["/usr/bin/env"], interpreter=["python"], program=[sweep["program"]])
    command = []
    for chunk in create_sweep_command(list(sweep["command"])):
        command += macros[chunk[2:-1]] if chunk.startswith("${") and chunk.endswith("}") else [chunk]
    return command


@pytest.mark.parametrize("sweep_file", SWEEPS, ids=lambda p: p.stem)
def test_wandb_sweep_command_composes_with_the_sampled_values(sweep_file):
    sweep = yaml.safe_load(sweep_file.read_text())
    values = {name: sample_value(spec) for name, spec in sweep["parameters"].items()}
    command = render_agent_command(sweep, values)
    assert command[:4] == ["/usr/bin/env", "python", "-m", "distil.train"]
    overrides = command[4:]
    assert overrides[-len(values) :] == [f"{name}={value}" for name, value in values.items()]
    cfg = compose_config("train", *overrides)
    for name, value in values.items():
        assert OmegaConf.select(cfg, name) == pytest.approx(value), name
    assert set(cfg.logger) == {"csv", "wandb"}
    assert sweep["metric"]["name"] == cfg.optimized_metric


def test_bayes_sweep_renders_exact_overrides():
    sweep = yaml.safe_load((CONF_DIR / "sweeps" / "distill_bayes.yaml").read_text())
    command = render_agent_command(sweep, {"distill.temperature": 3.5, "distill.optimizer.lr": 0.0002})
    assert command[4:] == ["logger=csv_wandb", "distill.temperature=3.5", "distill.optimizer.lr=0.0002"]
    cfg = compose_config("train", *command[4:])
    assert cfg.distill.temperature == 3.5 and cfg.distill.optimizer.lr == 2e-4


def test_grid_search_space_names_existing_keys():
    cfg = compose_config("train", "hparams_search=distill_grid", with_hydra=True)
    params = cfg.hydra.sweeper.params
    assert cfg.hydra.sweeper._target_.endswith("BasicSweeper")
    assert {name: str(values) for name, values in params.items()} == {
        "distill.temperature": "1.0,2.0,4.0,8.0",
        "distill.alpha_kl": "2.0,5.0",
        "distill.optimizer.lr": "1.0e-4,5.0e-4",
    }
    for name in params:
        assert OmegaConf.select(cfg, name) is not None, name
    assert cfg.optimized_metric == "val/student_mlm_acc"


NEEDS_OPTUNA_PLUGIN = pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None,
    reason="hydra-optuna-sweeper not installed (pip install -e '.[optuna]'; needs optuna<3)",
)


@NEEDS_OPTUNA_PLUGIN
def test_optuna_search_space_names_existing_keys():
    cfg = compose_config("train", "hparams_search=distill_optuna", with_hydra=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize" and sweeper.n_trials == 24
    assert set(sweeper.params) == {
        "distill.temperature",
        "distill.alpha_kl",
        "distill.alpha_label",
        "distill.alpha_cos",
        "distill.optimizer.lr",
    }
    for name in sweeper.params:
        assert OmegaConf.select(cfg, name) is not None, name


@NEEDS_OPTUNA_PLUGIN
@pytest.mark.parametrize("accumulate", [1, 2, 4])
def test_every_trial_of_the_demo_recipe_search_trains_the_same_micro_batches_and_scores_unseen_text_once(accumulate):
    cfg = compose_config(
        "train", "hparams_search=demo_recipe", f"trainer.accumulate_grad_batches={accumulate}", with_hydra=True
    )
    trainer = cfg.trainer
    assert trainer.max_steps * accumulate == trainer.val_check_interval == 100  # one validation, after the budget
    assert [source.name for source in cfg.data.validation_sources] == ["squad_dev", "conll_test"]
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    for name in cfg.hydra.sweeper.params:
        assert OmegaConf.select(cfg, name) is not None, name


@NEEDS_OPTUNA_PLUGIN
def test_optuna_search_runs_its_trials_keeps_the_best_returned_metric_and_resumes_its_stored_study(
    tmp_path, tiny_teacher_dir, tiny_corpus_dir
):
    """Two TPE trials of tiny runs: each job returns its last val/student_mlm_loss, Optuna keeps the lower one. The
    study is kept in SQLite (`hydra.sweeper.storage`), so a second sweep of one trial continues it: three trials."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"

    def sweep(sweep_dir, n_trials):
        result = run_cli(
            tmp_path,
            "-m",
            "hparams_search=distill_optuna",
            f"hydra.sweeper.n_trials={n_trials}",
            "hydra.sweeper.sampler.n_startup_trials=2",
            "hydra.sweeper.direction=minimize",
            f"hydra.sweeper.storage={storage}",
            "optimized_metric=val/student_mlm_loss",
            *tiny_run_overrides(tiny_teacher_dir, tiny_corpus_dir, 2),
            "logger=csv",
            f"hydra.sweep.dir={sweep_dir}",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())

    best = sweep(tmp_path / "sweep", 2)
    final_losses, temperatures = [], []
    for job in ("0", "1"):
        with open(tmp_path / "sweep" / job / "csv" / "metrics.csv", newline="") as file:
            rows = [row for row in csv.DictReader(file) if row.get("val/student_mlm_loss")]
        final_losses.append(float(rows[-1]["val/student_mlm_loss"]))
        job_config = yaml.safe_load((tmp_path / "sweep" / job / ".hydra" / "config.yaml").read_text())
        temperatures.append(job_config["distill"]["temperature"])
    assert temperatures[0] != temperatures[1] and all(1.0 <= t <= 8.0 for t in temperatures)  # sampled from the space
    assert best["best_value"] == pytest.approx(min(final_losses), rel=1e-6)
    assert best["best_params"]["distill.temperature"] == temperatures[final_losses.index(min(final_losses))]

    resumed_best = sweep(tmp_path / "resumed", 1)
    study = optuna.load_study(study_name="distil", storage=storage)
    values = [trial.value for trial in study.trials]
    assert len(values) == 3 and values[:2] == pytest.approx(final_losses, rel=1e-6)
    assert resumed_best["best_value"] == pytest.approx(min(values), rel=1e-6)


def test_slurm_launcher_is_sized_by_the_trainer():
    cfg = compose_config(
        "train", "hydra/launcher=slurm", "trainer=ddp_multinode", "trainer.num_nodes=4", with_hydra=True
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (4, 8, 8)


TRAINERS = sorted(p.stem for p in (CONF_DIR / "trainer").glob("*.yaml") if p.stem != "default")


@pytest.mark.parametrize("trainer", TRAINERS)
def test_every_trainer_with_several_processes_shards_the_data_itself(trainer):
    """The data module splits the stream over (rank, worker) slots itself: a config with several processes must run
    DDP without Lightning's distributed sampler (which would shard an already sharded stream)."""
    cfg = compose_config("train", f"trainer={trainer}")
    if cfg.trainer.devices * cfg.trainer.num_nodes > 1:
        assert cfg.trainer.strategy == "ddp" and cfg.trainer.use_distributed_sampler is False


def test_global_batch_of_the_paper_run_on_two_nodes():
    """32 sequences x 8 GPUs x 2 nodes x 8 accumulated micro-batches = the paper's 4096 (ddp.yaml's rule)."""
    cfg = compose_config("train", "experiment=distilbert", "trainer=ddp_multinode", "trainer.accumulate_grad_batches=8")
    t = cfg.trainer
    assert cfg.data.batch_size * t.devices * t.num_nodes * t.accumulate_grad_batches == 4096


@pytest.mark.parametrize(
    "argument", ["hparams_search=distill_optuna", "hparams_search=demo_recipe", "hydra/sweeper=optuna"]
)
def test_a_search_whose_sweeper_is_not_installed_names_the_extra(argument, monkeypatch):
    monkeypatch.setattr(extras, "module_found", lambda name: name != "optuna")
    with pytest.raises(ImportError, match=rf"{argument} needs the optuna sweeper, and \['optuna'\] are not installed"):
        extras.check_sweeper_installed(["-m", argument, "trainer.max_steps=2"])
    extras.check_sweeper_installed(["-m", "hparams_search=distill_grid"])  # Hydra's own basic sweeper


def test_the_training_command_names_the_missing_extra_before_hydra_starts(tmp_path):
    blocked = "import sys, runpy; sys.modules['optuna'] = None; sys.argv[0] = 'train'; "
    command = [sys.executable, "-c", blocked + "runpy.run_module('distil.train', run_name='__main__')"]
    result = run_cli(tmp_path, "-m", "hparams_search=distill_optuna", command=command)
    assert result.returncode != 0
    assert 'install the extra with `pip install -c constraints.txt -e ".[optuna]"`' in result.stderr
