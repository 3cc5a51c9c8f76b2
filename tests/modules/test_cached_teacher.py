"""Training from a teacher cache (`distill.teacher_cache`): at k = V it equals live-teacher training with the same
masks, step for step; the teacher is dropped; what a cache cannot give is refused; the stream resumes exactly."""

from __future__ import annotations

import copy
import functools

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

from distil.data.batch_stream import BatchStream
from distil.data.datamodule import CorpusDataModule
from distil.data.shard_rows import IndexedRow
from distil.data.sources import LocalFiles
from distil.modules.cached_teacher import distillation_module, skeleton_teacher
from distil.modules.distillation import DistillationModule
from distil.modules.student import build_student
from distil.perf.step_speed import StepSpeed
from distil.prepare import prepare
from distil.topk_cache.writer import cache_teacher
from tests.conftest import assert_logged_terms_weigh_into_the_loss, run_cli
from tests.tiny_assets import write_tiny_causal_teacher

LENGTH, SEED, VOCAB = 16, 7, 128
LIVE_KEYS = ("input_ids", "attention_mask", "labels")


@pytest.fixture(scope="module")
def full_cache(tiny_shards_dir, tiny_teacher_dir, tmp_path_factory):
    """k = V, float32, every position, two maskings, hidden states: the cache that must reproduce live training."""
    out = tmp_path_factory.mktemp("cached_training_cache") / "full"
    cache_teacher(
        str(tiny_shards_dir), str(tiny_teacher_dir), str(out), topk=VOCAB, maskings=2, max_length=LENGTH, seed=SEED,
        mlm_smoothing=None, temperature=2.0, kl_positions="all", hidden_states=True, precision="float32",
        batch_size=32,
    )  # fmt: skip
    return out


def data_module(teacher_dir, tiny_shards_dir, cache) -> CorpusDataModule:
    return CorpusDataModule(
        str(teacher_dir), shards_dir=str(tiny_shards_dir), max_length=LENGTH, batch_size=4, mlm_smoothing=None,
        seed=SEED, teacher_cache=str(cache),
    )  # fmt: skip


def top4_cache(tiny_shards_dir, tiny_teacher_dir, out, kl_positions: str):
    """Write a k = 4 cache of the tiny teacher to `out`; the teacher, a student of it, and the cache's first batch."""
    cache_teacher(
        str(tiny_shards_dir), str(tiny_teacher_dir), str(out), topk=4, max_length=LENGTH, seed=SEED, mlm_smoothing=None,
        kl_positions=kl_positions, batch_size=64,
    )  # fmt: skip
    teacher = AutoModelForMaskedLM.from_pretrained(tiny_teacher_dir)
    batch = next(iter(data_module(tiny_teacher_dir, tiny_shards_dir, out).train_dataloader()))
    return teacher, build_student(teacher), batch


def test_training_from_the_cache_at_k_equal_to_v_equals_live_training_step_for_step(
    full_cache, tiny_shards_dir, tiny_teacher_dir
):
    batches = iter(data_module(tiny_teacher_dir, tiny_shards_dir, full_cache).train_dataloader())
    teacher = AutoModelForMaskedLM.from_pretrained(tiny_teacher_dir)
    student = build_student(teacher)
    initial = copy.deepcopy(student)
    optimizer = functools.partial(torch.optim.SGD, lr=0.5)
    settings = dict(optimizer=optimizer, temperature=2.0, kl_positions="all")  # published weights: kl, label, cos
    live = DistillationModule(teacher, student, **settings).eval()
    cached = distillation_module(copy.deepcopy(teacher), copy.deepcopy(student), str(full_cache), **settings).eval()
    assert cached.teacher is None and not any(key.startswith("teacher") for key in cached.state_dict())
    optimizers = [torch.optim.SGD(module.trainable_parameters(), lr=0.5) for module in (live, cached)]
    for step in range(4):
        batch = next(batches)
        assert batch["teacher_topk_ids"].shape == (4 * LENGTH, VOCAB)  # every position of 4 full rows
        live_losses = live.distillation_losses({key: batch[key] for key in LIVE_KEYS})
        cached_losses = cached.distillation_losses(batch)
        assert set(cached_losses) == set(live_losses) == {"kl", "label", "cos", "loss"}
        for name, value in live_losses.items():
            assert cached_losses[name].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-6), (step, name)
        for module, losses, opt in zip((live, cached), (live_losses, cached_losses), optimizers):
            opt.zero_grad()
            losses["loss"].backward()
            opt.step()
    for (name, a), b in zip(live.student.named_parameters(), cached.student.parameters()):
        assert torch.allclose(a, b, atol=1e-5), name
    moved = [not torch.equal(a, b) for a, b in zip(initial.parameters(), cached.student.parameters())]
    assert sum(moved) > len(moved) // 2  # the steps trained most parameters: the equality is not of untouched ones


