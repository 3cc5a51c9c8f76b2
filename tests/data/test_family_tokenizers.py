"""Data for every model family: rows framed the family's way, special tokens never masked, WikiText's `<unk>` as the
family's unknown token, and a tokenizer of another vocabulary refused naming both."""

from __future__ import annotations

import itertools

import pytest
import torch
from transformers import AutoConfig, AutoTokenizer

from distil.data.datamodule import CorpusDataModule
from distil.data.masking import IGNORE_INDEX
from distil.data.sources import LocalFiles
from distil.run.config_checks import check_vocabulary
from tests.conftest import FAMILY_TYPES
from tests.tiny_assets import family_tokenizer, training_text

FRAMING = {  # (first, last) token of every row, as each family's pre-training framed its rows
    "bert": ("[CLS]", "[SEP]"),
    "roberta": ("<s>", "</s>"),
    "xlm-roberta": ("<s>", "</s>"),
    "modernbert": ("[CLS]", "[SEP]"),
    "electra": ("[CLS]", "[SEP]"),
}
UNKNOWN = {"bert": "[UNK]", "roberta": "<unk>", "xlm-roberta": "<unk>", "modernbert": "[UNK]", "electra": "[UNK]"}


@pytest.fixture(scope="module")
def marked_corpus(tmp_path_factory):
    """Documents of the tokenizers' training text, some words replaced by WikiText's `<unk>` marker."""
    directory = tmp_path_factory.mktemp("marked_corpus")
    sentences = training_text(sentences=240, seed=1)
    documents = [" ".join(sentences[i : i + 4]).replace(" sea ", " <unk> ") for i in range(0, 240, 4)]
    (directory / "wiki.txt").write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    return directory


@pytest.fixture(scope="module", params=FAMILY_TYPES)
def family_tokenizer_dir(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"tokenizer_{request.param}")
    family_tokenizer(request.param).save_pretrained(directory)
    return request.param, directory


def test_rows_are_framed_and_masked_the_familys_way(family_tokenizer_dir, marked_corpus):
    model_type, directory = family_tokenizer_dir
    datamodule = CorpusDataModule(
        str(directory),
        sources=[LocalFiles(str(marked_corpus / "*.txt"), unknown_marker="<unk>")],
        max_length=24,
        batch_size=8,
        val_documents=5,
        documents_per_block=10,
        seed=0,
    )
    tokenizer = AutoTokenizer.from_pretrained(directory)
    first, last = (tokenizer.convert_tokens_to_ids(token) for token in FRAMING[model_type])
    unknown_id = tokenizer.convert_tokens_to_ids(UNKNOWN[model_type])
    special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    batches = list(itertools.islice(datamodule.train_dataloader(), 6))
    originals = torch.cat([torch.where(b["labels"] != IGNORE_INDEX, b["labels"], b["input_ids"]) for b in batches])
    assert (originals[:, 0] == first).all() and (originals[:, -1] == last).all()
    assert (originals == unknown_id).any()  # the marker arrived as the unknown token, not as word pieces
    masked_originals = torch.cat([b["labels"][b["labels"] != IGNORE_INDEX] for b in batches])
    assert masked_originals.numel() > 0 and not torch.isin(masked_originals, special_ids).any()


def test_a_tokenizer_of_another_vocabulary_is_refused_naming_both(tmp_path):
    roberta_dir, bert_dir = tmp_path / "roberta", tmp_path / "bert"
    family_tokenizer("roberta").save_pretrained(roberta_dir)
    AutoConfig.for_model("roberta", vocab_size=400).save_pretrained(roberta_dir)
    bert = family_tokenizer("bert")
    bert.save_pretrained(bert_dir)
    assert len(bert) <= 400  # fits the embeddings: only the comparison with the teacher's own tokenizer finds it
    config = AutoConfig.from_pretrained(roberta_dir)
    with pytest.raises(ValueError) as error:
        check_vocabulary(config, str(roberta_dir), AutoTokenizer.from_pretrained(bert_dir), str(bert_dir))
    message = str(error.value)
    assert f"data.tokenizer={str(bert_dir)!r} (128 tokens)" in message
    assert f"teacher.name_or_path={str(roberta_dir)!r} (400 tokens)" in message
    check_vocabulary(config, str(roberta_dir), AutoTokenizer.from_pretrained(roberta_dir), str(roberta_dir))


def test_a_tokenizer_larger_than_the_embeddings_is_refused_and_a_smaller_one_fits(tmp_path):
    family_tokenizer("modernbert").save_pretrained(tmp_path)  # 305 tokens
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    padded = AutoConfig.for_model("modernbert", vocab_size=320)
    check_vocabulary(padded, str(tmp_path), tokenizer, str(tmp_path))  # ModernBERT pads its embedding table
    too_small = AutoConfig.for_model("modernbert", vocab_size=300)
    with pytest.raises(ValueError, match=r"has 305 tokens but the teacher teacher.name_or_path=.* has 300 token embed"):
        check_vocabulary(too_small, str(tmp_path), tokenizer, str(tmp_path))
