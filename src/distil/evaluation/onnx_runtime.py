"""An exported ONNX masked-LM (`input_ids`, `attention_mask` -> `logits`) run by ONNX Runtime on the CPU.

The same session serves as a forward for `distil.evaluation.speed` (timing) and as masked-position logits for
`distil.evaluate.masked_lm_scores` (held-out accuracy and agreement), so the float and INT8 files are scored and timed
exactly as the PyTorch models are. The session uses as many threads as torch (`torch.get_num_threads()`), so ONNX
and PyTorch timings of one report share the thread count that the report records.
"""

from __future__ import annotations

from pathlib import Path

import torch

ONNX_FILE = "model.onnx"  # the float graph of an export (`distil.export onnx=true`)


def cpu_session(path: str | Path):
    """An ONNX Runtime CPU session of the file at `path`, with torch's thread count."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3  # errors only: no warnings about unused initializers of quantized graphs
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxMaskedLM:
    """The ONNX masked-LM file at `path`: `forward(input_ids, attention_mask)` gives all logits (as a tensor),
    `masked_logits(input_ids, attention_mask, masked)` those at the masked positions."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.session = cpu_session(self.path)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feed = {"input_ids": input_ids.cpu().numpy(), "attention_mask": attention_mask.cpu().numpy()}
        return torch.from_numpy(self.session.run(["logits"], feed)[0])

    def masked_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, masked: torch.Tensor):
        return self.forward(input_ids, attention_mask)[masked.cpu()].to(masked.device)


def onnx_file_bytes(path: str | Path) -> int:
    """Bytes on disk of an ONNX model: the graph file plus the external weight files it names (the exporter writes
    the float weights to `model.onnx.data`)."""
    import onnx

    path = Path(path)
    graph = onnx.load(str(path), load_external_data=False).graph
    external = {
        entry.value
        for tensor in graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return path.stat().st_size + sum((path.parent / name).stat().st_size for name in external)