def test_a_top_k_cache_differs_from_the_full_kl_and_refuses_what_it_cannot_give(
    tiny_shards_dir, tiny_teacher_dir, tmp_path
):
    out = tmp_path / "k4"
    teacher, student, batch = top4_cache(tiny_shards_dir, tiny_teacher_dir, out, kl_positions="masked")
    optimizer = torch.optim.SGD
    with pytest.raises(ValueError, match=r"distill.alpha_cos=1.0 needs the teacher's hidden states"):
        distillation_module(teacher, student, str(out), optimizer=optimizer)
    with pytest.raises(ValueError, match=r"distill.alpha_mse=1.0 needs the teacher's full outputs"):
        distillation_module(teacher, student, str(out), optimizer=optimizer, alpha_cos=0.0, alpha_mse=1.0)
    cached = distillation_module(teacher, student, str(out), optimizer=optimizer, alpha_cos=0.0, kl_positions="masked")
    live = DistillationModule(teacher, student, optimizer=optimizer, alpha_cos=0.0, kl_positions="masked")
    assert batch["teacher_topk_ids"].shape == (4 * 3, 4)  # ceil(15% x 14) = 3 masked positions per row, k = 4
    with torch.no_grad():
        cached_kl = cached.eval().distillation_losses(batch)["kl"]
        live_kl = live.eval().distillation_losses({key: batch[key] for key in LIVE_KEYS})["kl"]
    assert 0 < cached_kl < live_kl  # the top-4 + tail KL is a lower bound of the full one
    wrong = distillation_module(teacher, student, str(out), optimizer=optimizer, alpha_cos=0.0, kl_positions="all")
    with pytest.raises(ValueError, match=r"other kl_positions than distill.kl_positions='all'"):
        wrong.distillation_losses(batch)


def test_the_chunked_vocabulary_path_reads_the_cache_with_the_plain_losses_and_gradients(
    tiny_shards_dir, tiny_teacher_dir, tmp_path
):
    out = tmp_path / "k4_all"
    teacher, student, batch = top4_cache(tiny_shards_dir, tiny_teacher_dir, out, kl_positions="all")
    results = []
    for speed in (StepSpeed(), StepSpeed(vocab_chunk_rows=5)):  # 64 rows: 13 chunks, the last one of 4
        module = distillation_module(
            teacher, copy.deepcopy(student), str(out), optimizer=torch.optim.SGD, alpha_cos=0.0, speed=speed
        ).eval()  # no dropout
        losses = module.distillation_losses(batch)
        losses["loss"].backward()
        grads = {name: param.grad for name, param in module.student.named_parameters() if param.grad is not None}
        results.append(({name: value.item() for name, value in losses.items()}, grads))
    (plain, plain_grads), (chunked, chunked_grads) = results
    assert set(plain) == {"kl", "label", "loss"} and plain["kl"] > 0
    assert chunked == pytest.approx(plain, rel=1e-5)
    assert chunked_grads.keys() == plain_grads.keys() and len(plain_grads) > 10
    for name, grad in plain_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_pass_p_reads_masking_p_mod_m_and_a_resumed_stream_continues_exactly(
    full_cache, tiny_shards_dir, tiny_teacher_dir
):
    module = data_module(tiny_teacher_dir, tiny_shards_dir, full_cache)
    collator = module.train_dataset().collator
    row = module.train_dataset().rows.read_rows(np.array([5]))[0]
    ids = [collator([IndexedRow(row, 5, p)])["input_ids"] for p in range(3)]
    assert torch.equal(ids[0], ids[2]) and not torch.equal(ids[0], ids[1])
    stream = module.train_dataset()
    uninterrupted = [batch for batch, _ in zip(stream, range(6))]
    _, position = uninterrupted[2]
    slot, *after = position.tolist()
    resumed = BatchStream(stream.rows, collator, 4, SEED, start_positions={slot: tuple(after)})
    for (expected, _), (batch, _) in zip(uninterrupted[3:], resumed):
        assert batch.keys() == expected.keys()
        assert all(torch.equal(batch[key], expected[key]) for key in batch)


