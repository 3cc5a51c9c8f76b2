"""Training and validation documents: several sources interleaved by weight, validation held out by document.

The first `val_documents` documents of every source form the validation set and never appear in training, so
held-out metrics are measured on text the student never saw (whole documents, not rows of a seen document). Separate
`validation_sources` replace them as the validation set (e.g. text the teacher never saw either); the first
`val_documents` of the training sources still stay out of training, so the training text does not change. A
source's `unknown_marker` (WikiText's `<unk>`) becomes the tokenizer's own unknown token here; for a causal LM it is
left out with the space before it (`drop_unknown_markers`): a byte-level vocabulary has no unknown token (GPT-2's
`unk_token` is its end-of-text, which would end a document in its middle), and the marker kept as text would teach
the student a word that is in no text (the shared causal teacher gives it 16 nats a token, having never seen it).
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


def with_unknown_token(documents: Iterator[str], marker: str | None, unknown_token: str | None) -> Iterator[str]:
    """The documents with every `marker` replaced by `unknown_token` (unchanged when there is no marker)."""
    if marker is None:
        return documents
    return (document.replace(marker, unknown_token) for document in documents)


def without_marker(documents: Iterator[str], marker: str) -> Iterator[str]:
    """The documents with every `marker` left out, with the space before it where there is one."""
    return (document.replace(f" {marker}", "").replace(marker, "") for document in documents)


class Corpus:
    """Document streams of the training passes and of the validation set, from the sources' `documents()`.

    `unknown_token` is the tokenizer's unknown token, which sources with an `unknown_marker` need unless
    `drop_unknown_markers` (then their markers are left out).
    """

    def __init__(
        self,
        sources: Sequence,
        val_documents: int,
        seed: int,
        unknown_token: str | None = None,
        validation_sources: Sequence = (),
        drop_unknown_markers: bool = False,
    ) -> None:
        if val_documents < 0:
            raise ValueError(f"val_documents={val_documents}; allowed: an integer >= 0 (documents per source)")
        for source in [*sources, *validation_sources]:
            if (
                getattr(source, "unknown_marker", None) is not None
                and unknown_token is None
                and not drop_unknown_markers
            ):
                raise ValueError(
                    f"source {source.name}: unknown_marker={source.unknown_marker!r} needs a tokenizer with an "
                    "unknown token, and this tokenizer has none; set the source's unknown_marker to null"
                )
        self.sources = list(sources)
        self.validation_sources = list(validation_sources)
        self.val_documents = val_documents
        self.seed = seed
        self.unknown_token = unknown_token
        self.drop_unknown_markers = drop_unknown_markers

    def documents(self, source) -> Iterator[str]:
        """A source's non-empty documents, its unknown-word marker replaced by the tokenizer's unknown token (or, with
        `drop_unknown_markers`, left out with the space before it)."""
        marker = getattr(source, "unknown_marker", None)
        documents = source.documents()
        if marker is not None and self.drop_unknown_markers:
            documents = without_marker(documents, marker)
        else:
            documents = with_unknown_token(documents, marker, self.unknown_token)
        return non_empty(documents, source.name)

    def training_documents(self, pass_index: int) -> Iterator[str]:
        """All documents after the held-out ones; the interleaving order is drawn anew for every pass."""
        streams = [itertools.islice(self.documents(s), self.val_documents, None) for s in self.sources]
        rng = np.random.default_rng([self.seed, pass_index])
        return interleave(streams, [s.weight for s in self.sources], rng)

    def validation_documents(self) -> Iterator[str]:
        """The first `val_documents` documents of each source, interleaved in a fixed order; with
        `validation_sources`, every document of those instead (the sources' first documents still never train)."""
        if self.validation_sources:
            sources, streams = self.validation_sources, [self.documents(s) for s in self.validation_sources]
        else:
            sources, streams = (
                self.sources,
                [itertools.islice(self.documents(s), self.val_documents) for s in self.sources],
            )
        rng = np.random.default_rng([self.seed, 2**32 - 1])
        return interleave(streams, [s.weight for s in sources], rng)
