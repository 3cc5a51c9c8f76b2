"""Tokenizer loading, the check that a tokenizer fits its model, and the text -> ids function of the data pipeline
(which tokenizes documents above a length bound in pieces).

A model folder without tokenizer files still "loads" a tokenizer in transformers 5: it builds one from the special
tokens alone (5 tokens for BERT), which turns every word into [UNK], and training or scoring then runs on nothing.
`check_tokenizer_matches` (and `load_tokenizer`, for the data's tokenizer) refuse that, naming the folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer
from transformers.utils import cached_file

log = logging.getLogger(__name__)

REQUIRED_SPECIAL_TOKENS = {  # by model kind (causal?): the special tokens its rows and batches are made of
    False: ("cls_token", "sep_token", "mask_token", "pad_token"),
    True: ("eos_token",),
}
MAX_DOCUMENT_CHARACTERS = 100_000  # longer documents are tokenized in pieces of at most this many characters
SERIALIZED_TOKENIZER = "tokenizer.json"  # the `tokenizers` library's file: a complete tokenizer of any kind


def vocabulary_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's (token, id) pairs: equal only for tokenizers producing the same ids."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode("utf-8")).hexdigest()


def vocabulary_file_names(tokenizer) -> list[str]:
    """The files a tokenizer of this class reads its vocabulary from (tokenizer.json, vocab.txt, merges.txt, ...)."""
    return list(dict.fromkeys([SERIALIZED_TOKENIZER, *type(tokenizer).vocab_files_names.values()]))


def require_vocabulary_files(tokenizer, name_or_path: str, key: str) -> None:
    """Raise, naming `key` and the folder, unless `name_or_path` (a directory or hub id) holds one of the tokenizer's
    vocabulary files, i.e. unless the tokenizer is more than transformers' special-tokens-only fallback."""
    names = vocabulary_file_names(tokenizer)
    found = [
        name
        for name in names
        if cached_file(
            name_or_path,
            name,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    ]
    if not found:
        raise ValueError(
            f"{key}={name_or_path!r} has no tokenizer files (none of {names}): transformers would build a "
            f"{len(tokenizer)}-token tokenizer from the special tokens alone, which turns every word into "
            f"{tokenizer.unk_token}. Save the model's tokenizer into it (tokenizer.save_pretrained) or point {key} "
            "at a folder that has one"
        )


def check_tokenizer_matches(tokenizer, name_or_path: str, key: str, vocab_size: int, model: str) -> None:
    """The tokenizer loaded from `name_or_path` (config key `key`) has real vocabulary files, and every id it
    produces has an embedding in `model` (`vocab_size` = its `config.vocab_size`; more embeddings than tokens are
    fine: some models pad their embedding matrix). Raises ValueError naming the key, the folder and the sizes.

    Args:
        tokenizer: the loaded tokenizer.
        name_or_path: the directory or hub id it was loaded from.
        key: the config key that names it, for the error (e.g. "model", "data.tokenizer").
        vocab_size: the number of token embeddings of the model it feeds.
        model: that model in words, for the error (e.g. "the student", "teacher_model='...'").
    """
    require_vocabulary_files(tokenizer, name_or_path, key)
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"{key}={name_or_path!r} has {len(tokenizer)} tokens but {model} has {vocab_size} token embeddings: ids "
            f"{vocab_size}..{len(tokenizer) - 1} would have none. Use the tokenizer the model was trained with"
        )


def check_same_vocabulary(tokenizer, name: str, key: str, reference: str, reference_key: str) -> None:
    """Unless `name` is `reference` itself, `tokenizer` (loaded from `name`, config key `key`) maps tokens to the same
    ids as the tokenizer of `reference` (a teacher, config key `reference_key`). A `reference` that ships no tokenizer
    is logged and not compared (its embeddings are checked by `check_tokenizer_matches`)."""
    if name == reference:
        return
    try:
        references_own = read_tokenizer(reference, reference_key)
        require_vocabulary_files(references_own, reference, reference_key)
    except (OSError, ValueError):
        log.info(
            "%s=%r ships no tokenizer of its own: %s is checked against embeddings only", reference_key, reference, key
        )
        return
    if vocabulary_fingerprint(references_own) != vocabulary_fingerprint(tokenizer):
        raise ValueError(
            f"vocabulary mismatch: {key}={name!r} ({len(tokenizer)} tokens) maps tokens to other ids than the "
            f"tokenizer of {reference_key}={reference!r} ({len(references_own)} tokens), whose vocabulary the model "
            f"was trained on; point {key} at that tokenizer"
        )


