"""`python -m distil.export ckpt=PATH out=DIR [onnx=true [int8=true]]`: a training checkpoint -> a Hugging Face model
directory.

The directory holds the student's config, weights and the teacher's tokenizer, so it loads with
`AutoModelForMaskedLM.from_pretrained(DIR)` and `pipeline("fill-mask", model=DIR)`. With `onnx=true` it also holds
`model.onnx` (input_ids, attention_mask and the token types where the student takes them -> logits, dynamic batch
and sequence length; `distil.exporting.onnx_model`), checked against the PyTorch model on a batch of real text: the
largest absolute logit difference is reported and must stay under `onnx_atol`.
With `int8=true` it also holds the INT8 variants of `model.onnx` and `quantization.json` (`distil.quantization`):
their sizes and held-out masked-LM accuracy next to the float model's; the export fails, naming both numbers, when a
variant drops more than `quantization.max_drop_points`.
The folder is written whole or not at all, and only over an earlier export (`distil.output_dirs`; `overwrite=true`
replaces any folder).
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig
from transformers import AutoConfig, AutoModelForMaskedLM, PreTrainedModel

from distil import checkpoint_io
from distil.data.tokenization import check_same_vocabulary, check_tokenizer_matches, read_tokenizer
from distil.exporting.hf_model import SAVED_DTYPES, check_saved_dtype, save_model_folder, stored_dtype
from distil.exporting.onnx_model import (
    ONNX_FILE,
    check_onnx_installed,
    export_onnx,
    masked_lm_example,
    onnx_max_abs_diff,
)
from distil.families.size import check_model_size
from distil.output_dirs import replace_output_dir
from distil.quantization import Int8Settings, check_gate, format_gate, write_int8_variants
from distil.quiet import quiet_third_party_output

log = logging.getLogger(__name__)

STUDENT_PREFIX = "student."  # DistillationModule keeps the student under this attribute name
LOCAL_PATH_PREFIXES = ("/", "./", "../", "~")  # a value starting so names a local path, never a hub id


def read_checkpoint(ckpt_path: str | Path) -> dict:
    """Load a `distil.train` checkpoint on the CPU, or raise naming what is missing."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt={str(ckpt_path)!r} does not exist: give a .ckpt file written by distil.train")
    try:
        checkpoint = checkpoint_io.read_checkpoint(path)  # CRC-checked; tensors and plain containers only
    except checkpoint_io.CheckpointError as error:
        raise checkpoint_io.CheckpointError(f"ckpt={str(ckpt_path)!r}: {error}") from error
    missing = [key for key in ("state_dict", "student_config", "run_config") if key not in checkpoint]
    if missing:
        raise ValueError(
            f"ckpt={str(ckpt_path)!r} lacks {missing}: it is not a distil.train checkpoint "
            "(expected keys state_dict, student_config, run_config)"
        )
    return checkpoint


def student_from_checkpoint(checkpoint: dict) -> PreTrainedModel:
    """The student masked-LM model with the checkpoint's weights, in eval mode on the CPU."""
    student_config = dict(checkpoint["student_config"])
    config = AutoConfig.for_model(student_config.pop("model_type"), **student_config)
    check_model_size(config, "the checkpoint's student_config")
    model = AutoModelForMaskedLM.from_config(config)
    state = {
        name[len(STUDENT_PREFIX) :]: tensor
        for name, tensor in checkpoint["state_dict"].items()
        if name.startswith(STUDENT_PREFIX)
    }
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"the checkpoint's student weights do not fit a {type(model).__name__}: {error}") from error
    return model.eval()


def run_teacher(checkpoint: dict) -> str | None:
    """The teacher the run distilled (`run_config.teacher.name_or_path`); None when the run config names none."""
    try:
        return str(checkpoint["run_config"]["teacher"]["name_or_path"])
    except (KeyError, TypeError):
        return None


def saved_dtype(checkpoint: dict, dtype: str | None) -> str:
    """`dtype` when given, else the dtype the run's teacher is stored in (its config.json)."""
    if dtype is not None:
        return dtype
    teacher = run_teacher(checkpoint)
    try:
        if teacher is None:
            raise ValueError("the checkpoint's run config names no teacher.name_or_path")
        return stored_dtype(AutoConfig.from_pretrained(teacher))
    except (OSError, ValueError) as error:
        raise FileNotFoundError(
            f"dtype=null saves the student in the dtype its teacher is stored in, but the run's teacher {teacher!r} "
            f"cannot be read ({error}): give dtype, one of {list(SAVED_DTYPES)}"
        ) from error


def checked_tokenizer(checkpoint: dict, student: PreTrainedModel, tokenizer: str | None):
    """The tokenizer to save with the student (`tokenizer`, else the run's teacher's), checked against its embeddings
    and, when given, against the vocabulary of the run's teacher (the one the student was trained on)."""
    teacher = run_teacher(checkpoint)
    if tokenizer is None and teacher is None:
        raise ValueError("the checkpoint's run_config has no teacher.name_or_path; pass tokenizer=PATH to name one")
    source = tokenizer or teacher
    key = "tokenizer" if tokenizer else "teacher.name_or_path of the checkpoint's run config"
    loaded = read_tokenizer(source, key)
    check_tokenizer_matches(loaded, source, key, student.config.vocab_size, "the checkpoint's student")
    if tokenizer is not None and teacher is not None:
        check_same_vocabulary(loaded, tokenizer, key, teacher, "the run's teacher.name_or_path")
    return loaded


