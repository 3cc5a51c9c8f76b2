"""Atomic checkpoint writes and verified weights-only reads: every bad file fails with its name in the error."""

from __future__ import annotations

import os
import shutil
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from distil.run import checkpoint_io
from distil.run.checkpoint_io import (
    AtomicCheckpointIO,
    CheckpointError,
    atomic_torch_save,
    atomic_write,
    read_checkpoint,
)
from distil.train import train
from tests.reliability.test_config_checks import compose_tiny


def lightning_like(step: int) -> dict:
    return {"state_dict": {"w": torch.arange(4096, dtype=torch.float32) + step}, "global_step": step}


def tensor_record_offset(path: Path) -> int:
    """Byte offset of the first byte of the largest tensor's data inside the zip archive."""
    with zipfile.ZipFile(path) as archive:
        record = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    header = path.read_bytes()[record.header_offset : record.header_offset + 30]
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return record.header_offset + 30 + name_length + extra_length


def test_atomic_save_replaces_the_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "a.ckpt"
    atomic_torch_save(lightning_like(1), path)
    atomic_torch_save(lightning_like(2), path)
    assert read_checkpoint(path)["global_step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt"]


def test_a_write_interrupted_midway_keeps_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "a.ckpt"
    atomic_torch_save(lightning_like(1), path)
    before = path.read_bytes()

    def half_written_then_killed(obj, file):
        file.write(b"PK\x03\x04 partial bytes")
        raise KeyboardInterrupt  # stands for SIGINT/SIGTERM arriving in the middle of torch.save

    monkeypatch.setattr(torch, "save", half_written_then_killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save(lightning_like(2), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt"]


def test_ctrl_c_during_a_save_is_a_plain_keyboard_interrupt_and_keeps_the_previous_file(tmp_path, monkeypatch, caplog):
    path = tmp_path / "a.ckpt"
    atomic_torch_save(lightning_like(1), path)
    before = path.read_bytes()
    save = torch.save

    class CtrlCOnTheFifthWrite:  # SIGINT's KeyboardInterrupt arrives inside torch's zip writer
        def __init__(self, file) -> None:
            self.file, self.writes = file, 0

        def write(self, data) -> int:
            self.writes += 1
            if self.writes == 5:
                raise KeyboardInterrupt
            return self.file.write(data)

        def flush(self) -> None:
            self.file.flush()

    monkeypatch.setattr(torch, "save", lambda obj, file: save(obj, CtrlCOnTheFifthWrite(file)))
    with pytest.raises(KeyboardInterrupt) as interrupt:
        atomic_torch_save(lightning_like(2), path)
    assert interrupt.value.__cause__ is None and interrupt.value.__suppress_context__  # not torch's "unexpected pos"
    assert f"interrupted while writing {path}: the previous file is intact" in caplog.text
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt"]


def test_checkpoint_io_plugin_round_trip(tmp_path):
    io = AtomicCheckpointIO()
    io.save_checkpoint(lightning_like(3), tmp_path / "sub" / "x.ckpt")
    loaded = io.load_checkpoint(tmp_path / "sub" / "x.ckpt", weights_only=False)  # always weights_only underneath
    assert loaded["global_step"] == 3 and torch.equal(loaded["state_dict"]["w"], lightning_like(3)["state_dict"]["w"])


def corrupt(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "empty":
        data = bytearray()
    elif how == "garbage":
        data = bytearray(os.urandom(2048))
    elif how == "flipped byte":
        data[tensor_record_offset(path) + 100] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "how, expected",
    [
        ("truncated", "truncated or corrupt"),
        ("empty", "is empty (0 bytes)"),
        ("garbage", "truncated or corrupt"),
        ("flipped byte", "does not match its CRC-32"),
    ],
)
def test_a_damaged_checkpoint_fails_with_its_name_and_the_cause(tmp_path, how, expected):
    path = tmp_path / "damaged.ckpt"
    atomic_torch_save(lightning_like(5), path)
    corrupt(path, how)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    assert str(path) in str(error.value) and expected in str(error.value)


def test_torch_load_alone_does_not_notice_a_flipped_byte(tmp_path):
    """Why read_checkpoint checks CRC-32s: without it a flipped weight byte loads silently."""
    path = tmp_path / "flipped.ckpt"
    atomic_torch_save(lightning_like(5), path)
    corrupt(path, "flipped byte")
    loaded = torch.load(path, weights_only=True)
    assert not torch.equal(loaded["state_dict"]["w"], lightning_like(5)["state_dict"]["w"])


def test_a_checkpoint_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "objects.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": torch.nn.Linear(1, 1)}, path)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    assert str(path) in str(error.value) and "pickled Python objects" in str(error.value)


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt does not exist"):
        read_checkpoint(tmp_path / "nowhere.ckpt")


def test_a_file_that_is_not_a_lightning_checkpoint_is_named(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        read_checkpoint(path)


def test_a_full_disk_is_named_with_the_file_and_the_previous_checkpoint_stays(tmp_path):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"global_step": 1}, path)
    before = path.read_bytes()

    def onto_a_full_disk(file):
        with open("/dev/full", "wb") as full:  # every write fails with ENOSPC, as on a full filesystem
            torch.save({"weights": torch.zeros(100_000)}, full)

    with pytest.raises(OSError, match=f"No space left on device: writing {path} stopped after .* MB free"):
        atomic_write(path, onto_a_full_disk)
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def test_torchs_unexpected_pos_is_named_a_full_disk_only_when_the_disk_is_full(tmp_path, monkeypatch):
    def torch_hides_the_enospc(file):  # torch's zip writer turns the failed write into this
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(checkpoint_io.shutil, "disk_usage", lambda path: usage._replace(free=1 << 20))
    with pytest.raises(OSError, match="No space left on device: writing .*last.ckpt stopped after 0.0 MB with 1.0 MB"):
        atomic_write(tmp_path / "last.ckpt", torch_hides_the_enospc)
    monkeypatch.setattr(checkpoint_io.shutil, "disk_usage", lambda path: usage._replace(free=1 << 40))
    with pytest.raises(RuntimeError, match="unexpected pos"):  # with room to spare it is another failure
        atomic_write(tmp_path / "last.ckpt", torch_hides_the_enospc)


def test_a_run_without_room_for_its_checkpoints_is_refused_before_training(
    tiny_teacher_dir, tiny_corpus_dir, tmp_path, monkeypatch
):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(checkpoint_io.shutil, "disk_usage", lambda path: usage._replace(free=100_000))
    cfg = compose_tiny(tiny_teacher_dir, tiny_corpus_dir, tmp_path / "run", "trainer.max_steps=2")
    with pytest.raises(OSError, match=r"No space left on device for this run's checkpoints: .* has 0.1 MB free"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
