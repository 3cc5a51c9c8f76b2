"""A Hugging Face model as an ONNX graph: which inputs the graph takes, writing it, checking it against PyTorch, and
running it with ONNX Runtime on the CPU.

The graph takes `input_ids` and `attention_mask`, and `token_type_ids` only when the model's forward names it and the
tokenizer returns it (`onnx_input_names`): a DistilBERT student of a BERT teacher takes no token types although the
BERT tokenizer returns them, a BERT-shaped fine-tuned model takes them, a RoBERTa model's tokenizer returns none.
Every caller feeds a graph through `onnx_feed`, which reads the graph's own input names: the parity check, the INT8
calibration and scoring, `distil.evaluate` on exported files and the fine-tuned models' gate. A batch without
`token_type_ids` feeds zeros for them, the value the PyTorch forward assumes when it is given none. A causal LM is
exported without its key-value cache (`use_cache=False`): the graph gives the logits of every position of the input,
as a masked LM's does, and generation runs on the PyTorch model.

The same session serves as a forward for `distil.evaluation.speed` (timing) and as scored-position logits for
`distil.evaluation.scoring` (held-out accuracy and agreement), so the float and INT8 files are scored and timed as
the PyTorch models are. A session uses as many threads as torch (`torch.get_num_threads()`), so ONNX and PyTorch
timings of one report share the thread count that the report records.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel

ONNX_FILE = "model.onnx"  # the float graph of an export (`distil.export onnx=true`)
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # the inputs a graph may take, in this order
OPTIONAL_INPUTS = ("token_type_ids",)  # taken only when the model's forward names it and the tokenizer returns it
ONNX_EXTRA_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
EXAMPLE_TEXT = "a short example ."  # the example input of the export (any model's tokenizer encodes plain text)
PARITY_TEXTS = (  # two lengths, so the check exercises padding and the dynamic sequence axis
    "the capital of france is paris.",
    "she opened the door and walked into the room, where a letter from her brother lay on the table.",
)


def check_onnx_installed(key: str = "onnx=true") -> None:
    """Raise before any work, naming the extra to install, when the optional ONNX packages are missing."""
    missing = [name for name in ONNX_EXTRA_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"{key} needs {missing}: install the ONNX extra with `pip install -e .[onnx]`")


def onnx_input_names(model: PreTrainedModel, available: Iterable[str]) -> list[str]:
    """The inputs of `model`'s graph: `input_ids`, `attention_mask`, and each optional input (`token_type_ids`)
    that the model's forward names and `available` holds (the tokenizer's `model_input_names`, or a batch's keys)."""
    takes, available = set(inspect.signature(model.forward).parameters), set(available)
    return [name for name in ONNX_INPUTS if name not in OPTIONAL_INPUTS or (name in takes and name in available)]


