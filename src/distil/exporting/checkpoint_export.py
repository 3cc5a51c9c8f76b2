"""A `distil.train` checkpoint -> the student as a Hugging Face model folder, written whole.

The folder holds the student's config, weights (in the dtype its teacher is stored in, unless asked otherwise) and the
teacher's tokenizer, so it loads with its family's Auto class and runs in its pipeline: a masked LM with
`AutoModelForMaskedLM.from_pretrained(DIR)` and `pipeline("fill-mask", model=DIR)`, a causal LM with
`AutoModelForCausalLM.from_pretrained(DIR)` and `pipeline("text-generation", model=DIR)`. More files (the ONNX
graph, its INT8 variants) are written into the same staging folder by the writers the caller passes, so the folder
appears whole or not at all, and only over an earlier export (`distil.run.output_dirs`; `overwrite` replaces any
folder). `hf_model_path` turns any model argument (a folder, a hub id, a `.ckpt`) into a folder or hub id, exporting
a checkpoint first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from transformers import AutoConfig, PreTrainedModel

from distil.data.tokenization import check_same_vocabulary, check_tokenizer_matches, read_tokenizer
from distil.exporting.hf_model import SAVED_DTYPES, check_saved_dtype, save_model_folder, stored_dtype
from distil.families import model_family
from distil.families.size import check_model_size
from distil.run import checkpoint_io
from distil.run.output_dirs import replace_output_dir

log = logging.getLogger(__name__)

FolderWriter = Callable[[PreTrainedModel, Path], None]  # (the float student, the staging folder) -> more files in it

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
    """The student language model (built with its family's Auto class, masked or causal LM) with the checkpoint's
    weights, in eval mode on the CPU."""
    student_config = dict(checkpoint["student_config"])
    config = AutoConfig.for_model(student_config.pop("model_type"), **student_config)
    check_model_size(config, "the checkpoint's student_config")
    model = model_family(config, "the checkpoint's student_config").auto_class.from_config(config)
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


def write_student_folder(
    ckpt: str | Path,
    out: str | Path,
    tokenizer: str | None = None,
    dtype: str | None = None,
    overwrite: bool = False,
    writers: Sequence[FolderWriter] = (),
) -> None:
    """Write the checkpoint's student and its tokenizer to `out` in Hugging Face format, then whatever `writers` add.

    The folder is written whole through a staging folder (`distil.run.output_dirs`): an earlier export at `out` is
    replaced, anything else there is refused unless `overwrite`; a failure (e.g. of a writer's check) leaves `out` as
    it was.

    Args:
        ckpt: `.ckpt` file written by `distil.train`.
        out: output folder.
        tokenizer: tokenizer directory or hub id; None takes the teacher's from the checkpoint's run config.
        dtype: dtype of the saved weights ("float32", "float16" or "bfloat16"); None = the dtype the run's teacher
            is stored in (its config.json), so that the student's size on disk compares with its teacher's.
        overwrite: replace `out` whole even when it is not an earlier export.
        writers: each gets the float student (its weights rounded to `dtype`, as saved) and the staging folder.
    """
    if dtype is not None:
        check_saved_dtype(dtype)
    checkpoint = read_checkpoint(ckpt)
    model = student_from_checkpoint(checkpoint)
    saved_tokenizer = checked_tokenizer(checkpoint, model, tokenizer)
    dtype = saved_dtype(checkpoint, dtype)

    def write(directory: Path) -> None:
        save_model_folder(model, saved_tokenizer, directory, dtype)
        for writer in writers:
            writer(model, directory)

    replace_output_dir(out, "hf_model", write, overwrite, "out", details={"checkpoint": str(ckpt), "dtype": dtype})
    log.info("exported %s -> %s (%s weights)", ckpt, out, dtype)


def hf_model_path(key: str, value: str, export_dir: Path) -> str:
    """A Hugging Face directory or hub id for `key=value`; a `.ckpt` is exported to `export_dir/key` first.

    Raises FileNotFoundError naming the key when `value` looks like a local path that does not exist.
    """
    path = Path(value).expanduser()
    if path.suffix == ".ckpt":
        if not path.is_file():
            raise FileNotFoundError(f"{key}={value!r} does not exist (a .ckpt file written by distil.train)")
        out = export_dir / key
        write_student_folder(path, out)
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
