"""Dynamic masked-LM masking of a batch, as in the original DistilBERT `distiller.py`.

Per batch, exactly n = ceil(mlm_probability * content tokens) positions are chosen, where content tokens are the
real (non-padding) tokens minus the [CLS] and [SEP] that frame each row. The [SEP]s between packed documents count
as content but are never chosen: so n depends only on the rows' lengths, and batches of full rows always mask the
same number of positions (static shapes for compiled models). Positions are drawn with
`torch.multinomial(weights, n, replacement=False)`; weights are uniform over real non-special tokens, or
count(token)^-mlm_smoothing when smoothing is set (rare tokens are masked more often). Of the chosen positions
80% become [MASK], 10% a random non-special token, 10% stay unchanged. Labels hold the original id at chosen
positions and -100 elsewhere.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from distil.data.packing import pad_rows
from distil.modules.losses import IGNORE_INDEX
from distil.value_checks import is_number

REPLACEMENT_PROBABILITIES = (0.8, 0.1, 0.1)  # [MASK], random token, unchanged


def check_mask_probability(mlm_probability: float) -> None:
    """`data.mlm_probability` must be a number strictly between 0 and 1."""
    if not (is_number(mlm_probability) and 0 < mlm_probability < 1):
        raise ValueError(
            f"data.mlm_probability={mlm_probability!r} is out of range: allowed a number 0 < p < 1 (DistilBERT: 0.15)"
        )


def seeded_generator(*numbers: int) -> torch.Generator:
    """A torch generator whose seed is a hash of the numbers (independent streams for different tuples)."""
    seed = int(np.random.SeedSequence([int(n) for n in numbers]).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(seed)


class MaskingCollator:
    """Turns rows of token ids into a masked-LM batch: input_ids, attention_mask, labels (all int64, (B, L))."""

    def __init__(
        self,
        vocab_size: int,
        mask_id: int,
        pad_id: int,
        special_ids: list[int],
        max_length: int,
        mlm_probability: float = 0.15,
        mlm_smoothing: float | None = None,
        token_counts: np.ndarray | None = None,
    ) -> None:
        check_mask_probability(mlm_probability)
        if mlm_smoothing is not None:
            if mlm_smoothing < 0:
                raise ValueError(f"mlm_smoothing={mlm_smoothing}; allowed: null or a number >= 0 (original: 0.7)")
            if token_counts is None:
                raise ValueError(
                    "mlm_smoothing is set but no token counts were given: run `python -m distil.prepare` "
                    "and set data.token_counts to its token_counts.npy, or set mlm_smoothing=null"
                )
            if len(token_counts) != vocab_size:
                raise ValueError(
                    f"token counts cover {len(token_counts)} ids but the tokenizer has {vocab_size}; "
                    "they were computed with another tokenizer"
                )
        self.vocab_size = vocab_size
        self.mask_id = mask_id
        self.pad_id = pad_id
        self.max_length = max_length
        self.mlm_probability = mlm_probability
        is_special = torch.zeros(vocab_size, dtype=torch.bool)
        is_special[torch.tensor(sorted(set(special_ids)), dtype=torch.long)] = True
        self.is_special = is_special
        self.random_token_ids = torch.nonzero(~is_special).flatten()
        self.token_weights = None
        if mlm_smoothing is not None:
            weights = np.maximum(np.asarray(token_counts, dtype=np.float64), 1.0) ** -mlm_smoothing
            self.token_weights = torch.from_numpy(weights).float()
        self.replacement_probabilities = torch.tensor(REPLACEMENT_PROBABILITIES)

    @classmethod
    def from_tokenizer(cls, tokenizer, max_length: int, **kwargs) -> MaskingCollator:
        return cls(
            vocab_size=len(tokenizer),
            mask_id=tokenizer.mask_token_id,
            pad_id=tokenizer.pad_token_id,
            special_ids=list(tokenizer.all_special_ids),
            max_length=max_length,
            **kwargs,
        )

    def mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, generator: torch.Generator) -> dict:
        """Masked copy of input_ids with labels; `generator` makes the choice reproducible."""
        maskable = attention_mask.bool() & ~self.is_special[input_ids]
        real_lengths = attention_mask.sum(dim=1)
        n_content = int((real_lengths - 2).clamp(min=0).sum())
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        masked_ids = input_ids.clone()
        n_masked = min(math.ceil(self.mlm_probability * n_content), int(maskable.sum()))
        if n_masked > 0:
            weights = maskable.flatten().float()
            if self.token_weights is not None:
                weights = weights * self.token_weights[input_ids.flatten()]
            positions = torch.multinomial(weights, n_masked, replacement=False, generator=generator)
            flat_ids = masked_ids.view(-1)
            labels.view(-1)[positions] = flat_ids[positions]
            action = torch.multinomial(self.replacement_probabilities, n_masked, replacement=True, generator=generator)
            random_tokens = self.random_token_ids[
                torch.randint(len(self.random_token_ids), (n_masked,), generator=generator)
            ]
            kept_or_random = torch.where(action == 1, random_tokens, flat_ids[positions])
            replacement = torch.where(action == 0, self.mask_id, kept_or_random)
            flat_ids[positions] = replacement
        return {"input_ids": masked_ids, "attention_mask": attention_mask, "labels": labels}

    def __call__(self, rows: list[np.ndarray], generator: torch.Generator) -> dict:
        input_ids, attention_mask = pad_rows(rows, self.max_length, self.pad_id)
        return self.mask(input_ids, attention_mask, generator)
