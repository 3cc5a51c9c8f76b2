"""Preemption: on SIGTERM / SIGUSR1 / SIGUSR2 the finished step is checkpointed, SLURM jobs are requeued, the
process exits with 128 + the signal number."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from distil.run.callbacks import preemption
from distil.run.callbacks.preemption import Preempted, PreemptionCheckpoint
from tests.reliability.runs import CHECKPOINT_EVERY, MAX_STEPS, train_losses
from tests.reliability.toy import OnStep, ToyRegression, toy_loader, toy_trainer


def test_sigterm_writes_a_checkpoint_and_exits_with_143(preempted_run):
    assert preempted_run.returncode == 143, preempted_run.log[-3000:]
    checkpoint = torch.load(preempted_run.run_dir / "checkpoints" / "preempted.ckpt", weights_only=True)
    assert CHECKPOINT_EVERY <= checkpoint["global_step"] < MAX_STEPS
    assert "received SIGTERM: checkpoint of step" in preempted_run.log
    assert not (preempted_run.run_dir / "student").exists()  # a preempted run is not a finished run
    assert not list(preempted_run.run_dir.rglob("*.tmp"))
    logged = train_losses(preempted_run.run_dir)
    assert sorted(logged)[:CHECKPOINT_EVERY] == list(range(CHECKPOINT_EVERY))


def send_to_self(signum: int):
    return lambda trainer, pl_module: os.kill(os.getpid(), signum)


def test_sigusr1_under_slurm_saves_at_the_step_boundary_requeues_and_exits_138(tmp_path, monkeypatch):
    requeued: list[str] = []
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setattr(preemption.SLURMEnvironment, "detect", staticmethod(lambda: True))
    monkeypatch.setattr(preemption, "requeue_slurm_job", requeued.append)
    handler_before = signal.getsignal(signal.SIGUSR1)
    callback = PreemptionCheckpoint(str(tmp_path / "checkpoints"), signals=["SIGUSR1"])
    trainer = toy_trainer(tmp_path, 10, [callback, OnStep(3, send_to_self(signal.SIGUSR1))])

    with pytest.raises(Preempted) as stop:
        trainer.fit(ToyRegression(), toy_loader())

    assert stop.value.code == 128 + signal.SIGUSR1
    checkpoint = torch.load(tmp_path / "checkpoints" / "preempted.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4  # the step during which the signal came was finished, then saved
    assert requeued == ["4242"]
    assert signal.getsignal(signal.SIGUSR1) == handler_before


def test_with_gradient_accumulation_the_checkpoint_is_taken_at_the_optimizer_step_boundary(tmp_path):
    callback = PreemptionCheckpoint(str(tmp_path / "checkpoints"), signals=["SIGUSR1"])
    received_at = OnStep(2, send_to_self(signal.SIGUSR1))  # on the first of the 2 micro-batches of step 2
    trainer = toy_trainer(tmp_path, 10, [callback, received_at], accumulate_grad_batches=2)
    with pytest.raises(Preempted):
        trainer.fit(ToyRegression(), toy_loader())
    checkpoint = torch.load(tmp_path / "checkpoints" / "preempted.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 3
    assert checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["ready"] == 6  # 3 steps x 2


def test_an_environment_handler_such_as_submitits_is_called_after_the_checkpoint(tmp_path):
    calls: list[int] = []

    def submitit_like_requeue_and_exit(signum, frame):
        calls.append(signum)
        raise SystemExit(-1)

    previous = signal.signal(signal.SIGUSR2, submitit_like_requeue_and_exit)
    try:
        callback = PreemptionCheckpoint(str(tmp_path / "checkpoints"), signals=["SIGUSR2"])
        trainer = toy_trainer(tmp_path, 10, [callback, OnStep(2, send_to_self(signal.SIGUSR2))])
        with pytest.raises(SystemExit) as stop:
            trainer.fit(ToyRegression(), toy_loader())
        assert stop.value.code == -1 and calls == [signal.SIGUSR2]
        assert torch.load(tmp_path / "checkpoints" / "preempted.ckpt", weights_only=True)["global_step"] == 3
        assert signal.getsignal(signal.SIGUSR2) == submitit_like_requeue_and_exit  # given back after training
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_a_run_without_signals_writes_no_preemption_checkpoint_and_restores_handlers(tmp_path):
    handler_before = signal.getsignal(signal.SIGTERM)
    trainer = toy_trainer(tmp_path, 3, [PreemptionCheckpoint(str(tmp_path / "checkpoints"))])
    trainer.fit(ToyRegression(), toy_loader())
    assert not (tmp_path / "checkpoints" / "preempted.ckpt").exists()
    assert signal.getsignal(signal.SIGTERM) == handler_before


def test_unknown_signal_names_are_refused():
    with pytest.raises(ValueError, match=r"unknown signal names \['SIGFOO'\]"):
        PreemptionCheckpoint("/tmp", signals=["SIGTERM", "SIGFOO"])