def test_cache_teacher_then_train_from_it_on_the_command_line(tiny_shards_dir, tiny_teacher_dir, tmp_path):
    cache = tmp_path / "cache"
    common = [
        f"hydra.run.dir={tmp_path / 'cache_log'}",
        f"shards={tiny_shards_dir}",
        f"teacher.name_or_path={tiny_teacher_dir}",
    ]
    settings = ["max_length=16", "seed=7", "mlm_smoothing=null", "kl_positions=masked", "hidden_states=true"]
    result = run_cli(tmp_path, *common, "topk=8", f"out={cache}", *settings, module="distil.cache_teacher")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (cache / "metadata.json").is_file() and (cache / "hidden.bin").is_file()
    run_dir = tmp_path / "run"
    overrides = [
        f"hydra.run.dir={run_dir}", f"teacher.name_or_path={tiny_teacher_dir}", "data=shards",
        f"data.shards_dir={tiny_shards_dir}", "data.max_length=16", "data.batch_size=4", "data.val_batch_size=4",
        "data.num_workers=0", "data.mlm_smoothing=null", "seed=7", "trainer.max_steps=3",
        "trainer.val_check_interval=3", "trainer.limit_val_batches=2", "trainer.log_every_n_steps=1",
        "callbacks.progress_bar.refresh_rate=0", "logger=csv", f"distill.teacher_cache={cache}",
    ]  # fmt: skip
    refused = run_cli(tmp_path, *overrides, "distill.temperature=3.0", "data.max_length=32")
    assert refused.returncode != 0
    assert "max_length: cache '16', this run '32'; temperature: cache '2.0', this run '3.0'" in refused.stderr
    assert not (run_dir / "checkpoints").exists()
    result = run_cli(tmp_path, *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = assert_logged_terms_weigh_into_the_loss(run_dir, 3)  # kl, label and cos (from cached hidden states)
    validation = [row for row in rows if row.get("val/student_mlm_acc")]
    assert len(validation) == 1 and not any(key.startswith("val/teacher") and row[key] for row in rows for key in row)
    assert (run_dir / "student" / "config.json").is_file()


class LossRecorder(pl.Callback):
    """The training loss of every step, by global step."""

    def __init__(self) -> None:
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_index) -> None:
        self.losses[trainer.global_step - 1] = outputs["loss"].item()


