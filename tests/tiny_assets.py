"""A tiny teacher directory (weights + WordPiece tokenizer) and a tiny text corpus, written to disk for
end-to-end tests that run `python -m distil.train` without ../shared or the hub."""

from __future__ import annotations

import random
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from tests.conftest import tiny_bert

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4, [MASK] = 4 as in masked_batch()
WORDS = (
    "the a of and to in is was he she it they we you that this with for on at by from his her their "
    "king queen house door room window sea ship whale captain river city road night day light dark "
    "walked opened saw said found took gave made came went looked loved feared "
    "old young great small long short white black red green quiet loud"
).split()
VOCAB_SIZE = 128


def tiny_tokenizer(words: list[str] = WORDS, vocab_size: int | None = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """BERT-style WordPiece tokenizer over SPECIAL_TOKENS, ".", ",", `words`, letters and ##letters, in that id order;
    padded with [unused*] entries to `vocab_size` (None: no padding)."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab_list = list(dict.fromkeys(SPECIAL_TOKENS + [".", ","] + words + letters + ["##" + c for c in letters]))
    if vocab_size is not None:
        vocab_list += [f"[unused{i}]" for i in range(vocab_size - len(vocab_list))]
    vocab = {token: i for i, token in enumerate(vocab_list)}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def write_tiny_teacher(directory: Path, num_layers: int = 4) -> Path:
    """Save a tiny BertForMaskedLM and its tokenizer to `directory` (loadable with from_pretrained)."""
    tiny_bert(num_layers=num_layers, vocab_size=VOCAB_SIZE).save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    return directory


def write_tiny_corpus(directory: Path, documents: int = 60, seed: int = 0) -> Path:
    """`documents` short random documents in two .txt files, documents separated by blank lines."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for part in range(2):
        docs = []
        for _ in range(documents // 2):
            sentences = [" ".join(rng.choices(WORDS, k=rng.randint(5, 14))) + "." for _ in range(rng.randint(2, 6))]
            docs.append(" ".join(sentences))
        (directory / f"part{part}.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return directory


def tiny_train_overrides(teacher_dir: Path, corpus_dir: Path) -> list[str]:
    """`python -m distil.train` overrides for the tiny teacher and corpus: 4 rows of 32 tokens, CPU, 2 validation
    batches, metrics every step, no progress bar. Callers add run length, validation interval and loggers."""
    return [
        f"teacher.name_or_path={teacher_dir}",
        "data=local_files",
        f"data.sources.0.paths={corpus_dir}/*.txt",
        "data.max_length=32",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.val_documents=5",
        "trainer.limit_val_batches=2",
        "trainer.log_every_n_steps=1",
        "callbacks.progress_bar.refresh_rate=0",
    ]
