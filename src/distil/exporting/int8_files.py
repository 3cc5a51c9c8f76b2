"""INT8 variants of an exported model for CPU inference, written beside its float `model.onnx`.

- `onnx_dynamic`: ONNX Runtime dynamic quantization of `model.onnx` -> `model.int8-dynamic.onnx`. Weights of the
  MatMuls and of the embedding lookups (Gather) are stored in 8 bits; activations are quantized on the fly. The word
  embedding table, most of a small student's weights, is one initializer shared by the embedding Gather and the
  (tied) output projection, so it is stored once, in 8 bits; the projection dequantizes it at run time. (The ONNX
  exporter folds the projection's transpose into a second table only under 8192 elements, far below a real
  vocabulary.)
- `onnx_static`: ONNX Runtime static quantization (QDQ format) -> `model.int8-static.onnx`: activation ranges of the
  MatMuls and Gathers are calibrated on rows of the training data (fed as the graph's inputs), weights per channel.
- `torch_dynamic`: PyTorch's dynamic quantization (`torch.ao.quantization`, deprecated upstream in favour of
  torchao) of every `nn.Linear`: int8 weights, activations quantized on the fly; the embeddings stay float32 and a
  tied output projection gets an int8 copy of its own. It is measured in memory and not written: its packed weights
  are torch objects that only `torch.save`'s pickle stores, and a pickle is neither portable nor safe to load from
  elsewhere (the project ships safetensors and ONNX). Its size is what `torch.save` of its state dict would take;
  `torch_dynamic_int8(model)` rebuilds it from the float model in a second.

Which of them a masked LM and a fine-tuned model get, and how they are gated: `lm_int8`, `task_int8`,
`int8_gate`.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from transformers import PreTrainedModel

from distil.exporting.onnx_model import ONNX_FILE, graph_input_names, onnx_feed

VARIANT_FILES = {  # INT8 variant -> its file beside model.onnx (None: measured in memory, not written)
    "onnx_dynamic": "model.int8-dynamic.onnx",
    "onnx_static": "model.int8-static.onnx",
    "torch_dynamic": None,
}


VARIANTS = tuple(VARIANT_FILES)


QUANTIZED_OP_TYPES = ["MatMul", "Gather"]  # the weights of a transformer encoder: linear layers and embedding lookups


def onnx_dynamic_int8(float_path: Path, path: Path) -> None:
    """Write ONNX Runtime's dynamic INT8 quantization of `float_path` (int8 weights of MatMuls and Gathers)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(float_path, path, op_types_to_quantize=QUANTIZED_OP_TYPES, weight_type=QuantType.QInt8)


def onnx_static_int8(float_path: Path, path: Path, calibration: Iterable[dict]) -> None:
    """Write ONNX Runtime's static INT8 quantization (QDQ) of `float_path`, activation ranges from the batches of
    `calibration` (fed as the graph's inputs, `onnx_feed`)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    names = graph_input_names(float_path)

    class CalibrationRows(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration)

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else onnx_feed(names, batch)

    quantize_static(
        float_path,
        path,
        CalibrationRows(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=QUANTIZED_OP_TYPES,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )


def torch_dynamic_int8(model: PreTrainedModel) -> torch.nn.Module:
    """A copy of `model` with every `nn.Linear` dynamically quantized to int8 by PyTorch (x86 / fbgemm kernels)."""
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=False).eval()


def state_dict_bytes(model: torch.nn.Module) -> int:
    """Bytes of `torch.save(model.state_dict())`: the size a PyTorch-quantized model would take on disk."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def limit_rows(batches: Iterable[dict], rows: int) -> Iterator[dict]:
    """The first `rows` rows of `batches`, in batches (the last one cut short)."""
    remaining = rows
    for batch in batches:
        if remaining <= 0:
            return
        yield {name: tensor[:remaining] for name, tensor in batch.items()}
        remaining -= len(batch["input_ids"])


def write_onnx_int8_files(directory: Path, variants: Sequence[str], calibration: Iterable[dict]) -> None:
    """Write the ONNX INT8 file of each of `variants` that has one beside `directory/model.onnx`; `onnx_static`'s
    activation ranges come from the `calibration` batches."""
    float_path = directory / ONNX_FILE
    for variant in variants:
        if variant == "onnx_dynamic":
            onnx_dynamic_int8(float_path, directory / VARIANT_FILES[variant])
        elif variant == "onnx_static":
            onnx_static_int8(float_path, directory / VARIANT_FILES[variant], calibration)
