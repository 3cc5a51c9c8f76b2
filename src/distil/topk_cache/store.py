"""The on-disk layout of a teacher cache, and its reader.

A cache folder holds `metadata.json` and one raw little-endian array file per array (memory-mapped with numpy), each
indexed [masking m, row r, ...] over the M maskings and the R training rows of the shards (row r = tokens
[r*C, (r+1)*C) of the training split, `distil.data.shard_rows`):

  masked_positions.bin  int16 or int32 (M, R, n): the row's masked positions, ascending, -1 after the last (masked
                        LMs only; n = ceil(mlm_probability x content tokens), the most a row masks)
  masked_ids.bin        token dtype (M, R, n): the input id at each masked position ([MASK], a random id or the
                        original, the 80/10/10 choice)
  topk_ids.bin          token dtype (M, R, P, k): the teacher's k most probable ids at each cached position
  topk_log_probs.bin    float16 or float32 (M, R, P, k): their log-probabilities at the distillation temperature
  tail_log_prob.bin     float16 or float32 (M, R, P): log of the teacher's mass outside the k ids (-inf: none)
  hidden.bin            float16 or float32 (M, R, L, H): the teacher's last hidden states (optional; for the
                        cosine term; large: L x H values per row and masking)

The P cached positions of a row are the positions the soft-target term reads (`kl_positions`): "masked", the
positions with a label (the masked ones, the first of n slots; a causal row's L - 1 next-token positions), or "all",
every one of its L positions. `metadata.json` records the format, the fingerprint (`fingerprint.py`), the shapes, and
every file's size and sha256: a file of another size is named when the cache is opened, and one whose bytes changed
when it is verified (always when the cache holds at most 512 MiB; `verify`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from distil.data.shards import VERIFY_AUTO_BYTES, VERIFY_MODES, file_sha256, read_folder_metadata

log = logging.getLogger(__name__)

FORMAT = "distil-teacher-topk-cache"
VERSION = 1
METADATA_FILE = "metadata.json"
KIND = "teacher_topk_cache"  # the output-folder kind (`distil.run.output_dirs`)
PRECISIONS = ("float16", "float32")  # dtype of the stored log-probabilities and hidden states
KL_POSITIONS = ("masked", "all")


@dataclass(frozen=True)
class CacheShape:
    """The sizes every array of a cache is made of.

    Args:
        rows: R, training rows of the shards at `max_length`.
        maskings: M, distinct maskings per row (1 for causal rows).
        max_length: L, tokens per row.
        mask_slots: n, masked positions per row at most (0 for causal rows).
        positions: P, cached positions per row.
        k: teacher ids kept per position.
        hidden_size: H of the cached hidden states, 0 when none are cached.
        token_dtype: dtype of token ids (the shards').
        precision: dtype of log-probabilities and hidden states (`PRECISIONS`).
    """

    rows: int
    maskings: int
    max_length: int
    mask_slots: int
    positions: int
    k: int
    hidden_size: int
    token_dtype: str
    precision: str

    def arrays(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """name -> (dtype, shape) of every array file of the cache."""
        head = (self.maskings, self.rows)
        arrays = {}
        if self.mask_slots:
            position_dtype = "int16" if self.max_length < 2**15 else "int32"
            arrays["masked_positions"] = (position_dtype, (*head, self.mask_slots))
            arrays["masked_ids"] = (self.token_dtype, (*head, self.mask_slots))
        arrays["topk_ids"] = (self.token_dtype, (*head, self.positions, self.k))
        arrays["topk_log_probs"] = (self.precision, (*head, self.positions, self.k))
        arrays["tail_log_prob"] = (self.precision, (*head, self.positions))
        if self.hidden_size:
            arrays["hidden"] = (self.precision, (*head, self.max_length, self.hidden_size))
        return arrays

    def bytes_per_row(self) -> dict[str, int]:
        """Bytes per row and masking of each array."""
        return {
            name: int(np.dtype(dtype).itemsize * np.prod(shape[2:])) for name, (dtype, shape) in self.arrays().items()
        }


def array_file(name: str) -> str:
    return f"{name}.bin"


def open_arrays(directory: Path, shape: CacheShape, mode: str = "r") -> dict[str, np.memmap]:
    """Memory maps of the cache's arrays (`mode` "r", "r+", or "w+" to create them filled with zeros)."""
    return {
        name: np.memmap(Path(directory) / array_file(name), dtype=dtype, mode=mode, shape=shape_)
        for name, (dtype, shape_) in shape.arrays().items()
    }


def read_cache_metadata(directory: str | Path) -> dict:
    """The metadata of a cache folder; errors say what is missing and how to create it."""
    command = f"python -m distil.cache_teacher shards=<shards_dir> teacher.name_or_path=<teacher> out={directory}"
    return read_folder_metadata(directory, FORMAT, VERSION, f"distill.teacher_cache={str(directory)!r}", command)


def check_cache_files(directory: str | Path, metadata: dict, verify: bool | str = "auto") -> None:
    """Every array file exists with the size `metadata.json` records, and, with `verify` (True, or "auto" for caches
    of at most 512 MiB), its sha256; raises naming the file otherwise."""
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify={verify!r} is not allowed: use true, false or auto")
    files = metadata["files"]
    if verify == "auto":
        verify = sum(entry["bytes"] for entry in files.values()) <= VERIFY_AUTO_BYTES
    for name, entry in files.items():
        path = Path(directory) / name
        if not path.is_file():
            raise FileNotFoundError(f"teacher cache file {path} listed in {METADATA_FILE} is missing; write it again")
        if path.stat().st_size != entry["bytes"]:
            raise ValueError(
                f"teacher cache file {path} has {path.stat().st_size} bytes but {METADATA_FILE} records "
                f"{entry['bytes']}: it was truncated or changed after distil.cache_teacher wrote it; write it again"
            )
        if verify and file_sha256(path) != entry["sha256"]:
            raise ValueError(
                f"teacher cache file {path} does not match the sha256 that {METADATA_FILE} records: its bytes changed "
                "after distil.cache_teacher wrote it; write the cache again"
            )


class TeacherCache:
    """A cache folder, checked on opening; its arrays are memory-mapped on first use in each process (a dataloader
    worker opens its own).

    Args:
        directory: the cache folder (`distill.teacher_cache`).
        verify: compare every file's sha256 with the metadata: true, false or "auto" (at most 512 MiB in all);
            sizes are always compared.
    """

    def __init__(self, directory: str | Path, verify: bool | str = "auto") -> None:
        self.directory = Path(directory)
        self.metadata = read_cache_metadata(directory)
        self.shape = CacheShape(**self.metadata["shape"])
        check_cache_files(directory, self.metadata, verify)
        self.fingerprint: dict[str, str] = self.metadata["fingerprint"]
        self.causal = self.metadata["causal"]
        self.kl_positions = self.metadata["kl_positions"]
        self.loaded: dict[str, np.memmap] | None = None

    def arrays(self) -> dict[str, np.memmap]:
        if self.loaded is None:
            self.loaded = open_arrays(self.directory, self.shape)
        return self.loaded

    def __getstate__(self) -> dict:
        return {**self.__dict__, "loaded": None}  # memory maps are opened again in the process that reads them

    def top_k_mass(self) -> float:
        """The teacher's probability (at the distillation temperature) on its top-k ids, averaged over the cached
        positions: how much of the soft targets the top-k support keeps; the tail bucket holds the rest."""
        arrays = self.arrays()
        tail_mass = np.exp(np.asarray(arrays["tail_log_prob"], dtype=np.float64))
        if self.kl_positions == "masked" and "masked_positions" in arrays:  # a row's unused mask slots hold none
            return float(1 - tail_mass[np.asarray(arrays["masked_positions"]) >= 0].mean())
        return float(1 - tail_mass.mean())  # shard rows are full: every position is cached

    def describe(self) -> str:
        shape = self.shape
        return (
            f"teacher cache {self.directory}: {shape.rows} rows x {shape.maskings} masking(s), top-{shape.k} of "
            f"{shape.positions} positions per row ({self.kl_positions}), {shape.precision}"
            f"{', hidden states' if shape.hidden_size else ''}"
        )


def open_teacher_cache(directory: str | None, shards_dir: str | None, verify: bool | str) -> TeacherCache | None:
    """The cache at `directory` (None when it is None); it needs the shards it was written on."""
    if directory is None:
        return None
    if not shards_dir:
        raise ValueError(f"distill.teacher_cache={directory!r} needs data=shards (the shards it was written on)")
    return TeacherCache(directory, verify)


def shape_record(shape: CacheShape) -> dict:
    return asdict(shape)
