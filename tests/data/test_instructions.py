"""Instruction data: one row per example, labels only on the response's next tokens, chats rendered with the chat
template, bad lines named before training, the same rows whatever the reader slots, exact resume, and a tiny run."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from transformers import AutoTokenizer

from distil.data.batch_stream import BatchStream, PositionedLoader
from distil.data.datamodule import CorpusDataModule
from distil.data.instruction_encoding import InstructionEncoder, fit_row
from distil.data.instruction_examples import InstructionFiles, squad_examples
from distil.data.instruction_rows import InstructionRows
from distil.data.text_rows import EmptySlotError
from distil.modules.losses import IGNORE_INDEX
from distil.train import train
from tests.conftest import assert_logged_terms_weigh_into_the_loss, compose_config
from tests.tiny_assets import WORDS, causal_tokenizer, write_tiny_causal_teacher

END_OF_TEXT = 0  # `<|endoftext|>` of tests.tiny_assets.causal_tokenizer: end-of-text and padding
CHAT_TEMPLATE = (  # a tiny chat template: every message "<|endoftext|>role: content\n", then the generation prompt
    "{% for message in messages %}<|endoftext|>{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|endoftext|>assistant: {% endif %}"
)


@pytest.fixture(scope="module")
def chat_tokenizer_dir(tmp_path_factory) -> Path:
    """`causal_tokenizer` with CHAT_TEMPLATE."""
    directory = tmp_path_factory.mktemp("chat_tokenizer")
    tokenizer = causal_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)
    return directory


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(WORDS, k=words)) + "."


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def random_pairs(count: int, seed: int = 0) -> list[dict]:
    """`count` prompt/response pairs of random words; lengths vary so that rows are padded differently."""
    rng = random.Random(seed)
    return [
        {"prompt": sentence(rng, rng.randint(2, 8)), "response": " " + sentence(rng, rng.randint(1, 5))}
        for _ in range(count)
    ]


def make_datamodule(tokenizer_dir: Path, paths: str, **kwargs) -> CorpusDataModule:
    arguments = dict(causal=True, max_length=32, batch_size=2, val_documents=0, num_workers=0, seed=5) | kwargs
    return CorpusDataModule(str(tokenizer_dir), instructions=InstructionFiles(paths), **arguments)


def example_ids(tokenizer, pair: dict) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids + end-of-text) of a prompt/response pair, tokenized here."""
    prompt = tokenizer(pair["prompt"], add_special_tokens=False)["input_ids"]
    return prompt, tokenizer(pair["response"], add_special_tokens=False)["input_ids"] + [END_OF_TEXT]


def expected_labels(prompt: list[int], response: list[int], max_length: int) -> list[int]:
    """Labels by hand: position t learns token t + 1 when that token belongs to the response (end-of-text included)."""
    row = prompt + response
    return [row[t + 1] if t + 1 < len(row) and t + 1 >= len(prompt) else IGNORE_INDEX for t in range(max_length)]


def test_labels_are_the_next_token_at_response_positions_only(causal_tokenizer_dir, tmp_path):
    pairs = [
        {"prompt": "the king opened the door.", "response": " the queen saw the sea."},
        {"prompt": "she walked to the river", "response": " at night."},
    ]
    datamodule = make_datamodule(causal_tokenizer_dir, str(write_jsonl(tmp_path / "pairs.jsonl", pairs)))
    batch = next(iter(datamodule.train_dataloader()))

    tokenizer = AutoTokenizer.from_pretrained(causal_tokenizer_dir)
    for i, pair in enumerate(pairs):
        prompt, response = example_ids(tokenizer, pair)
        row = prompt + response
        padding = 32 - len(row)
        assert batch["input_ids"][i].tolist() == row + [END_OF_TEXT] * padding
        assert batch["attention_mask"][i].tolist() == [1] * len(row) + [0] * padding
        assert batch["labels"][i].tolist() == expected_labels(prompt, response, 32)
        assert int((batch["labels"][i] != IGNORE_INDEX).sum()) == len(response)  # the response, end-of-text included


def test_a_long_example_loses_its_prompt_start_then_its_response_end():
    def cut(prompt, response, max_length):
        row = fit_row(prompt, response, max_length)
        return row.ids.tolist(), row.scored.tolist()

    assert cut([1, 2], [3, 4], 6) == ([1, 2, 3, 4], [False, False, True, True])  # fits: unchanged
    assert cut([1, 2, 3, 4, 5], [6, 7, 8], 6) == ([3, 4, 5, 6, 7, 8], [False] * 3 + [True] * 3)
    assert cut([1, 2], [3, 4, 5, 6, 7, 8, 9], 6) == ([2, 3, 4, 5, 6, 7], [False] + [True] * 5)  # one prompt token
    assert cut([], [3, 4, 5, 6, 7, 8, 9], 6) == ([3, 4, 5, 6, 7, 8], [True] * 6)


