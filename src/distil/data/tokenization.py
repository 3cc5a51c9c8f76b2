"""Tokenizer loading and the text -> ids function used by the data pipeline."""

from __future__ import annotations

from transformers import AutoTokenizer

REQUIRED_SPECIAL_TOKENS = ("cls_token", "sep_token", "mask_token", "pad_token")


def load_tokenizer(name_or_path: str):
    """A fast tokenizer by hub id or local directory, with the special tokens masked-LM packing needs."""
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
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
