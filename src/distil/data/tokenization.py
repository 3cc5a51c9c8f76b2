"""Tokenizer loading, the check that a tokenizer fits its model, and the text -> ids function of the data pipeline.

A model folder without tokenizer files still "loads" a tokenizer in transformers 5: it builds one from the special
tokens alone (5 tokens for BERT), which turns every word into [UNK], and training or scoring then runs on nothing.
`check_tokenizer_matches` (and `load_tokenizer`, for the data's tokenizer) refuse that, naming the folder.
"""

from __future__ import annotations

from transformers import AutoTokenizer
from transformers.utils import cached_file

REQUIRED_SPECIAL_TOKENS = ("cls_token", "sep_token", "mask_token", "pad_token")
SERIALIZED_TOKENIZER = "tokenizer.json"  # the `tokenizers` library's file: a complete tokenizer of any kind


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


def load_tokenizer(name_or_path: str, key: str = "data.tokenizer"):
    """A fast tokenizer by hub id or local directory (config key `key`), with vocabulary files and the special
    tokens masked-LM packing needs."""
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    require_vocabulary_files(tokenizer, name_or_path, key)
    missing = [name for name in REQUIRED_SPECIAL_TOKENS if getattr(tokenizer, name, None) is None]
    if missing:
        raise ValueError(f"tokenizer {name_or_path!r} has no {', '.join(missing)}; a BERT-style tokenizer is required")
    return tokenizer


class TextEncoder:
    """Callable documents -> token ids without special tokens (picklable, for dataloader workers)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, documents: list[str]) -> list[list[int]]:
        if not documents:
            return []
        encoded = self.tokenizer(
            documents, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False, verbose=False
        )
        return encoded["input_ids"]
