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
    # transformers' bars for loading and saving the weights of a model take a line each and finish in a blink.
    transformers_logging.disable_progress_bar()
