"""Reading and encoding each task kind: columns, labels and tags checked with clear errors, CoNLL IOB1 read as IOB2,
SQuAD answers outside their context counted and skipped, long contexts split into overlapping windows."""

import json
import logging
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from distil.modules.losses import IGNORE_INDEX
from distil.tasks.classification import SequenceClassificationTask
from distil.tasks.question_answering import QuestionAnsweringTask
from distil.tasks.token_classification import TokenClassificationTask, iob1_to_iob2
from tests.conftest import compose_config
from tests.tiny_assets import tiny_tokenizer

COMMON = dict(train_file="train", dev_file="dev", hub_config=None, train_split="train", dev_split="validation")
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def classification(tmp_path, **args) -> SequenceClassificationTask:
    defaults = dict(
        name="t",
        source=str(tmp_path),
        metrics=["accuracy"],
        max_length=16,
        text_fields=["sentence"],
        label_field="label",
        num_labels=2,
    )
    return SequenceClassificationTask(**COMMON | defaults | args)


def test_classification_files_columns_and_labels(tmp_path):
    path = tmp_path / "train"
    path.write_text('\ufeff#1 String\tQuality\nit \'s a "fine" film\t1\n" unbalanced\t0\n', encoding="utf-8")
    task = classification(tmp_path, columns={"sentence": "#1 String", "label": "Quality"})  # MRPC-like, with a BOM
    assert [(e.texts, e.label) for e in task.read_file(path)] == [
        (('it \'s a "fine" film',), 1),
        (('" unbalanced',), 0),
    ]
    with pytest.raises(ValueError, match=r"has columns \['#1 String', 'Quality'\]; the task needs \['sentence'\]"):
        classification(tmp_path, columns={"label": "Quality"}).read_file(path)
    path.write_text("x\tgood film\t1\ty\n")  # CoLA-like: no header row
    assert classification(tmp_path, header=["source", "sentence", "label", "mark"]).read_file(path)[0].label == 1
    path.write_text("sentence\tlabel\na film\tnot_entailment\n")
    rte = classification(tmp_path, label_names=["entailment", "not_entailment"])
    assert rte.read_file(path)[0].label == 1 and rte.head_config()["id2label"] == {0: "entailment", 1: "not_entailment"}
    path.write_text("sentence\tlabel\na film\t3\n")
    with pytest.raises(ValueError, match=rf"{path}, line 2: column 'label' holds '3'; allowed: a class id 0..1"):
        classification(tmp_path).read_file(path)
    path.write_text("sentence\tlabel\na film\tfive\n")
    with pytest.raises(ValueError, match=r"line 2: column 'label' holds 'five'; allowed: a number"):
        classification(tmp_path, num_labels=1, metrics=["pearson"]).read_file(path)
    path.write_text("sentence\tlabel\n")
    with pytest.raises(ValueError, match=rf"{path} has no rows"):
        classification(tmp_path).read_file(path)
    with pytest.raises(ValueError, match=r"task t: metrics=\['pearson'\] is not allowed"):
        classification(tmp_path, metrics=["pearson"])  # a regression metric for a classification task


def ner(tmp_path) -> TokenClassificationTask:
    return TokenClassificationTask(
        label_names=TAGS,
        words_field="tokens",
        tags_field="ner_tags",
        name="ner",
        source=str(tmp_path),
        metrics=["f1"],
        max_length=16,
        **COMMON,
    )


def test_iob1_becomes_iob2_with_the_same_entities():
    assert iob1_to_iob2(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-PER"]) == [
        "B-PER",
        "I-PER",
        "O",
        "B-LOC",
        "B-LOC",
        "B-PER",
    ]
    assert iob1_to_iob2(["B-PER", "I-PER", "O"]) == ["B-PER", "I-PER", "O"]  # IOB2 unchanged


def test_conll_reading_and_first_subtoken_labels(tmp_path):
    path = tmp_path / "train"
    path.write_text("-DOCSTART- -X- O O\n\nthe DT O O\nking NN O I-PER\nwalked VB O O\n\nsea NN O I-LOC\n")
    task = ner(tmp_path)
    sentences = task.read_file(path)
    assert [(s.words, s.tags) for s in sentences] == [(("the", "king", "walked"), (0, 1, 0)), (("sea",), (3,))]
    encoded = task.encode(sentences, tiny_tokenizer(), training=True)
    # [CLS] the king walked [SEP]: "walked" is one token of the tiny vocabulary; special tokens carry -100
    assert encoded.features[0]["labels"] == [IGNORE_INDEX, 0, 1, 0, IGNORE_INDEX]
    path.write_text("the DT O O\nking NN O I-KING\n")
    with pytest.raises(ValueError, match=rf"{path}, sentence at line 1: the word 'king' has tag 'B-KING'; allowed"):
        task.read_file(path)


