"""The house rules of `src/distil`, read from its imports: the commands compose, check and call the library and never
import each other; at most 10 modules at the root; none over 350 lines; import chains at most 6 modules long."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "src" / "distil"
COMMANDS = {  # the entry points: `python -m <name>`
    "distil.train",
    "distil.evaluate",
    "distil.finetune",
    "distil.finetune_comparison",
    "distil.export",
    "distil.prepare",
    "distil.ablation",
    "distil.perf.bench",
    "distil.cache_teacher",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported(name: str) -> set[str]:
    """The project's modules that module `name` imports (anywhere in it), by name."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("distil"):
            found |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {module for module in found if module in MODULES and module != name and not name.startswith(module + ".")}


@functools.cache
def chain_length(name: str) -> int:
    """Modules on the longest import chain that starts at `name`."""
    return 1 + max((chain_length(module) for module in imported(name)), default=0)


def test_commands_never_import_each_other():
    assert {(command, module) for command in COMMANDS for module in imported(command) if module in COMMANDS} == set()


def test_at_most_ten_modules_at_the_root_and_none_over_350_lines():
    root = sorted(path.name for path in PACKAGE.glob("*.py") if path.name != "__init__.py")
    assert len(root) <= 10, root
    long = {
        name: n for name, path in MODULES.items() if (n := len(path.read_text(encoding="utf-8").splitlines())) > 350
    }
    assert long == {}


def test_import_chains_are_at_most_six_modules_long():
    assert {name: chain_length(name) for name in MODULES if chain_length(name) > 6} == {}