def test_chat_messages_are_rendered_with_the_chat_template_and_only_the_reply_is_learned(chat_tokenizer_dir, tmp_path):
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "the king"},
        {"role": "assistant", "content": "the queen"},
    ]
    files = InstructionFiles(str(write_jsonl(tmp_path / "chat.jsonl", [{"messages": messages}])))
    tokenizer = AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    row = InstructionEncoder(tokenizer, 64)(next(files.examples()))

    prompt_text = "<|endoftext|>system: be brief\n<|endoftext|>user: the king\n<|endoftext|>assistant: "
    prompt = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    response = tokenizer("the queen\n", add_special_tokens=False)["input_ids"] + [END_OF_TEXT]
    assert prompt.count(END_OF_TEXT) == 3  # the template's special tokens are read as such
    assert row.ids.tolist() == prompt + response
    assert row.scored.tolist() == [False] * len(prompt) + [True] * len(response)


def test_messages_without_a_chat_template_are_refused_naming_the_file_and_line(causal_tokenizer_dir, tmp_path):
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    path = write_jsonl(tmp_path / "mixed.jsonl", [*random_pairs(2), chat])
    with pytest.raises(ValueError, match=rf"{path}:3: this example is chat messages, and the tokenizer .* no chat"):
        make_datamodule(causal_tokenizer_dir, str(path))


@pytest.mark.parametrize(
    "line, error",
    [
        ('{"prompt": "a", "response": "b"', "is not valid JSON"),
        ('["the king", "the queen"]', "is a JSON list, not an object"),
        ('{"prompt": "the king"}', r"has neither prompt and response nor messages \(fields: \['prompt'\]\)"),
        ('{"prompt": "the king", "response": 3}', "prompt and response hold a str and int; both must be strings"),
        ('{"prompt": "the king", "response": " "}', "the response is empty"),
        ('{"messages": [{"role": "user", "content": "hi"}]}', "a list of at least two messages"),
        ('{"messages": [{"role": "assistant", "content": "hi"}, {"role": "user"}]}', r"messages\[1\] is not an"),
        (
            '{"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "a"}]}',
            "the last message has role 'user'; it must be the assistant's response",
        ),
    ],
)
def test_a_bad_line_fails_at_start_naming_its_file_and_line(line, error, causal_tokenizer_dir, tmp_path):
    path = tmp_path / "examples.jsonl"
    path.write_text("".join(json.dumps(pair) + "\n" for pair in random_pairs(3)) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=rf"{path}:5:? .*{error}"):
        make_datamodule(causal_tokenizer_dir, str(path))


def test_squad_questions_become_paragraph_and_question_prompts_answered_by_the_first_answer(tmp_path):
    paragraph = {
        "context": "The king lived by the sea.",
        "qas": [
            {"question": "Where did the king live?", "answers": [{"text": "by the sea", "answer_start": 14}]},
            {"question": "Who lived by the sea?", "answers": [{"text": "The king", "answer_start": 0}, {"text": "x"}]},
        ],
    }
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"data": [{"title": "T", "paragraphs": [paragraph]}]}), encoding="utf-8")
    examples = list(squad_examples(path))
    assert [(e.prompt, e.response) for e in examples] == [
        ("The king lived by the sea.\nQuestion: Where did the king live?\nAnswer:", " by the sea"),
        ("The king lived by the sea.\nQuestion: Who lived by the sea?\nAnswer:", " The king"),
    ]
    assert examples[1].where == f"{path}: data[0].paragraphs[0].qas[1]"


def real_ids(batch: dict) -> list[list[int]]:
    """The ids of each row of a batch without its padding."""
    return [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]


def test_the_rows_of_2_ranks_x_2_workers_are_exactly_the_single_reader_stream(causal_tokenizer_dir, tmp_path):
    datamodule = make_datamodule(causal_tokenizer_dir, str(write_jsonl(tmp_path / "e.jsonl", random_pairs(26))))
    rows = InstructionRows(datamodule.instructions, datamodule.instruction_encoder, val_documents=4)
    single = [row.ids.tolist() for row, _ in itertools.islice(rows.rows(0, 1), 22)]

    by_example = {}
    for rank in range(2):
        stream = BatchStream(rows, datamodule.collator, batch_size=1, seed=5, rank=rank, world_size=2)
        loader = PositionedLoader(stream, num_workers=2)
        for batch in itertools.islice(loader, 12):  # 6 per worker: a whole pass of every slot (22 / 4 <= 6)
            slot, (pass_index, next_example) = loader.take_position()
            if pass_index == 0:
                assert slot == (next_example - 1) % 4  # example i is read by slot i % 4
                by_example[next_example - 1] = real_ids(batch)[0]
    assert sorted(by_example) == list(range(22))
    assert [by_example[i] for i in range(22)] == single