def test_unknown_words_split_into_pieces_are_labelled_at_their_first_piece(tmp_path):
    task = ner(tmp_path)
    (tmp_path / "train").write_text("zed NN O I-PER\nwalked VB O O\n")  # "zed" -> z ##e ##d
    encoded = task.encode(task.read_file(tmp_path / "train"), tiny_tokenizer(), training=True)
    assert encoded.features[0]["labels"] == [IGNORE_INDEX, 1, IGNORE_INDEX, IGNORE_INDEX, 0, IGNORE_INDEX]
    first_tokens, gold = task.encode(task.read_file(tmp_path / "train"), tiny_tokenizer(), training=False).scoring
    assert first_tokens == [[1, 4]] and gold == [["B-PER", "O"]]
    logits = torch.zeros(6, len(TAGS))
    logits[1, 1] = logits[4, 0] = 1.0  # B-PER at "zed", O at "walked": a perfect prediction
    assert task.score(encoded, {"logits": [logits]}) == {"f1": 1.0}


def qa(tmp_path, max_length=24, stride=4) -> QuestionAnsweringTask:
    return QuestionAnsweringTask(
        stride=stride,
        max_answer_tokens=5,
        best_spans=5,
        with_no_answer=False,
        name="qa",
        source=str(tmp_path),
        metrics=["exact_match", "f1"],
        max_length=max_length,
        **COMMON,
    )


def squad_file(path, paragraphs):
    data = [{"title": "t", "paragraphs": [{"context": c, "qas": qas} for c, qas in paragraphs]}]
    path.write_text(json.dumps({"data": data}))


def test_answers_not_in_their_context_are_counted_and_skipped(tmp_path, caplog):
    context = "the king walked to the sea ."
    qas = [
        {"id": "a", "question": "who walked ?", "answers": [{"text": "king", "answer_start": 4}]},
        {"id": "b", "question": "who walked ?", "answers": [{"text": "queen", "answer_start": 4}]},
        {"id": "c", "question": "where ?", "answers": []},
    ]
    squad_file(tmp_path / "train", [(context, qas)])
    task = qa(tmp_path)
    questions = task.read_file(tmp_path / "train")
    with caplog.at_level(logging.WARNING):
        encoded = task.encode(questions, tiny_tokenizer(), training=True)
    assert "skipped 2 of 3 training questions: 1 without an answer, 1 whose answer text is not at" in caplog.text
    assert len(encoded.features) == 1
    (tmp_path / "train").write_text(json.dumps({"data": [{"paragraphs": [{"context": "x"}]}]}))
    with pytest.raises(ValueError, match=r"data\[0\].paragraphs\[0\] is not SQuAD JSON \(KeyError: 'qas'\)"):
        task.read_file(tmp_path / "train")


def test_long_contexts_become_overlapping_windows_and_the_best_span_wins(tmp_path):
    context = "the king walked to the sea . the queen saw the ship at night . the captain found the whale ."
    start = context.index("whale")
    qas = [{"id": "w", "question": "what ?", "answers": [{"text": "whale", "answer_start": start}]}]
    squad_file(tmp_path / "train", [(context, qas)])
    task, tokenizer = qa(tmp_path, max_length=16, stride=4), tiny_tokenizer()
    questions = task.read_file(tmp_path / "train")
    train = task.encode(questions, tokenizer, training=True)
    assert len(train.features) >= 3  # 21 context tokens, 11 per window
    labelled = [f for f in train.features if f["start_positions"] > 0]
    assert 1 <= len(labelled) < len(train.features)  # windows without the whole answer point at [CLS] (0)
    for feature in labelled:
        span = feature["input_ids"][feature["start_positions"] : feature["end_positions"] + 1]
        assert tokenizer.decode(span) == "whale"
    dev = task.encode(questions, tokenizer, training=False)
    whale = tokenizer.convert_tokens_to_ids("whale")
    outputs = {"start_logits": [], "end_logits": []}
    for feature in dev.features:  # windows with "whale" score it 5; the others score their 8th token ("to", ...) 1
        ids = feature["input_ids"]
        logits = torch.zeros(len(ids))
        if whale in ids:
            logits[ids.index(whale)] = 5.0
        else:
            logits[8] = 1.0
        outputs["start_logits"].append(logits)
        outputs["end_logits"].append(logits.clone())
    assert task.score(dev, outputs) == {"exact_match": 1.0, "f1": 1.0}


SHARED_COUNTS = {  # task -> (train, dev) examples in ../shared (data/NOTES.md)
    "sst2": (67_349, 872),
    "cola": (8_551, 1_043),
    "mrpc": (3_668, 408),
    "rte": (2_490, 277),
    "stsb": (5_749, 1_500),
    "conll2003": (14_041, 3_250),
    "squad": (11_877, 10_570),
}


@pytest.mark.shared
@pytest.mark.parametrize("name", list(SHARED_COUNTS))
def test_shared_task_files_read_whole(shared_dir, name):
    task = instantiate(compose_config("finetune", f"task={name}", "model=x", f"paths.shared_dir={shared_dir}").task)
    assert task.is_local and Path(task.source).resolve().is_relative_to(shared_dir.resolve())
    train, dev = task.examples("train"), task.examples("dev")
    assert (len(train), len(dev)) == SHARED_COUNTS[name]
    if name == "squad":
        assert sum(len(q.answers) for q in dev) == 34_726  # the dev set's several gold answers per question
