"""Each task kind read from the Hugging Face hub (what `conf/task/*.yaml` does when the shared folder is absent).

The hub is unreachable here, so `datasets.load_dataset` is replaced by one that records what it was asked for and
returns a real `datasets.Dataset` in the hub dataset's own schema (column names, `ClassLabel` tags, SQuAD's nested
answers); the task must read the same examples from it as from the local files of the same rows.
"""

import datasets
import pytest
from hydra.utils import instantiate

from distil.tasks.task import Task
from tests.conftest import compose_config

SQUAD_ROW = {
    "id": "q1",
    "title": "T",
    "context": "Paris is in France.",
    "question": "Where is Paris?",
    "answers": {"text": ["France", "in France"], "answer_start": [12, 9]},
}
CONLL_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
HUB_ROWS = {  # task -> (hub id, config, the split's rows, their features)
    "sst2": (
        "nyu-mll/glue",
        "sst2",
        {"sentence": ["a fine film", "dull"], "label": [1, 0], "idx": [0, 1]},
        datasets.Features(
            sentence=datasets.Value("string"),
            label=datasets.ClassLabel(names=["negative", "positive"]),
            idx=datasets.Value("int32"),
        ),
    ),
    "stsb": (
        "nyu-mll/glue",
        "stsb",
        {"sentence1": ["a cat", "a dog"], "sentence2": ["one cat", "a car"], "label": [4.5, 0.25], "idx": [0, 1]},
        datasets.Features(
            sentence1=datasets.Value("string"),
            sentence2=datasets.Value("string"),
            label=datasets.Value("float32"),
            idx=datasets.Value("int32"),
        ),
    ),
    "conll2003": (
        "eriktks/conll2003",
        None,
        {"id": ["0"], "tokens": [["Ada", "Lovelace", "visited", "Paris"]], "ner_tags": [[1, 2, 0, 5]]},
        datasets.Features(
            id=datasets.Value("string"),
            tokens=datasets.Sequence(datasets.Value("string")),
            ner_tags=datasets.Sequence(datasets.ClassLabel(names=CONLL_TAGS)),
        ),
    ),
    "squad": (
        "rajpurkar/squad",
        None,
        {key: [value] for key, value in SQUAD_ROW.items()},
        datasets.Features(
            id=datasets.Value("string"),
            title=datasets.Value("string"),
            context=datasets.Value("string"),
            question=datasets.Value("string"),
            answers=datasets.Sequence({"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}),
        ),
    ),
}
EXPECTED = {  # task -> what the examples hold
    "sst2": [(("a fine film",), 1), (("dull",), 0)],
    "stsb": [(("a cat", "one cat"), 4.5), (("a dog", "a car"), 0.25)],
    "conll2003": [(("Ada", "Lovelace", "visited", "Paris"), (1, 2, 0, 5))],
    "squad": [("q1", "Where is Paris?", "Paris is in France.", ("France", "in France"), (12, 9))],
}


def fields(example) -> tuple:
    if hasattr(example, "texts"):
        return example.texts, example.label
    if hasattr(example, "words"):
        return example.words, example.tags
    return example.id, example.question, example.context, example.answers, example.starts


@pytest.mark.parametrize("name", list(HUB_ROWS))
def test_without_the_shared_folder_each_task_reads_its_hub_dataset(name, tmp_path, monkeypatch):
    hub_id, config, rows, features = HUB_ROWS[name]
    asked = []

    def load_dataset(path, name=None, split=None):
        asked.append((path, name, split))
        return datasets.Dataset.from_dict(rows, features=features)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    cfg = compose_config("finetune", f"task={name}", "model=unused", f"paths.shared_dir={tmp_path / 'absent'}")
    task = instantiate(cfg.task)
    assert isinstance(task, Task) and task.source == hub_id and not task.is_local
    task.check_source()  # a hub id is not a missing folder
    assert [fields(e) for e in task.examples("train")] == EXPECTED[name]
    assert [fields(e) for e in task.examples("dev")] == EXPECTED[name]
    assert asked == [(hub_id, config, "train"), (hub_id, config, "validation")]
    assert task.data_identity("train") == f"hub:{hub_id}/{config}/train"  # the teacher cache's key of the data