def write_onnx(model: PreTrainedModel, directory: Path, opset: int, atol: float) -> float:
    """Write `directory/model.onnx` and check it against PyTorch with the tokenizer saved in `directory`; returns
    the largest absolute logit difference and raises when it exceeds `atol`."""
    tokenizer = read_tokenizer(str(directory), "out")
    onnx_path = directory / ONNX_FILE
    export_onnx(model, masked_lm_example(tokenizer), onnx_path, opset)
    diff = onnx_max_abs_diff(model, tokenizer, onnx_path)
    if not diff <= atol:
        raise RuntimeError(f"ONNX logits differ from PyTorch by {diff:.3e} > onnx_atol={atol}")
    return diff


def export_checkpoint(
    ckpt: str | Path,
    out: str | Path,
    tokenizer: str | None = None,
    dtype: str | None = None,
    overwrite: bool = False,
    onnx_opset: int | None = None,
    onnx_atol: float = 1e-4,
    int8: Int8Settings | None = None,
) -> float | None:
    """Write the checkpoint's student and its tokenizer to `out` in Hugging Face format (and ONNX when asked).

    The folder is written whole through a staging folder (`distil.output_dirs`): an earlier export at `out` is
    replaced, anything else there is refused unless `overwrite`; a failure (e.g. the ONNX check) leaves `out` as it
    was. Returns the ONNX check's largest absolute logit difference, None without ONNX.

    Args:
        ckpt: `.ckpt` file written by `distil.train`.
        out: output folder.
        tokenizer: tokenizer directory or hub id; None takes the teacher's from the checkpoint's run config.
        dtype: dtype of the saved weights ("float32", "float16" or "bfloat16"); None = the dtype the run's teacher
            is stored in (its config.json), so that the student's size on disk compares with its teacher's.
        overwrite: replace `out` whole even when it is not an earlier export.
        onnx_opset: also write `model.onnx` with this opset, checked against PyTorch; None = no ONNX.
        onnx_atol: largest allowed absolute logit difference of the ONNX check.
        int8: also write the INT8 variants of `model.onnx` and `quantization.json`, print the float and INT8 scores
            side by side and raise `QualityGateError` (writing nothing) when a variant fails the gate; needs ONNX.
    """
    if dtype is not None:
        check_saved_dtype(dtype)
    if int8 is not None and onnx_opset is None:
        raise ValueError("int8=true quantizes model.onnx: add onnx=true")
    checkpoint = read_checkpoint(ckpt)
    model = student_from_checkpoint(checkpoint)
    saved_tokenizer = checked_tokenizer(checkpoint, model, tokenizer)
    dtype = saved_dtype(checkpoint, dtype)
    onnx_diff: list[float] = []

    def write(directory: Path) -> None:
        save_model_folder(model, saved_tokenizer, directory, dtype)
        if onnx_opset is not None:
            onnx_diff.append(write_onnx(model, directory, onnx_opset, onnx_atol))
        if int8 is not None:
            report = write_int8_variants(model, directory, int8)
            print(format_gate(report))
            check_gate(report)

    replace_output_dir(out, "hf_model", write, overwrite, "out", details={"checkpoint": str(ckpt), "dtype": dtype})
    log.info("exported %s -> %s (%s weights)", ckpt, out, dtype)
    return onnx_diff[0] if onnx_diff else None


def hf_model_path(key: str, value: str, export_dir: Path) -> str:
    """A Hugging Face directory or hub id for `key=value`; a `.ckpt` is exported to `export_dir/key` first.

    Raises FileNotFoundError naming the key when `value` looks like a local path that does not exist.
    """
    path = Path(value).expanduser()
    if path.suffix == ".ckpt":
        if not path.is_file():
            raise FileNotFoundError(f"{key}={value!r} does not exist (a .ckpt file written by distil.train)")
        out = export_dir / key
        export_checkpoint(path, out)
        return str(out)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{key}={value!r} has no config.json: give a Hugging Face model directory")
        return str(path)
    if path.exists() or value.startswith(LOCAL_PATH_PREFIXES) or value.count("/") > 1:  # hub ids: name or org/name
        raise FileNotFoundError(
            f"{key}={value!r} is not a model: give a Hugging Face model directory, a distil.train .ckpt, "
            "or a hub id such as bert-base-uncased"
        )
    return value


@hydra.main(version_base="1.3", config_path="../../conf", config_name="export")
def main(cfg: DictConfig) -> float | None:
    """Export `cfg.ckpt` to `cfg.out`; with `cfg.onnx`, also ONNX, and return the max abs logit difference."""
    quiet_third_party_output()
    if cfg.onnx:
        check_onnx_installed()
    int8 = Int8Settings(**cfg.quantization, data=cfg.data) if cfg.int8 else None  # checks the settings
    diff = export_checkpoint(
        cfg.ckpt,
        cfg.out,
        tokenizer=cfg.tokenizer,
        dtype=cfg.dtype,
        overwrite=cfg.overwrite,
        onnx_opset=cfg.onnx_opset if cfg.onnx else None,
        onnx_atol=cfg.onnx_atol,
        int8=int8,
    )
    print(f"Hugging Face model: {cfg.out}")
    if diff is not None:
        print(
            f"ONNX model: {Path(cfg.out) / ONNX_FILE} (max |onnx - pytorch| logit difference {diff:.2e}, "
            f"tolerance {cfg.onnx_atol:.0e})"
        )
    return diff


if __name__ == "__main__":
    main()
