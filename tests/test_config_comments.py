"""Project rule: every YAML key under conf/ has a short comment on its line saying what it does (and its unit)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import CONF_DIR, REPO_ROOT

# A mapping key at the start of the stripped line: `key:`, `_target_:`, `distill.temperature:`, `hydra/launcher:`.
# A list item whose content is a mapping key (`- _target_: ...`, `- paths: default`) counts too, and so does a
# defaults-list override (`- override /teacher: demo`).
KEY = re.compile(r"^(?:-\s+(?:override\s+)?)?[A-Za-z_/][\w.\-/@]*:(?:\s|$)")
# Value of a key line that opens a block scalar: `|`, `>`, with optional chomping and indentation indicators.
BLOCK_SCALAR = re.compile(r":\s+[|>][-+0-9]*$")


def split_comment(line: str) -> tuple[str, str | None]:
    """(code, comment) of a YAML line: a `#` at the line start or after whitespace, outside quotes, starts one."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip(), line[i:]
    return line.rstrip(), None


def flow_depth_change(code: str) -> int:
    """Net number of flow collections ([...] or {...}) opened by this comment-free code, outside quotes."""
    depth, quote = 0, None
    for char in code:
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
    return depth


def uncommented_keys(path: Path) -> list[str]:
    """`file:line: text` of each uncommented key line of `path` (block scalars, open flow collections skipped)."""
    offenders = []
    block_indent = None  # indentation of the key that opened a block scalar, while inside it
    flow_depth = 0  # open [ / { brackets carried over from earlier lines
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if block_indent is not None:
            if not stripped or indent > block_indent:
                continue  # a line of the block scalar's text
            block_indent = None
        if not stripped or stripped.startswith("#"):
            continue
        code, comment = split_comment(line)
        inside_flow = flow_depth > 0
        flow_depth = max(0, flow_depth + flow_depth_change(code))
        if inside_flow:
            continue  # a line inside a multi-line [...] / {...}: its `a:` are not line-level keys
        if KEY.match(code.strip()):
            if comment is None:
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {stripped}")
            if BLOCK_SCALAR.search(code):
                block_indent = indent
    return offenders


def test_every_yaml_key_has_a_comment():
    files = sorted(CONF_DIR.rglob("*.yaml"))
    assert files, f"no YAML files found under {CONF_DIR}"
    offenders = [offender for path in files for offender in uncommented_keys(path)]
    assert not offenders, "YAML keys without a `# comment` on their line:\n" + "\n".join(offenders)
