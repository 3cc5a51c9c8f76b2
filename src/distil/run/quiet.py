"""Third-party console lines a run does not need, silenced where they are made; each filter says why.

Called once by the entry points before any work. Nothing of this project's own output is filtered.
"""

from __future__ import annotations

import logging
import warnings

from transformers.utils import logging as transformers_logging

LIGHTNING_INFO_LOGGER = "lightning.pytorch.utilities.rank_zero"  # where Lightning's rank_zero_info lines go


def not_a_tip(record: logging.LogRecord) -> bool:
    """False for Lightning's advertisements of its cloud products ("💡 Tip: ... try installing litlogger")."""
    return not str(record.msg).startswith("💡 Tip")


def not_quantization_chatter(record: logging.LogRecord) -> bool:
    """False for the info and warning lines of ONNX Runtime's quantization tool, logged on the root logger: a line per
    tensor it skips, and advice to pre-process the graph (shape inference and fusions) that
    `distil.exporting.int8_files` does not take (it quantizes the exported graph as checked against PyTorch)."""
    return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname


def quiet_third_party_output() -> None:
    """Silence the known third-party noise of a run (warnings, tips and progress bars that say nothing about it)."""
    # Lightning 2.6 calls `isinstance(treespec, LeafSpec)`, deprecated by torch 2.13: a Lightning matter, once per run.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # The frozen teacher is in eval mode on purpose (no dropout); Lightning warns about any module in eval mode.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    # The module finds its row index in `transfer_batch_to_device`; Lightning warns whenever a module overrides it
    # while a data module is given, although the data module does not (it keeps its stream position in another hook).
    warnings.filterwarnings("ignore", message=r"You have overridden `transfer_batch_to_device` in `LightningModule`")
    logging.getLogger(LIGHTNING_INFO_LOGGER).addFilter(not_a_tip)
    logging.getLogger().addFilter(not_quantization_chatter)
    # PyTorch's eager-mode quantization (the torch_dynamic INT8 variant) warns on every quantized weight that its
    # quantized tensors are deprecated (in favour of torchao); distil.exporting.int8_files documents the variant so.
    warnings.filterwarnings("ignore", message=r"torch.quantize_per_tensor, torch.quantize_per_channel")
    # transformers' bars for loading and saving the weights of a model take a line each and finish in a blink.
    transformers_logging.disable_progress_bar()
