"""W&B mode from the environment (offline without an API key), the logger factory's checks, and finishing."""

from __future__ import annotations

import pytest

from distil.run import wandb_run
from tests.scaling import wandb_files


@pytest.fixture
def no_wandb_env(monkeypatch, tmp_path):
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    return tmp_path / "netrc"


def test_offline_without_any_api_key(no_wandb_env):
    assert not wandb_run.has_wandb_api_key()
    assert wandb_run.default_mode() == "offline"


def test_online_with_wandb_api_key(no_wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_run.default_mode() == "online"


def test_online_with_a_netrc_login_for_the_wandb_host(no_wandb_env, monkeypatch):
    no_wandb_env.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    no_wandb_env.chmod(0o600)
    assert wandb_run.default_mode() == "online"
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")  # a login for another host does not count
    assert wandb_run.default_mode() == "offline"


def test_wandb_mode_variable_wins(no_wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_run.default_mode() == "disabled"


def test_unknown_mode_is_rejected_with_the_allowed_ones():
    with pytest.raises(ValueError, match="logger.wandb.mode=dryrun is not allowed: it must be one of online, offline"):
        wandb_run.wandb_logger(mode="dryrun", project="p", save_dir="unused")


def test_single_run_has_no_group_and_the_logger_gets_mode_and_group(no_wandb_env, tmp_path):
    assert wandb_run.multirun_group() is None  # no Hydra job here
    logger = wandb_run.wandb_logger(project="p", save_dir=str(tmp_path), tags=["a"], job_type="train")
    assert logger._wandb_init["mode"] == "offline" and logger._wandb_init["group"] is None
    assert logger._wandb_init["tags"] == ["a"] and logger._wandb_init["dir"] == str(tmp_path)


def test_run_id_is_fixed_by_the_run_directory_so_a_resumed_run_continues(no_wandb_env, tmp_path):
    first = wandb_run.wandb_logger(project="p", save_dir=str(tmp_path / "run"))
    again = wandb_run.wandb_logger(project="p", save_dir=str(tmp_path / "run"))
    other = wandb_run.wandb_logger(project="p", save_dir=str(tmp_path / "other"))
    assert first._wandb_init["id"] == again._wandb_init["id"] != other._wandb_init["id"]
    assert len(first._wandb_init["id"]) == 16 and first._wandb_init["resume"] == "allow"
    assert wandb_run.wandb_logger(project="p", save_dir=str(tmp_path), id="mine")._wandb_init["id"] == "mine"


def test_run_is_finished_with_exit_code_1_when_the_job_raises(no_wandb_env, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    with pytest.raises(RuntimeError, match="boom"), wandb_run.finished_wandb_run():
        wandb.init(project="p", dir=str(tmp_path))
        raise RuntimeError("boom")
    assert wandb.run is None  # finished: the next job would start a run of its own
    wandb.teardown()  # W&B's core process writes the run file asynchronously: let it flush before reading the file
    exits = [
        r.exit.exit_code
        for r in wandb_files.read_records(next(tmp_path.glob("wandb/offline-run-*/run-*.wandb")))
        if r.WhichOneof("record_type") == "exit"
    ]
    assert exits == [1]