def read_tokenizer(name_or_path: str, key: str):
    """`AutoTokenizer.from_pretrained(name_or_path)` (config key `key`); a tokenizer file that cannot be read (cut
    short, not JSON, not a tokenizer) is named with the key instead of surfacing as a bare JSON or tokenizers error.
    A folder or hub id that cannot be found raises transformers' OSError as it is."""
    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except OSError:
        raise
    except Exception as error:  # json.JSONDecodeError, or the tokenizers library's plain Exception
        reason = invalid_json_file(name_or_path) or f"{type(error).__name__}: {error}"
        raise ValueError(
            f"{key}={name_or_path!r} has a tokenizer that cannot be read ({reason}); save the tokenizer again "
            "(tokenizer.save_pretrained)"
        ) from error


def invalid_json_file(name_or_path: str) -> str | None:
    """ "<file> is not valid JSON: <why>" for the first JSON file of a local folder that does not parse, else None."""
    for path in sorted(Path(name_or_path).glob("*.json")) if Path(name_or_path).is_dir() else []:
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as error:
            return f"{path.name} is not valid JSON: {error}"
    return None


def load_tokenizer(name_or_path: str, key: str = "data.tokenizer", causal: bool = False):
    """A fast tokenizer by hub id or local directory (config key `key`), with vocabulary files and the special
    tokens the rows of a masked LM (or, with `causal`, of a causal LM) are made of."""
    tokenizer = read_tokenizer(name_or_path, key)
    require_vocabulary_files(tokenizer, name_or_path, key)
    missing = [name for name in REQUIRED_SPECIAL_TOKENS[causal] if getattr(tokenizer, name, None) is None]
    if missing:
        kind = "a causal LM's (with an end-of-text token)" if causal else "a BERT-style masked LM's"
        raise ValueError(f"{key}={name_or_path!r}: the tokenizer has no {', '.join(missing)}; {kind} is required")
    return tokenizer


def cut_position(text: str, start: int, end: int) -> int:
    """Where the piece text[start:end] should end so that tokenizers see the same words as in the whole text: at
    the last single space between two words (the next piece then begins with " word", which word-piece, byte-level
    BPE and SentencePiece tokenizers all read as in context); else at the start of the last run of whitespace; else
    (no whitespace after the piece's first character) at `end`."""
    space = text.rfind(" ", start + 1, end)
    while space > start:
        if not text[space - 1].isspace() and not text[space + 1].isspace():
            return space
        space = text.rfind(" ", start + 1, space)
    position = end
    while position > start and not text[position - 1].isspace():
        position -= 1
    while position > start and text[position - 1].isspace():
        position -= 1
    return position if position > start else end


def pieces(text: str, max_characters: int) -> Iterator[str]:
    """`text` as consecutive pieces of at most `max_characters` characters, cut at whitespace where possible."""
    start = 0
    while len(text) - start > max_characters:
        end = cut_position(text, start, start + max_characters)
        yield text[start:end]
        start = end
    yield text[start:]


class TextEncoder:
    """Callable documents -> token ids without special tokens (picklable, for dataloader workers).

    A document longer than `max_characters` is tokenized piece by piece (`pieces`: cut at whitespace) and its ids
    joined, so that tokenizing it needs memory for one piece, not for the whole document (a fast tokenizer keeps
    about 100 bytes per character of its input: 50 MB of text without a line break would need about 6 GB, in every
    dataloader worker). Documents within the bound are tokenized whole, as one batch: their ids never change.
    """

    def __init__(self, tokenizer, max_characters: int = MAX_DOCUMENT_CHARACTERS) -> None:
        if max_characters < 1:
            raise ValueError(f"max_characters={max_characters}; allowed: an integer >= 1")
        self.tokenizer = tokenizer
        self.max_characters = max_characters

    def encode(self, texts: list[str]) -> list[list[int]]:
        encoded = self.tokenizer(
            texts, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False, verbose=False
        )
        return encoded["input_ids"]

    def encode_in_pieces(self, document: str) -> np.ndarray:
        ids = [np.asarray(self.encode([piece])[0], dtype=np.int64) for piece in pieces(document, self.max_characters)]
        log.warning(
            "a document of %d characters was tokenized in %d pieces of at most %d characters",
            len(document),
            len(ids),
            self.max_characters,
        )
        return np.concatenate(ids)

    def __call__(self, documents: list[str]) -> list[list[int] | np.ndarray]:
        within = [document for document in documents if len(document) <= self.max_characters]
        whole = iter(self.encode(within) if within else [])
        return [
            next(whole) if len(document) <= self.max_characters else self.encode_in_pieces(document)
            for document in documents
        ]
