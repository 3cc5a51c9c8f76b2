"""How token ids of documents become fixed-length rows, for a masked or a causal LM, read from the tokenizer.

Masked LMs (RoBERTa's FULL-SENTENCES packing): documents are joined by the tokenizer's `sep_token` and every row is
framed by `cls_token ... sep_token`. Causal LMs (GPT-2's and Llama's pretraining): documents are joined by the
tokenizer's `eos_token` (GPT-2's `<|endoftext|>`, Llama 3's `<|end_of_text|>`) and cut into rows with no framing, so
every position of a full row is a real token the model learns from.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RowFormat:
    """Documents joined by `separator`; each row is `start + content + end`.

    Args:
        separator: the id that follows every document in the token stream.
        start, end: ids framing every row (empty for causal rows).
        causal: rows for a causal LM (labels are the next tokens) rather than a masked LM (labels come from masking).
    """

    separator: int
    start: tuple[int, ...] = ()
    end: tuple[int, ...] = ()
    causal: bool = False

    def content_length(self, max_length: int) -> int:
        """Tokens of the stream in a row of `max_length` tokens."""
        return max_length - len(self.start) - len(self.end)

    @classmethod
    def of(cls, tokenizer, causal: bool) -> RowFormat:
        """The format of the tokenizer's own special tokens (checked by `tokenization.load_tokenizer`)."""
        if causal:
            return cls(separator=tokenizer.eos_token_id, causal=True)
        cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        return cls(separator=sep_id, start=(cls_id,), end=(sep_id,))
