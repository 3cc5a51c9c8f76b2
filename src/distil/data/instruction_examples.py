"""Instruction examples (a prompt and the response to learn) read from local files, each checked as it is read.

Two formats. `jsonl` (`.jsonl`, `.jsonl.gz`): one JSON object per line, either `{"prompt": "...", "response": "..."}`
or `{"messages": [{"role": "...", "content": "..."}, ...]}`, a chat whose last message, the assistant's, is the
response (rendered with the tokenizer's chat template by `distil.data.instruction_encoding`). `squad`: SQuAD v1.1's
JSON, every question one example: prompt = the paragraph, then "Question: <question>" and "Answer:" on lines of
their own; response = " " + its first answer. A line or a question that is not an example fails with its file and
line (or its place in the SQuAD file).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from distil.data.documents import JSONL_SUFFIXES, expand_paths, jsonl_records, squad_paragraphs

INSTRUCTION_FORMATS = ("jsonl", "squad")
EXPECTED_LINE = (
    '{"prompt": "...", "response": "..."} or {"messages": [{"role": "user", "content": "..."}, '
    '{"role": "assistant", "content": "..."}]}'
)


@dataclass(frozen=True)
class InstructionExample:
    """One example: `prompt` and `response` texts, or chat `messages` ({"role", "content"} dicts) whose last one is
    the assistant's response. `where` says where it was read (`<file>:<line>`), for errors."""

    where: str
    prompt: str | None = None
    response: str | None = None
    messages: tuple[dict, ...] | None = None


def example_of(record: dict, where: str) -> InstructionExample:
    """The example a JSON object holds; anything else is a ValueError naming `where` and the expected shape."""
    if "messages" in record:
        return InstructionExample(where, messages=chat_messages(record["messages"], where))
    if "prompt" in record and "response" in record:
        prompt, response = record["prompt"], record["response"]
        if not (isinstance(prompt, str) and isinstance(response, str)):
            kinds = f"{type(prompt).__name__} and {type(response).__name__}"
            raise ValueError(f"{where}: prompt and response hold a {kinds}; both must be strings")
        if not response.strip():
            raise ValueError(f"{where}: the response is empty; every example needs a response to learn")
        return InstructionExample(where, prompt=prompt, response=response)
    raise ValueError(
        f"{where} has neither prompt and response nor messages (fields: {sorted(record)}); expected {EXPECTED_LINE}"
    )


def chat_messages(messages, where: str) -> tuple[dict, ...]:
    """`messages` checked: a list of at least two {"role": str, "content": str} objects, the last one's role
    "assistant" (the response)."""
    if not isinstance(messages, list) or len(messages) < 2:
        raise ValueError(
            f"{where}: messages must be a list of at least two messages (the prompt's, then the assistant's "
            f"response), got {messages!r:.100}"
        )
    for index, message in enumerate(messages):
        if not (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        ):
            raise ValueError(
                f"{where}: messages[{index}] is not an object with a string role and a string content: {message!r:.100}"
            )
    if messages[-1]["role"] != "assistant":
        raise ValueError(
            f"{where}: the last message has role {messages[-1]['role']!r}; it must be the assistant's response "
            "(role 'assistant')"
        )
    return tuple(messages)


def jsonl_examples(path: Path) -> Iterator[InstructionExample]:
    """The examples of a .jsonl file, one per non-blank line."""
    try:
        for where, record in jsonl_records(path, "strict", expected=f"; expected {EXPECTED_LINE}"):
            yield example_of(record, where)
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: bytes {error.object[error.start : error.end]!r} are not valid UTF-8; fix the file"
        ) from error


def squad_examples(path: Path) -> Iterator[InstructionExample]:
    """An example per question of a SQuAD JSON file: the paragraph and the question as prompt, the first answer as
    response."""
    for paragraph_where, paragraph in squad_paragraphs(path):
        for index, question in enumerate(paragraph.get("qas") or []):
            where = f"{paragraph_where}.qas[{index}]"
            text, answer = squad_question(question)
            if text is None or answer is None:
                raise ValueError(f"{where} has no text 'question' with a first answer's 'text' (SQuAD v1.1's layout)")
            prompt = f"{paragraph['context']}\nQuestion: {text}\nAnswer:"
            yield InstructionExample(where, prompt=prompt, response=f" {answer}")


def squad_question(question) -> tuple[str | None, str | None]:
    """(question text, its first answer's text) of a SQuAD `qas` entry; None for either that is not a string."""
    if not isinstance(question, dict):
        return None, None
    answers = question.get("answers")
    first = answers[0] if isinstance(answers, list) and answers and isinstance(answers[0], dict) else {}
    text, answer = question.get("question"), first.get("text")
    return (text if isinstance(text, str) else None), (answer if isinstance(answer, str) else None)


class InstructionFiles:
    """Instruction examples of local files (module docstring), in sorted file order per pattern.

    Args:
        paths: glob pattern (or patterns) of the files.
        format: "jsonl" (files ending .jsonl or .jsonl.gz) or "squad" (SQuAD v1.1 JSON).
        name: name used in logs and errors (default: the patterns).
    """

    def __init__(self, paths: str | Sequence[str], format: str = "jsonl", name: str | None = None) -> None:
        if format not in INSTRUCTION_FORMATS:
            raise ValueError(f"data.instructions.format={format!r}; allowed: one of {list(INSTRUCTION_FORMATS)}")
        self.patterns = [paths] if isinstance(paths, str) else [str(p) for p in paths]
        self.format = format
        self.name = name or ",".join(self.patterns)

    def files(self) -> list[Path]:
        """The files matched (checked now: a pattern that matches nothing, a .jsonl source's file of another type)."""
        files = expand_paths(self.patterns, config_key="data.instructions.paths", format=self.format)
        for path in files:
            if self.format == "jsonl" and not path.name.endswith(JSONL_SUFFIXES):
                raise ValueError(
                    f"data.instructions.paths: {path} is not a .jsonl file (allowed: {', '.join(JSONL_SUFFIXES)}); "
                    "for SQuAD JSON set data.instructions.format=squad"
                )
        return files

    def bytes_on_disk(self) -> int:
        return sum(path.stat().st_size for path in self.files())

    def examples(self) -> Iterator[InstructionExample]:
        """Every example of every file, in order; files holding none are an error."""
        read = jsonl_examples if self.format == "jsonl" else squad_examples
        files = self.files()
        count = 0
        for path in files:
            for example in read(path):
                count += 1
                yield example
        if count == 0:
            raise ValueError(f"data.instructions: the {len(files)} file(s) matched by {self.patterns} hold no example")
