"""Read back what an offline W&B run wrote: the records of its `run-<id>.wandb` file (W&B's LevelDB-style log of
protobuf records), so tests can check the run group, the config and the summary without a W&B server."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

FILE_HEADER = struct.Struct("<4sHB")  # ":W&B", magic 0xBEE1, version 0
RECORD_HEADER = struct.Struct("<IHB")  # crc32, payload length, chunk type
BLOCK_SIZE = 32 * 1024  # records never straddle a block boundary; chunks of one record do
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    """Every protobuf record of a `.wandb` file, in order."""
    data = Path(path).read_bytes()
    ident, magic, _ = FILE_HEADER.unpack_from(data)
    assert ident == b":W&B" and magic == 0xBEE1, f"{path} is not a W&B run file"
    records, pending, offset = [], b"", FILE_HEADER.size
    while offset + RECORD_HEADER.size <= len(data):
        if BLOCK_SIZE - offset % BLOCK_SIZE < RECORD_HEADER.size:  # block tail too short for a header: padding
            offset += BLOCK_SIZE - offset % BLOCK_SIZE
            continue
        _, length, chunk_type = RECORD_HEADER.unpack_from(data, offset)
        offset += RECORD_HEADER.size
        chunk, offset = data[offset : offset + length], offset + length
        if chunk_type == 0:  # zero padding at the end of a block
            continue
        pending = chunk if chunk_type in (FULL, FIRST) else pending + chunk
        if chunk_type in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def offline_runs(run_dir: Path) -> list[Path]:
    """The `.wandb` files of all offline W&B runs written under a run directory."""
    return sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))


def run_record(path: Path) -> wandb_internal_pb2.RunRecord:
    return next(r.run for r in read_records(path) if r.WhichOneof("record_type") == "run")


def latest_values(path: Path, record_type: str) -> dict:
    """The last value of each key over all `record_type` records ("summary" or "config") of an offline run."""
    values = {}
    for record in read_records(path):
        if record.WhichOneof("record_type") == record_type:
            for item in getattr(record, record_type).update:
                values[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return values


def summary(path: Path) -> dict:
    """The run summary: the last summary update of each key (W&B writes the final values at wandb.finish)."""
    return latest_values(path, "summary")


def config(path: Path) -> dict:
    """The run config: the last value of each top-level key over all config updates."""
    return latest_values(path, "config")