def fit_from_cache(teacher_dir, tiny_shards_dir, cache, checkpoint_dir, ckpt_path=None) -> dict[int, float]:
    """6 steps of a cached run (one dataloader worker, no dropout), checkpointed at step 3; the losses by step."""
    teacher = AutoModelForMaskedLM.from_pretrained(teacher_dir)
    student = build_student(teacher)
    for layer in student.modules():
        if isinstance(layer, torch.nn.Dropout):
            layer.p = 0.0
    optimizer = functools.partial(torch.optim.AdamW, lr=1e-3)
    module = distillation_module(teacher, student, str(cache), optimizer=optimizer, scheduler=None, alpha_cos=0.0)
    datamodule = data_module(teacher_dir, tiny_shards_dir, cache)
    datamodule.num_workers = 1
    recorder = LossRecorder()
    checkpoints = ModelCheckpoint(dirpath=checkpoint_dir, every_n_train_steps=3, save_top_k=-1, filename="{step}")
    trainer = pl.Trainer(
        max_steps=6, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, callbacks=[recorder, checkpoints],
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return recorder.losses


def test_a_resumed_cached_run_continues_with_the_uninterrupted_losses(
    full_cache, tiny_shards_dir, tiny_teacher_dir, tmp_path
):
    full = fit_from_cache(tiny_teacher_dir, tiny_shards_dir, full_cache, tmp_path / "full")
    checkpoint = tmp_path / "full" / "step=3.ckpt"
    assert not any(key.startswith("teacher") for key in torch.load(checkpoint, weights_only=False)["state_dict"])
    resumed = fit_from_cache(tiny_teacher_dir, tiny_shards_dir, full_cache, tmp_path / "resumed", str(checkpoint))
    assert sorted(full) == list(range(6)) and sorted(resumed) == [3, 4, 5]
    assert [resumed[step] for step in (3, 4, 5)] == [full[step] for step in (3, 4, 5)]  # bitwise equal
    assert len(set(full.values())) == 6


def test_a_skeleton_teacher_gives_the_same_cached_step_as_the_loaded_one(full_cache, tiny_shards_dir, tiny_teacher_dir):
    skeleton = skeleton_teacher(AutoConfig.from_pretrained(tiny_teacher_dir))
    assert all(parameter.is_meta for parameter in skeleton.parameters())  # no weight read or allocated
    teacher = AutoModelForMaskedLM.from_pretrained(tiny_teacher_dir)
    student = build_student(teacher)  # stands for a given pretrained student (student.name_or_path)
    batch = next(iter(data_module(tiny_teacher_dir, tiny_shards_dir, full_cache).train_dataloader()))
    optimizer = torch.optim.SGD
    losses = [
        distillation_module(model, copy.deepcopy(student), str(full_cache), optimizer=optimizer)
        .eval()
        .distillation_losses(batch)["loss"]
        .item()
        for model in (skeleton, teacher)
    ]
    assert losses[0] == losses[1] > 0


def test_causal_rows_from_the_cache_at_k_equal_to_v_equal_live_training(tiny_corpus_dir, tmp_path):
    teacher_dir = write_tiny_causal_teacher(tmp_path / "teacher")
    shards = tmp_path / "shards"
    sources = [LocalFiles(str(tiny_corpus_dir / "*.txt"))]
    prepare(str(teacher_dir), sources, [], str(shards), val_documents=5, seed=0, num_proc=1, causal=True)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    vocab = teacher.config.vocab_size
    arguments = dict(max_length=LENGTH, seed=SEED, kl_positions="masked", precision="float32", batch_size=32)
    with pytest.raises(ValueError, match=r"maskings=2 is not allowed for a causal teacher"):
        cache_teacher(str(shards), str(teacher_dir), str(tmp_path / "never"), topk=vocab, maskings=2, **arguments)
    cache = tmp_path / "cache"
    metadata = cache_teacher(str(shards), str(teacher_dir), str(cache), topk=vocab, **arguments)
    assert metadata["shape"]["positions"] == LENGTH - 1 and "masked_positions.bin" not in metadata["files"]
    module = CorpusDataModule(
        str(teacher_dir), causal=True, shards_dir=str(shards), max_length=LENGTH, batch_size=4, seed=SEED,
        teacher_cache=str(cache),
    )  # fmt: skip
    batches = iter(module.train_dataloader())
    student = build_student(teacher)
    settings = dict(optimizer=torch.optim.SGD, temperature=2.0, kl_positions="masked", alpha_cos=0.0)
    live = DistillationModule(teacher, student, **settings).eval()
    cached = distillation_module(copy.deepcopy(teacher), copy.deepcopy(student), str(cache), **settings).eval()
    optimizers = [torch.optim.SGD(module.trainable_parameters(), lr=0.5) for module in (live, cached)]
    for step in range(2):
        batch = next(batches)
        assert batch["teacher_topk_ids"].shape == (4 * (LENGTH - 1), vocab)
        live_losses = live.distillation_losses({key: batch[key] for key in LIVE_KEYS})
        cached_losses = cached.distillation_losses(batch)
        assert set(cached_losses) == set(live_losses) == {"kl", "label", "loss"}
        for name, value in live_losses.items():
            assert cached_losses[name].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-6), (step, name)
        for losses, optimizer in zip((live_losses, cached_losses), optimizers):
            optimizer.zero_grad()
            losses["loss"].backward()
            optimizer.step()


def test_the_cosine_term_alone_trains_from_cached_hidden_states(full_cache, tiny_shards_dir, tiny_teacher_dir):
    teacher = AutoModelForMaskedLM.from_pretrained(tiny_teacher_dir)
    student = build_student(teacher)
    batch = next(iter(data_module(tiny_teacher_dir, tiny_shards_dir, full_cache).train_dataloader()))
    settings = dict(optimizer=torch.optim.SGD, alpha_kl=0.0, alpha_label=0.0, kl_positions="all")
    live = DistillationModule(teacher, student, **settings).eval()
    cached = distillation_module(teacher, student, str(full_cache), **settings).eval()
    with torch.no_grad():
        expected = live.distillation_losses({key: batch[key] for key in LIVE_KEYS})
        losses = cached.distillation_losses(batch)
    assert set(losses) == {"cos", "loss"}
    assert losses["loss"].item() == pytest.approx(expected["loss"].item(), rel=1e-5) and losses["loss"] > 0
