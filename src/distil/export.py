"""`python -m distil.export ckpt=PATH out=DIR [onnx=true [int8=true]]`: a training checkpoint -> a Hugging Face model
directory (`distil.exporting.checkpoint_export`) of the student, a masked LM (for `pipeline("fill-mask")`) or a
causal LM (for `pipeline("text-generation")`) as its family says.

With `onnx=true` the folder also holds `model.onnx` (input_ids, attention_mask and the token types where the student
takes them -> logits, dynamic batch and sequence length; a causal LM without its key-value cache;
`distil.exporting.onnx_model`), checked against the PyTorch model on a batch of real text: the largest absolute logit
difference is reported and must stay under `onnx_atol`. With `int8=true` it also holds the INT8 variants of
`model.onnx` and `quantization.json` (`distil.exporting.lm_int8`): their sizes and held-out scores next to
the float model's; the export fails, naming both numbers, when a masked LM's variant drops more than
`quantization.max_drop_points` of accuracy or a causal LM's variant raises the perplexity by more than
`quantization.max_ppl_increase_pct` percent. Everything is written into one staging folder, so the folder appears
whole or not at all.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from distil.data.tokenization import read_tokenizer
from distil.exporting.checkpoint_export import FolderWriter, write_student_folder
from distil.exporting.int8_gate import check_gate, format_gate
from distil.exporting.lm_int8 import Int8Settings, write_int8_variants
from distil.exporting.onnx_model import ONNX_FILE, check_onnx_installed, write_checked_onnx
from distil.run.quiet import quiet_third_party_output


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
    """Write the checkpoint's student to `out` (`write_student_folder`), with `model.onnx` of opset `onnx_opset`
    checked within `onnx_atol` when asked, and the INT8 variants of `int8` (printed side by side; `QualityGateError`,
    writing nothing, when one fails the gate). Returns the ONNX check's largest absolute logit difference, None
    without ONNX."""
    if int8 is not None and onnx_opset is None:
        raise ValueError("int8=true quantizes model.onnx: add onnx=true")
    onnx_diff: list[float] = []
    writers: list[FolderWriter] = []
    if onnx_opset is not None:

        def write_onnx(model, directory: Path) -> None:
            tokenizer = read_tokenizer(str(directory), "out")  # the one saved with the student
            onnx_diff.append(write_checked_onnx(model, tokenizer, directory, onnx_opset, onnx_atol))

        writers.append(write_onnx)
    if int8 is not None:

        def write_int8(model, directory: Path) -> None:
            report = write_int8_variants(model, directory, int8)
            print(format_gate(report))
            check_gate(report)

        writers.append(write_int8)
    write_student_folder(ckpt, out, tokenizer, dtype, overwrite, writers)
    return onnx_diff[0] if onnx_diff else None


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
