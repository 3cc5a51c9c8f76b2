"""`python -m distil.prepare`: tokenize a corpus once, with many processes, into binary token shards.

Reads the sources of a data config (`data=<name>`, the same held-out validation documents as training), tokenizes
chunks of documents in `num_proc` processes, and writes `train-*.bin`, `validation-*.bin`, `token_counts.npy`
(for mlm_smoothing) and `metadata.json` (with each shard's size and sha256) to `output_dir`, through a staging folder
renamed into place when complete: an interrupted run leaves an earlier `output_dir` as it was. Reports tokens/s
while it runs; with `measure_loader_batches > 0` it then measures the shard loader's tokens/s. Train from the result
with `python -m distil.train data=shards data.shards_dir=<output_dir>`.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from pathlib import Path

import hydra
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from distil.data.corpus import Corpus
from distil.data.packing import RowFormat, concatenate_documents
from distil.data.shard_writer import ShardWriter
from distil.data.shards import FORMAT, TOKEN_COUNTS_FILE, VERSION, token_dtype, write_metadata
from distil.data.sources import resolve_sources
from distil.data.text_rows import batched
from distil.data.throughput import measure_shard_loader
from distil.data.tokenization import TextEncoder, load_tokenizer, vocabulary_fingerprint
from distil.families import teacher_family
from distil.modules.teacher import load_teacher_config
from distil.run.output_dirs import replace_output_dir

log = logging.getLogger(__name__)

worker_state: dict = {}


def start_worker(tokenizer_name: str, causal: bool) -> None:
    """Pool initializer: each tokenizing process loads the tokenizer once."""
    tokenizer = load_tokenizer(tokenizer_name, causal=causal)
    worker_state.update(
        encode=TextEncoder(tokenizer),
        separator=RowFormat.of(tokenizer, causal).separator,
        vocab_size=len(tokenizer),
        dtype=token_dtype(len(tokenizer)),
    )


def tokenize_chunk(documents: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """Documents -> (their ids each followed by the separator in the shard dtype, id counts, number of documents)."""
    tokens = concatenate_documents(worker_state["encode"](documents), worker_state["separator"])
    counts = np.bincount(tokens, minlength=worker_state["vocab_size"])
    return tokens.astype(worker_state["dtype"]), counts, len(documents)


class ProgressReport:
    """Logs tokens/s every `interval` seconds and at the end."""

    def __init__(self, interval: float = 30.0) -> None:
        self.start = self.last = time.perf_counter()
        self.interval = interval

    def update(self, tokens: int, final: bool = False) -> float:
        now = time.perf_counter()
        rate = tokens / max(now - self.start, 1e-9)
        if final or now - self.last >= self.interval:
            log.info("%s%d tokens in %.1f s: %.0f tokens/s", "done: " if final else "", tokens, now - self.start, rate)
            self.last = now
        return rate


def write_split(
    pool,
    documents,
    writer: ShardWriter,
    documents_per_chunk: int,
    counts: np.ndarray | None,
    report: ProgressReport,
    tokens_before: int,
) -> None:
    """Tokenize `documents` in the pool (order kept) and append them to `writer`; add their ids to `counts`."""
    for tokens, chunk_counts, n_documents in pool.imap(tokenize_chunk, batched(documents, documents_per_chunk)):
        writer.write(tokens, n_documents)
        if counts is not None:
            counts += chunk_counts
        report.update(tokens_before + writer.tokens)


def prepare(
    tokenizer: str,
    sources: list,
    fallback_sources: list,
    output_dir: str,
    val_documents: int,
    seed: int,
    num_proc: int,
    documents_per_chunk: int = 1000,
    shard_tokens: int = 100_000_000,
    overwrite: bool = False,
    fallback_when_missing: str | None = None,
    causal: bool = False,
) -> dict:
    """Writes the shard directory whole (a staging folder renamed into place when complete, `distil.run.output_dirs`:
    an earlier shard directory is replaced, any other non-empty folder refused unless `overwrite`); returns its
    metadata (with `tokens_per_second` of the tokenization). `causal`: documents joined by end-of-text for a causal LM
    (the teacher family's kind) instead of [SEP]."""
    if num_proc < 1 or documents_per_chunk < 1:
        raise ValueError(f"num_proc={num_proc}, documents_per_chunk={documents_per_chunk}; allowed: integers >= 1")
    loaded = load_tokenizer(tokenizer, key="tokenizer", causal=causal)
    dtype = token_dtype(len(loaded))
    resolved = resolve_sources(list(sources), list(fallback_sources or []), fallback_when_missing)
    corpus = Corpus(resolved, val_documents, seed, loaded.unk_token, drop_unknown_markers=causal)
    report = ProgressReport()
    metadata: dict = {}

    def write(directory: Path) -> None:
        counts = np.zeros(len(loaded), dtype=np.int64)
        validation = ShardWriter(directory, "validation", dtype, shard_tokens)
        train = ShardWriter(directory, "train", dtype, shard_tokens)
        with multiprocessing.get_context("spawn").Pool(
            num_proc, initializer=start_worker, initargs=(tokenizer, causal)
        ) as pool:
            write_split(pool, corpus.validation_documents(), validation, documents_per_chunk, None, report, 0)
            write_split(
                pool, corpus.training_documents(0), train, documents_per_chunk, counts, report, validation.tokens
            )
        splits = {"validation": validation.close(), "train": train.close()}
        if splits["train"]["tokens"] == 0:
            raise ValueError(
                f"no training text: all {splits['validation']['documents']} documents went to validation "
                f"(val_documents={val_documents} per source); lower val_documents or add text"
            )
        np.save(directory / TOKEN_COUNTS_FILE, counts)
        metadata.update(
            format=FORMAT,
            version=VERSION,
            tokenizer=tokenizer,
            vocab_size=len(loaded),
            vocab_fingerprint=vocabulary_fingerprint(loaded),
            dtype=dtype.name,
            causal=causal,
            separator_id=RowFormat.of(loaded, causal).separator,
            val_documents=val_documents,
            seed=seed,
            sources=[source.name for source in corpus.sources],
            splits=splits,
        )
        write_metadata(directory, metadata)

    replace_output_dir(output_dir, "token_shards", write, overwrite, key="output_dir")
    splits = metadata["splits"]
    rate = report.update(splits["validation"]["tokens"] + splits["train"]["tokens"], final=True)
    log.info(
        "wrote %s: %d training tokens (%d documents), %d validation tokens, dtype %s",
        output_dir,
        splits["train"]["tokens"],
        splits["train"]["documents"],
        splits["validation"]["tokens"],
        dtype.name,
    )
    return {**metadata, "tokens_per_second": rate}


@hydra.main(version_base="1.3", config_path="../../conf", config_name="prepare")
def main(cfg: DictConfig) -> None:
    causal = teacher_family(load_teacher_config(cfg.teacher.name_or_path, cfg.teacher.trust_remote_code)).causal
    sources = [instantiate(node) for node in cfg.data.sources or []]
    fallback_sources = [instantiate(node) for node in cfg.data.get("fallback_sources") or []]
    prepare(
        cfg.tokenizer,
        sources,
        fallback_sources,
        cfg.output_dir,
        cfg.val_documents,
        cfg.seed,
        cfg.num_proc,
        cfg.documents_per_chunk,
        cfg.shard_tokens,
        cfg.overwrite,
        cfg.data.get("fallback_when_missing"),
        causal,
    )
    if cfg.measure_loader_batches > 0:
        for clock_name, clock in (("wall-clock", time.perf_counter), ("CPU", time.process_time)):
            rate = measure_shard_loader(
                cfg.output_dir,
                cfg.tokenizer,
                cfg.data.max_length,
                cfg.data.batch_size,
                cfg.measure_loader_batches,
                causal,
                clock=clock,
            )
            log.info(
                "shard loader (one process, max_length %d, batch %d): %.0f tokens per %s second",
                cfg.data.max_length,
                cfg.data.batch_size,
                rate,
                clock_name,
            )


if __name__ == "__main__":
    main()