def onnx_feed(names: Sequence[str], batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The arrays of the graph inputs `names` from a batch of tensors; a `token_type_ids` the batch lacks is zeros
    (what the PyTorch forward assumes without it). Raises naming any other input the batch lacks."""
    missing = [name for name in names if name not in batch and name not in OPTIONAL_INPUTS]
    if missing:
        raise KeyError(f"the ONNX graph takes {list(names)} but the batch has no {missing} (it has {sorted(batch)})")
    feed = {name: batch[name] if name in batch else torch.zeros_like(batch["input_ids"]) for name in names}
    return {name: tensor.detach().cpu().numpy() for name, tensor in feed.items()}


class OutputsOnly(torch.nn.Module):
    """Wraps a Hugging Face model so that ONNX sees tensors in (`input_ids`, `attention_mask`, and `token_type_ids`
    when the graph takes them) and the model output's `outputs` out (`logits` of a language model or a classifier).
    A model that can return a key-value cache (a causal LM: its forward takes `use_cache`) is run without one."""

    def __init__(self, model: PreTrainedModel, outputs: tuple[str, ...] = ("logits",)) -> None:
        super().__init__()
        self.model = model
        self.outputs = tuple(outputs)
        self.no_cache = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids=None):
        types = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        output = self.model(input_ids=input_ids, attention_mask=attention_mask, **types, **self.no_cache)
        values = tuple(getattr(output, name) for name in self.outputs)
        return values[0] if len(values) == 1 else values


def export_onnx(
    model: PreTrainedModel,
    example: dict[str, torch.Tensor],
    path: str | Path,
    opset: int,
    outputs: tuple[str, ...] = ("logits",),
) -> list[str]:
    """Write `model` as ONNX (torch.export based exporter; needs the ONNX extra) with dynamic batch and length, and
    return the graph's input names (`onnx_input_names` of the keys of `example`, a batch of model inputs).
    `outputs`: the model outputs the graph returns, by name."""
    names = onnx_input_names(model, example)
    batch, length = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dynamic = {0: batch, 1: length}
    torch.onnx.export(
        OutputsOnly(model.float().eval(), outputs).eval(),
        tuple(example[name] for name in names),
        str(path),
        input_names=names,
        output_names=list(outputs),
        opset_version=opset,
        dynamo=True,
        dynamic_shapes=tuple(dynamic for _ in names),
    )
    return names


def write_checked_onnx(model: PreTrainedModel, tokenizer, directory: Path, opset: int, atol: float) -> float:
    """Write `directory/model.onnx` of a language model (masked or causal) and check it against PyTorch with
    `tokenizer` (the one saved beside it); returns the largest absolute logit difference and raises when it exceeds
    `atol`."""
    path = directory / ONNX_FILE
    example = tokenizer([EXAMPLE_TEXT], return_tensors="pt")  # every input the tokenizer returns
    export_onnx(model, example, path, opset)
    diff = onnx_max_abs_diff(model, tokenizer, path)
    if not diff <= atol:
        raise RuntimeError(f"ONNX logits differ from PyTorch by {diff:.3e} > onnx_atol={atol}")
    return diff


def padded_batch(tokenizer, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """The texts encoded as one batch padded at the end: every input the tokenizer returns, the ids padded with its
    padding token or, when it has none (GPT-2's), its end-of-text token (the attention mask hides them either way)."""
    encodings = [tokenizer(text) for text in texts]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    length = max(len(encoding["input_ids"]) for encoding in encodings)
    return {
        name: torch.tensor(
            [e[name] + [pad_id if name == "input_ids" else 0] * (length - len(e[name])) for e in encodings]
        )
        for name in encodings[0].keys()
    }


def onnx_max_abs_diff(model: PreTrainedModel, tokenizer, path: str | Path) -> float:
    """Largest |ONNX Runtime logits - PyTorch logits| over a padded batch of `PARITY_TEXTS` (real tokens only); both
    models get the graph's inputs."""
    batch = padded_batch(tokenizer, PARITY_TEXTS)
    session = cpu_session(path)
    names = session_input_names(session)
    with torch.inference_mode():
        expected = OutputsOnly(model.float().eval())(
            **{name: torch.from_numpy(a) for name, a in onnx_feed(names, batch).items()}
        )
    got = torch.from_numpy(session.run(["logits"], onnx_feed(names, batch))[0])
    real = batch["attention_mask"].bool()
    return (got[real] - expected[real]).abs().max().item()


def cpu_session(path: str | Path):
    """An ONNX Runtime CPU session of the file at `path`, with torch's thread count."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3  # errors only: no warnings about unused initializers of quantized graphs
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def session_input_names(session) -> list[str]:
    return [graph_input.name for graph_input in session.get_inputs()]


def graph_input_names(path: str | Path) -> list[str]:
    """The input names of the ONNX file at `path`, read without its weights."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {tensor.name for tensor in graph.initializer}
    return [graph_input.name for graph_input in graph.input if graph_input.name not in initializers]


class OnnxLanguageModel:
    """The ONNX file of a language model (masked or causal) at `path`: `forward(input_ids, attention_mask)` gives all
    logits (as a tensor), `scored_logits(input_ids, attention_mask, scored)` those at the scored positions."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.session = cpu_session(self.path)
        self.input_names = session_input_names(self.session)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feed = onnx_feed(self.input_names, {"input_ids": input_ids, "attention_mask": attention_mask})
        return torch.from_numpy(self.session.run(["logits"], feed)[0])

    def scored_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, scored: torch.Tensor):
        return self.forward(input_ids, attention_mask)[scored.cpu()].to(scored.device)


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
