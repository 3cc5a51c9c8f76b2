"""Tiny teacher directories (weights + tokenizer) of every model family and a tiny text corpus, written to disk for
end-to-end tests that run `python -m distil.train` without ../shared or the hub.

The BERT tokenizer is a hand-made WordPiece vocabulary; the others are trained here on a little text with the
`tokenizers` library, the way each family's own tokenizer is built: byte-level BPE for RoBERTa (`<s> <pad> </s> <unk>`
first, `<mask>` after them), a Unigram (SentencePiece) model for XLM-R (`<mask>` last), and byte-level BPE with
BERT-style special tokens at the end of the vocabulary for ModernBERT, whose embedding table is larger than its
tokenizer.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tokenizers import (
    ByteLevelBPETokenizer,
    SentencePieceUnigramTokenizer,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)
from transformers import PreTrainedTokenizerFast, RobertaTokenizer, XLMRobertaTokenizer

from tests.conftest import tiny_causal_lm, tiny_masked_lm

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4, [MASK] = 4 as in masked_batch()
WORDS = (
    "the a of and to in is was he she it they we you that this with for on at by from his her their "
    "king queen house door room window sea ship whale captain river city road night day light dark "
    "walked opened saw said found took gave made came went looked loved feared "
    "old young great small long short white black red green quiet loud"
).split()
VOCAB_SIZE = 128
PLAIN_INPUTS = ["input_ids", "attention_mask"]
TOKEN_TYPE_INPUTS = ["input_ids", "token_type_ids", "attention_mask"]  # what BERT's tokenizer returns


def tiny_tokenizer(
    words: list[str] = WORDS, vocab_size: int | None = VOCAB_SIZE, with_token_types: bool = False
) -> PreTrainedTokenizerFast:
    """BERT-style WordPiece tokenizer over SPECIAL_TOKENS, ".", ",", `words`, letters and ##letters, in that id order;
    padded with [unused*] entries to `vocab_size` (None: no padding). `with_token_types`: it returns `token_type_ids`
    as BERT's own tokenizer does (else only input ids and the attention mask)."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab_list = list(dict.fromkeys(SPECIAL_TOKENS + [".", ","] + words + letters + ["##" + c for c in letters]))
    if vocab_size is not None:
        vocab_list += [f"[unused{i}]" for i in range(vocab_size - len(vocab_list))]
    vocab = {token: i for i, token in enumerate(vocab_list)}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    return with_bert_special_tokens(tokenizer, with_token_types)


def with_bert_special_tokens(tokenizer: Tokenizer, with_token_types: bool = False) -> PreTrainedTokenizerFast:
    """`tokenizer` framing rows `[CLS] $A [SEP]` (pairs `[CLS] $A [SEP] $B [SEP]`), with BERT's special-token names
    (returning `token_type_ids` too `with_token_types`)."""
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=TOKEN_TYPE_INPUTS if with_token_types else PLAIN_INPUTS,
    )


def training_text(sentences: int = 400, seed: int = 0) -> list[str]:
    """Sentences of random WORDS (and a few accented words), the text the tiny tokenizers are trained on."""
    rng = random.Random(seed)
    words = [*WORDS, "café", "über", "niño", "façade"]
    return [" ".join(rng.choices(words, k=rng.randint(4, 12))) + "." for _ in range(sentences)]


def roberta_tokenizer() -> RobertaTokenizer:
    """A byte-level BPE tokenizer laid out like roberta-base's: <s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=4."""
    bpe = ByteLevelBPETokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe.train_from_iterator(
        training_text(), vocab_size=400, min_frequency=2, special_tokens=specials, show_progress=False
    )
    merges = [tuple(merge) for merge in json.loads(bpe.to_str())["model"]["merges"]]
    return RobertaTokenizer(vocab=bpe.get_vocab(), merges=merges)


def xlm_roberta_tokenizer() -> XLMRobertaTokenizer:
    """A Unigram (SentencePiece) tokenizer laid out like xlm-roberta-base's: <s>=0, <pad>=1, </s>=2, <unk>=3, the
    pieces, then <mask> last."""
    unigram = SentencePieceUnigramTokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    unigram.train_from_iterator(
        training_text(), vocab_size=200, special_tokens=specials, unk_token="<unk>", show_progress=False
    )
    pieces = [tuple(piece) for piece in json.loads(unigram.to_str())["model"]["vocab"]]
    return XLMRobertaTokenizer(vocab=[*pieces, ("<mask>", 0.0)])


def modernbert_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer laid out like ModernBERT's: the pieces, then [UNK] [CLS] [SEP] [PAD] [MASK]."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(training_text(), vocab_size=300, min_frequency=2, show_progress=False)
    tokenizer = bpe._tokenizer
    tokenizer.add_special_tokens(["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"])
    return with_bert_special_tokens(tokenizer)


def family_tokenizer(model_type: str):
    """The tiny tokenizer of a family's teacher (`model_type` of tests.conftest.FAMILY_TYPES)."""
    builders = {
        "bert": tiny_tokenizer,
        "roberta": roberta_tokenizer,
        "xlm-roberta": xlm_roberta_tokenizer,
        "modernbert": modernbert_tokenizer,
        "electra": tiny_tokenizer,  # ELECTRA uses BERT's WordPiece vocabulary
    }
    return builders[model_type]()


def write_tiny_teacher(directory: Path, model_type: str = "bert", num_layers: int = 4) -> Path:
    """Save a tiny masked-LM teacher of the family of `model_type` and its tokenizer to `directory` (loadable with
    `from_pretrained`). ModernBERT's embedding table is padded to the next multiple of 64 rows, as the real one is."""
    tokenizer = family_tokenizer(model_type)
    vocab_size = len(tokenizer) if model_type != "modernbert" else -(-len(tokenizer) // 64) * 64
    special_ids = (tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id)
    tiny_masked_lm(model_type, num_layers, vocab_size, special_ids=special_ids).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def causal_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `training_text` with `<|endoftext|>` (id 0) as its end-of-text, start and
    padding token, as GPT-2's and the shared Llama-layout teacher's are."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(training_text(), vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


def write_tiny_causal_teacher(directory: Path, model_type: str = "llama", num_layers: int = 4, tied=True) -> Path:
    """Save a tiny causal-LM teacher of `model_type` (`tests.conftest.tiny_causal_config`) with `causal_tokenizer`
    to `directory` (loadable with `from_pretrained`)."""
    tokenizer = causal_tokenizer()
    tiny_causal_lm(model_type, num_layers, len(tokenizer), eos_id=tokenizer.eos_token_id, tied=tied).save_pretrained(
        directory
    )
    tokenizer.save_pretrained(directory)
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
