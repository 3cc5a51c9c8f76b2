"""Instruction example -> one `ScoredRow`: prompt ids + response ids + end-of-text, the response and the end-of-text
scored, at most `max_length` tokens; and the prescan that encodes every example once before training.

A chat (`messages`) is rendered with the tokenizer's chat template: the prompt is the conversation before the last
message with the template's generation prompt (e.g. "<|im_start|>assistant\\n"), the response is the rest of the
whole conversation's rendering (the assistant's text and the template's end-of-turn marker, which is learned too).
Texts are tokenized without added special tokens (a template writes its own). Truncation keeps what the response
depends on most: a row longer than `max_length` loses the start of its prompt (the tokens nearest the response stay,
at least one, so that the response's first token is predicted); a response that still does not fit loses its end
(and the end-of-text with it).
"""

from __future__ import annotations

import logging
import time

import numpy as np
from jinja2.exceptions import TemplateError

from distil.data.instruction_examples import InstructionExample, InstructionFiles
from distil.data.next_token import ScoredRow
from distil.data.sources import PRESCAN_AUTO_BYTES, PRESCAN_MODES
from distil.data.tokenization import TextEncoder

log = logging.getLogger(__name__)


def fit_row(prompt_ids, response_ids, max_length: int) -> ScoredRow:
    """prompt + response in at most `max_length` tokens, the response scored (truncation: module docstring)."""
    response = list(response_ids)[: max_length - min(len(prompt_ids), 1)]
    prompt = list(prompt_ids)[max(len(prompt_ids) - (max_length - len(response)), 0) :]
    ids = np.array(prompt + response, dtype=np.int64)
    scored = np.arange(len(ids)) >= len(prompt)
    return ScoredRow(ids, scored)


class InstructionEncoder:
    """Callable example -> `ScoredRow` of at most `max_length` tokens (picklable, for dataloader workers)."""

    def __init__(self, tokenizer, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.encode = TextEncoder(tokenizer)

    def texts(self, example: InstructionExample) -> tuple[str, str]:
        """(prompt, response) texts of the example; a chat rendered with the chat template (module docstring)."""
        if example.messages is None:
            return example.prompt, example.response
        if self.tokenizer.chat_template is None:
            raise ValueError(
                f"{example.where}: this example is chat messages, and the tokenizer (data.tokenizer) has no chat "
                "template to render them; use the tokenizer of a chat model (it sets chat_template), or write the "
                'examples as {"prompt": "...", "response": "..."}'
            )
        messages = list(example.messages)
        try:
            prompt = self.tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
            conversation = self.tokenizer.apply_chat_template(messages, tokenize=False)
        except TemplateError as error:
            raise ValueError(
                f"{example.where}: the tokenizer's chat template cannot render these messages ({error})"
            ) from error
        if not conversation.startswith(prompt):
            raise ValueError(
                f"{example.where}: the tokenizer's chat template renders the conversation without its prompt (the "
                "messages before the last, with the generation prompt) at the start, so the response cannot be told "
                'apart; write the examples as {"prompt": "...", "response": "..."}'
            )
        return prompt, conversation[len(prompt) :]

    def token_ids(self, example: InstructionExample) -> tuple[list[int], list[int]]:
        """(prompt ids, response ids + end-of-text), before truncation."""
        prompt, response = self.encode(list(self.texts(example)))
        return list(prompt), [*response, self.tokenizer.eos_token_id]

    def __call__(self, example: InstructionExample) -> ScoredRow:
        return fit_row(*self.token_ids(example), self.max_length)


def prescan_instructions(files: InstructionFiles, encoder: InstructionEncoder, prescan: bool | str) -> None:
    """Read and tokenize every example once, before training (as `sources.prescan_sources` reads text sources), so
    that a line that is not an example, or messages the tokenizer cannot render, fail now, naming the file and line;
    logs how many examples are longer than max_length. `prescan`: True, False, or "auto" (files of at most
    `PRESCAN_AUTO_BYTES` in all)."""
    if prescan not in PRESCAN_MODES:
        raise ValueError(f"data.prescan={prescan!r} is not allowed: use true, false or auto")
    if prescan is False:
        return
    total = files.bytes_on_disk()
    if prescan == "auto" and total > PRESCAN_AUTO_BYTES:
        log.info(
            "data.prescan=auto: not reading the instruction files ahead (%.1f GiB > 1 GiB); a bad line stops the run "
            "when it is reached (set data.prescan=true to read everything first)",
            total / 2**30,
        )
        return
    started = time.perf_counter()
    examples = truncated = 0
    for example in files.examples():
        prompt, response = encoder.token_ids(example)
        examples += 1
        truncated += len(prompt) + len(response) > encoder.max_length
    log.info(
        "data.prescan: read and tokenized all %d examples of %s in %.2f s; %d are longer than max_length=%d (their "
        "prompt's start is cut)",
        examples,
        files.name,
        time.perf_counter() - started,
        truncated,
        encoder.max_length,
    )
