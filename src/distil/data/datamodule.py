"""CorpusDataModule: text sources (or pre-tokenized shards) -> token ids -> packed rows -> masked-LM batches, or
causal-LM batches with next-token labels (`causal`, set by the entry points from the teacher's family); or instruction
examples (`instructions`) -> one padded row each -> causal-LM batches whose labels are the response's next tokens.

Training batches come from an endless IterableDataset (pass after pass over the corpus; the run length is set by
`trainer.max_steps`) split across every (rank, dataloader worker) slot. The consumed position of every slot is
part of the Lightning checkpoint (`state_dict` / `load_state_dict`), so a resumed run continues with exactly the
batches the uninterrupted run would have seen. Validation batches come from held-out documents with fixed masks
(causal batches need none). Instruction rows (`distil.data.instruction_rows`) stream, shard and resume through the
same `BatchStream` and positions; their validation set is the first `val_documents` examples.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from distil.data.batch_stream import BatchStream, PositionedLoader
from distil.data.corpus import Corpus
from distil.data.instruction_encoding import InstructionEncoder, prescan_instructions
from distil.data.instruction_examples import InstructionFiles
from distil.data.instruction_rows import InstructionRows
from distil.data.masking import MaskingCollator, check_mask_probability
from distil.data.next_token import NextTokenCollator, ScoredRowCollator
from distil.data.packing import RowFormat, concatenate_documents, pack_rows
from distil.data.shard_rows import ShardRows
from distil.data.shards import (
    SPLITS,
    TOKEN_COUNTS_FILE,
    check_row_kind,
    check_split_files,
    check_tokenizer,
    open_split,
    read_metadata,
    verify_at_start,
)
from distil.data.sources import SourceUnavailable, describe_sources, prescan_sources, resolve_sources
from distil.data.text_rows import TextRows, batched
from distil.data.tokenization import TextEncoder, load_tokenizer
from distil.data.validation import ValidationBatches
from distil.topk_cache.store import open_teacher_cache
from distil.topk_cache.stream import CachedTargetsCollator
from distil.value_checks import check_integer

log = logging.getLogger(__name__)

MIN_MAX_LENGTH = 8


class CorpusDataModule(pl.LightningDataModule):
    """Masked-LM or causal-LM batches (input_ids, attention_mask, labels: int64 (batch_size, max_length)) from a
    corpus: labels hold the original token at masked positions, or the next token (`distil.data.next_token`).

    Args:
        tokenizer: hub id or local directory of the (teacher's) tokenizer.
        causal: rows for a causal LM (documents joined by end-of-text, no framing, next-token labels) instead of a
            masked LM; the entry points pass the teacher family's kind, so it is no config key.
        sources: document sources (`distil.data.sources.LocalFiles` / `HubDataset`), interleaved by weight.
        fallback_sources: sources used instead when one of `sources` is unavailable and the folder
            `fallback_when_missing` does not exist (e.g. the demo's shared files absent).
        fallback_when_missing: the folder whose absence allows `fallback_sources` (needed with them).
        validation_sources: sources whose documents, all of them, form the validation set instead of the held-out
            ones of `sources` (e.g. text neither model was trained on); never a fallback: an unreadable one is an
            error. The first `val_documents` documents of `sources` still never reach training.
        shards_dir: directory written by `python -m distil.prepare`; replaces `sources` (no tokenization).
        instructions: instruction examples (`distil.data.instruction_examples.InstructionFiles`: prompt and response,
            or chat messages); replaces `sources` for a causal LM: one example per row, padded to max_length, only
            the response's tokens labelled (and, with `distill.kl_positions: masked`, given soft targets).
        verify_shards: with shards, compare every shard's sha256 with its metadata at start (sizes are always
            compared): true, false, or "auto" (shards of at most 512 MiB in all; `distil.data.shards.verify_at_start`).
        prescan: read every document of the text sources (or every instruction example, tokenized) once at start, so
            that a record that cannot be read fails before training, naming its file and line: true, false, or
            "auto" (local files of at most 1 GiB in all; `distil.data.sources.prescan_sources`).
        shuffle: with shards, visit rows in a seeded random order, new each pass (text sources stream in order).
        max_length: tokens per row, [CLS] and [SEP] included (masked rows).
        batch_size: rows per training batch on each device.
        val_batch_size: rows per validation batch (default: batch_size).
        num_workers: dataloader worker processes per device.
        mlm_probability: fraction of real non-special tokens masked per batch (masked rows only).
        mlm_smoothing: exponent of count(token)^-s position weights (original DistilBERT: 0.7); null = uniform.
        token_counts: `.npy` token counts from `python -m distil.prepare` (needed by mlm_smoothing).
        val_documents: documents held out for validation from the start of every source (with shards: set by
            `distil.prepare`; here only 0 matters, meaning no validation loader; with instructions: examples held
            out from the start of the files).
        documents_per_block: documents per block, the unit tokenized together and given to one reader slot.
        seed: seed of source interleaving and masking.
        teacher_cache: a `distil.cache_teacher` folder on the shards: the training batches' masks and teacher outputs
            (`distil.topk_cache.stream`); passed by the entry point from `distill.teacher_cache` (no data key).
    """

    def __init__(
        self,
        tokenizer: str,
        causal: bool = False,
        sources: Sequence | None = None,
        fallback_sources: Sequence | None = None,
        fallback_when_missing: str | None = None,
        validation_sources: Sequence | None = None,
        shards_dir: str | None = None,
        instructions: InstructionFiles | None = None,
        verify_shards: bool | str = "auto",
        prescan: bool | str = "auto",
        shuffle: bool = True,
        max_length: int = 128,
        batch_size: int = 32,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        mlm_probability: float = 0.15,
        mlm_smoothing: float | None = None,
        token_counts: str | None = None,
        val_documents: int = 100,
        documents_per_block: int = 256,
        seed: int = 0,
        teacher_cache: str | None = None,
    ) -> None:
        super().__init__()
        for key, value, minimum in (
            ("max_length", max_length, MIN_MAX_LENGTH),
            ("batch_size", batch_size, 1),
            ("num_workers", num_workers, 0),
            ("val_documents", val_documents, 0),
            ("documents_per_block", documents_per_block, 1),
        ):
            check_integer(f"data.{key}", value, minimum)
        check_integer("data.val_batch_size", val_batch_size, 1, optional=True)
        check_mask_probability(mlm_probability)
        self.tokenizer_name = tokenizer
        self.tokenizer = load_tokenizer(tokenizer, causal=causal)
        self.row_format = RowFormat.of(self.tokenizer, causal)
        if bool(sources) + bool(shards_dir) + (instructions is not None) != 1:
            raise ValueError(
                f"give exactly one of sources (got {len(sources or [])}), shards_dir (got {shards_dir!r}) and "
                f"instructions (got {instructions and instructions.name!r})"
            )
        if instructions is not None and not causal:
            raise ValueError("data.instructions need a causal-LM teacher; this teacher is a masked LM")
        if instructions is not None and validation_sources:
            raise ValueError(
                f"data.instructions hold their own validation set (the first val_documents={val_documents} examples): "
                f"remove the {len(validation_sources)} data.validation_sources"
            )
        self.validation_sources = list(validation_sources or [])
        for source in self.validation_sources:
            try:
                source.check()
            except SourceUnavailable as error:
                raise SourceUnavailable(f"data.validation_sources: {error}") from error
        if self.validation_sources:
            log.info("validation: data.validation_sources: %s", describe_sources(self.validation_sources))
        self.active_sources = (  # the sources read, checked now: a bad path fails before any weights load
            resolve_sources(list(sources), list(fallback_sources or []), fallback_when_missing) if sources else []
        )
        prescan_sources(self.active_sources + self.validation_sources, prescan)
        self.instructions = instructions
        self.instruction_encoder = None
        if instructions is not None:
            instructions.files()  # checked now: a pattern that matches nothing fails before any weights load
            self.instruction_encoder = InstructionEncoder(self.tokenizer, max_length)
            prescan_instructions(instructions, self.instruction_encoder, prescan)
        self.shards_dir = shards_dir
        self.shuffle = shuffle
        self.shards_metadata = None
        if shards_dir:
            self.shards_metadata = read_metadata(shards_dir)
            check_tokenizer(self.shards_metadata, self.tokenizer, tokenizer, shards_dir)
            check_row_kind(self.shards_metadata, causal, shards_dir)
            verify = verify_at_start(verify_shards, self.shards_metadata)
            for split in SPLITS:
                check_split_files(shards_dir, self.shards_metadata, split, verify)
            if mlm_smoothing is not None and token_counts is None:
                token_counts = str(Path(shards_dir) / TOKEN_COUNTS_FILE)
        self.teacher_cache = open_teacher_cache(teacher_cache, shards_dir, verify_shards)
        self.max_length = max_length
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.val_documents = val_documents
        self.documents_per_block = documents_per_block
        self.seed = seed
        counts = np.load(token_counts) if token_counts else None
        if instructions is not None:
            self.collator = ScoredRowCollator.from_tokenizer(self.tokenizer, max_length)
        elif causal:
            self.collator = NextTokenCollator.from_tokenizer(self.tokenizer, max_length)
        else:
            self.collator = MaskingCollator.from_tokenizer(
                self.tokenizer,
                max_length,
                mlm_probability=mlm_probability,
                mlm_smoothing=mlm_smoothing,
                token_counts=counts,
            )
        self.validation_rows: np.ndarray | list | None = None
        self.consumed_positions: dict[int, tuple[int, ...]] = {}
        self.train_loader: PositionedLoader | None = None
        self.restored_layout: dict | None = None

    def corpus(self) -> Corpus:
        return Corpus(
            self.active_sources,
            self.val_documents,
            self.seed,
            self.tokenizer.unk_token,
            self.validation_sources,
            drop_unknown_markers=self.row_format.causal,
        )

    def rank_and_world_size(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", "validate", None) and self.validation_rows is None and self.has_validation():
            self.validation_rows = self.build_validation_rows()

    def has_validation(self) -> bool:
        """False when val_documents=0 (no validation) or the shards hold no validation documents, unless
        validation_sources are given."""
        if self.validation_sources:
            return True
        if self.val_documents == 0:
            return False
        if self.shards_metadata is not None:
            return self.shards_metadata["splits"]["validation"]["documents"] > 0
        return self.val_documents > 0

    def validation_tokens(self) -> np.ndarray:
        """Token ids of the held-out documents (or of the validation sources), each followed by the separator."""
        if self.shards_metadata is not None and not self.validation_sources:
            shards = open_split(self.shards_dir, self.shards_metadata, "validation")
            return np.concatenate(shards).astype(np.int64) if shards else np.zeros(0, dtype=np.int64)
        encode, separator = TextEncoder(self.tokenizer), self.row_format.separator
        blocks = batched(self.corpus().validation_documents(), self.documents_per_block)
        pieces = [concatenate_documents(encode(documents), separator) for documents in blocks]
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)

    def instruction_rows(self) -> InstructionRows:
        return InstructionRows(self.instructions, self.instruction_encoder, self.val_documents)

    def build_validation_rows(self) -> np.ndarray | list:
        """Rows (n, max_length) packed from the validation documents, or a list of the validation examples' rows."""
        if self.instructions is not None:
            rows = [self.instruction_encoder(example) for example in self.instruction_rows().validation_examples()]
            log.info("validation: the first %d examples of %s", len(rows), self.instructions.name)
            return rows
        tokens = self.validation_tokens()
        rows = pack_rows(tokens, self.max_length, self.row_format)
        if len(rows) == 0:
            held_out, remedy = (
                (f"data.validation_sources ({describe_sources(self.validation_sources)})", "give more text")
                if self.validation_sources
                else (
                    f"the held-out documents (val_documents={self.val_documents} per source)",
                    "raise val_documents (with shards: in `python -m distil.prepare`)",
                )
            )
            raise ValueError(
                f"validation set is empty: {held_out} hold {len(tokens)} tokens, less than one row of "
                f"max_length={self.max_length}; {remedy}"
            )
        log.info("validation: %d rows of %d tokens", len(rows), self.max_length)
        return rows

    def train_dataset(self) -> BatchStream:
        rank, world_size = self.rank_and_world_size()
        collator = self.collator
        if self.instructions is not None:
            rows = self.instruction_rows()
        elif self.shards_metadata is not None:
            index = self.teacher_cache is not None  # rows come with their index, which finds their cached outputs
            rows = ShardRows(
                self.shards_dir, self.shards_metadata, self.max_length, self.row_format, self.shuffle, self.seed, index
            )
            if index:
                collator = CachedTargetsCollator(self.teacher_cache, self.tokenizer.pad_token_id, self.max_length)
        else:
            rows = TextRows(
                self.corpus(), TextEncoder(self.tokenizer), self.max_length, self.row_format, self.documents_per_block
            )
        return BatchStream(rows, collator, self.batch_size, self.seed, rank, world_size, self.consumed_positions)

    def train_dataloader(self) -> PositionedLoader:
        if self.num_workers > 0:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # workers tokenize; no nested thread pools
        self.train_loader = PositionedLoader(
            self.train_dataset(), num_workers=self.num_workers, pin_memory=torch.cuda.is_available()
        )
        return self.train_loader

    def val_dataloader(self) -> DataLoader | list:
        if not self.has_validation():
            return []
        if self.validation_rows is None:
            self.setup("validate")
        batches = ValidationBatches(self.validation_rows, self.collator, self.val_batch_size, self.seed)
        return DataLoader(batches, batch_size=None, shuffle=False, pin_memory=torch.cuda.is_available())

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Records the stream position of each training batch the trainer uses (the batch itself is unchanged)."""
        if self.trainer is not None and self.trainer.training and self.train_loader is not None:
            slot, position = self.train_loader.take_position()
            self.consumed_positions[slot] = position
        return batch

    def layout(self) -> dict:
        """What the slot positions depend on; a resume with another layout cannot continue exactly."""
        _, world_size = self.rank_and_world_size()
        instructions = {"instructions": self.instructions.patterns} if self.instructions is not None else {}
        if self.teacher_cache is not None:
            instructions["teacher_cache"] = str(self.teacher_cache.directory)
        return instructions | {
            "world_size": world_size,
            "num_workers": max(self.num_workers, 1),
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "documents_per_block": self.documents_per_block,
            "seed": self.seed,
            "shards_dir": self.shards_dir,
            "shuffle": self.shuffle,
        }

    def state_dict(self) -> dict:
        """Consumed positions of all slots of all ranks (gathered when running distributed), and the layout."""
        positions = {slot: list(position) for slot, position in self.consumed_positions.items()}
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, positions)
            positions = {slot: position for rank_positions in gathered for slot, position in rank_positions.items()}
        return {"positions": positions, "layout": self.layout()}

    def load_state_dict(self, state_dict: dict) -> None:
        """Continues every slot after its last consumed batch, when the layout is the same as when saved."""
        if state_dict.get("layout") != self.layout():
            log.warning(
                "data layout changed since the checkpoint (saved %s, now %s): the data stream restarts from the "
                "beginning instead of continuing exactly",
                state_dict.get("layout"),
                self.layout(),
            )
            return
        self.consumed_positions = {int(slot): tuple(position) for slot, position in state_dict["positions"].items()}
