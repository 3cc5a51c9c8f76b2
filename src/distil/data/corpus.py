"""Training and validation documents: several sources interleaved by weight, validation held out by document.

The first `val_documents` documents of every source form the validation set and never appear in training, so
held-out metrics are measured on text the student never saw (whole documents, not rows of a seen document).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence

import numpy as np

log = logging.getLogger(__name__)


def interleave(streams: Sequence[Iterator[str]], weights: Sequence[float], rng: np.random.Generator) -> Iterator[str]:
    """Draw the next document from a stream chosen with probability proportional to its weight; an exhausted
    stream drops out and the others go on until all are exhausted."""
    active = list(range(len(streams)))
    weights = np.asarray(weights, dtype=np.float64)
    while active:
        if len(active) == 1:
            yield from streams[active[0]]
            return
        probabilities = weights[active] / weights[active].sum()
        chosen = active[rng.choice(len(active), p=probabilities)]
        try:
            yield next(streams[chosen])
        except StopIteration:
            active.remove(chosen)


def non_empty(documents: Iterator[str], description: str) -> Iterator[str]:
    """The documents that hold more than whitespace; the skipped ones are counted and logged."""
    skipped = 0
    for document in documents:
        if document.strip():
            yield document
        else:
            skipped += 1
    if skipped:
        log.info("%s: skipped %d empty documents", description, skipped)


class Corpus:
    """Document streams of the training passes and of the validation set, from the sources' `documents()`."""

    def __init__(self, sources: Sequence, val_documents: int, seed: int) -> None:
        if val_documents < 0:
            raise ValueError(f"val_documents={val_documents}; allowed: an integer >= 0 (documents per source)")
        self.sources = list(sources)
        self.val_documents = val_documents
        self.seed = seed

    def training_documents(self, pass_index: int) -> Iterator[str]:
        """All documents after the held-out ones; the interleaving order is drawn anew for every pass."""
        streams = [itertools.islice(non_empty(s.documents(), s.name), self.val_documents, None) for s in self.sources]
        rng = np.random.default_rng([self.seed, pass_index])
        return interleave(streams, [s.weight for s in self.sources], rng)

    def validation_documents(self) -> Iterator[str]:
        """The first `val_documents` documents of each source, interleaved in a fixed order."""
        streams = [itertools.islice(non_empty(s.documents(), s.name), self.val_documents) for s in self.sources]
        rng = np.random.default_rng([self.seed, 2**32 - 1])
        return interleave(streams, [s.weight for s in self.sources], rng)