def test_a_reader_slot_without_an_example_in_a_pass_is_an_error(causal_tokenizer_dir, tmp_path):
    datamodule = make_datamodule(causal_tokenizer_dir, str(write_jsonl(tmp_path / "e.jsonl", random_pairs(4))))
    rows = InstructionRows(datamodule.instructions, datamodule.instruction_encoder, val_documents=1)
    assert [position for _, position in itertools.islice(rows.rows(2, 4), 2)] == [(0, 3), (1, 3)]
    with pytest.raises(EmptySlotError, match="reader slot 3 of 4 .* got no example in a whole pass"):
        next(rows.rows(3, 4))


def test_a_stream_resumed_from_its_saved_position_yields_exactly_the_remaining_batches(causal_tokenizer_dir, tmp_path):
    paths = str(write_jsonl(tmp_path / "e.jsonl", random_pairs(30)))
    arguments = dict(batch_size=3, num_workers=2, val_documents=4)
    uninterrupted = make_datamodule(causal_tokenizer_dir, paths, **arguments)
    loader = uninterrupted.train_dataloader()
    batches = list(itertools.islice(loader, 12))  # more than a pass (26 training examples, 13 per worker)
    for _ in range(4):  # the trainer used 4 batches: what `on_before_batch_transfer` records
        slot, position = loader.take_position()
        uninterrupted.consumed_positions[slot] = position
    state = uninterrupted.state_dict()
    assert state["positions"] == {0: [0, 11], 1: [0, 12]}  # worker 0 read examples 0, 2, ..., 10; worker 1 1, ..., 11

    resumed = make_datamodule(causal_tokenizer_dir, paths, **arguments)
    resumed.load_state_dict(state)
    remaining = list(itertools.islice(resumed.train_dataloader(), 8))
    for expected, batch in zip(batches[4:], remaining, strict=True):
        assert all(torch.equal(expected[key], batch[key]) for key in expected)


def test_validation_is_the_first_val_documents_examples_and_never_trains(causal_tokenizer_dir, tmp_path):
    pairs = random_pairs(10)
    paths = str(write_jsonl(tmp_path / "e.jsonl", pairs))
    datamodule = make_datamodule(causal_tokenizer_dir, paths, max_length=64, val_documents=3)
    datamodule.setup("fit")
    tokenizer = AutoTokenizer.from_pretrained(causal_tokenizer_dir)
    rows = [sum(example_ids(tokenizer, pair), []) for pair in pairs]
    assert max(len(row) for row in rows) <= 64  # no example is cut

    validation = list(datamodule.val_dataloader())
    assert [ids for batch in validation for ids in real_ids(batch)] == rows[:3]
    training = itertools.islice(datamodule.train_dataloader(), 4)
    assert [ids for batch in training for ids in real_ids(batch)] == rows[3:] + rows[3:4]  # then the next pass


def test_a_two_step_run_on_instruction_data_logs_finite_loss_terms(tmp_path):
    teacher_dir = write_tiny_causal_teacher(tmp_path / "teacher")
    examples = write_jsonl(tmp_path / "examples.jsonl", random_pairs(24))
    run_dir = tmp_path / "run"
    cfg = compose_config(
        "train",
        f"paths.output_dir={run_dir}",
        f"teacher.name_or_path={teacher_dir}",
        "distill=distilgpt2",
        "data=instructions",
        f"data.instructions.paths={examples}",
        "data.max_length=32",
        "data.batch_size=4",
        "data.val_batch_size=4",
        "data.num_workers=0",
        "data.val_documents=4",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=1",
        "callbacks.progress_bar.refresh_rate=0",
        "logger=csv",
    )
    train(cfg)  # the command's body, in this process
    rows = assert_logged_terms_weigh_into_the_loss(run_dir, steps=2)
    validation = [float(row["val/student_next_token_acc"]) for row in rows if row.get("val/student_next_token_acc")]
    assert len(validation) == 1 and 0 <= validation[0] <= 1
    assert (run_dir / "student" / "config.json").is_file()


def test_the_squad_demo_data_labels_the_first_questions_answer(shared_dir):
    cfg = compose_config("train", "experiment=demo_causal", "data=squad_instructions", "data.prescan=false")
    assert cfg.distill.kl_positions == "masked"
    datamodule = instantiate(cfg.data, causal=True, num_workers=0)
    datamodule.setup("validate")
    batch = next(iter(datamodule.val_dataloader()))
    answer = datamodule.tokenizer(" Saint Bernadette Soubirous", add_special_tokens=False)["input_ids"]
    first = batch["labels"][0]
    assert first[first != IGNORE_INDEX].tolist() == answer + [datamodule.tokenizer.eos_token_id]
    assert len(datamodule.validation_rows) == 269
