"""Optional extras a command line needs, named before Hydra starts: without them Hydra fails while it composes or
builds its sweeper, with errors that do not say what to install ("Could not find 'hydra/sweeper/optuna'", "Error
locating target 'optuna.samplers.TPESampler'").

The sweeper a command line asks for is `hydra/sweeper=NAME`, or the one the `override /hydra/sweeper: NAME` line of
the chosen `hparams_search=` config selects (conf/hparams_search/*.yaml), so a new search config needs no entry here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import yaml

from distil.resolvers import project_root

SWEEPER_EXTRAS = {"optuna": ("optuna", ["optuna", "hydra_plugins.hydra_optuna_sweeper"])}  # sweeper -> (extra, modules)


def sweeper_of(search: str) -> str | None:
    """The sweeper the search config `search` selects (its `override /hydra/sweeper` default), None if none."""
    path = Path(project_root()) / "conf" / "hparams_search" / f"{search}.yaml"
    if not path.is_file():
        return None  # Hydra names an unknown config itself
    for entry in yaml.safe_load(path.read_text(encoding="utf-8")).get("defaults") or []:
        if isinstance(entry, dict) and "override /hydra/sweeper" in entry:
            return entry["override /hydra/sweeper"]
    return None


def check_sweeper_installed(argv: Sequence[str]) -> None:
    """Raise ImportError naming the extra to install when the command line asks for a sweeper whose packages are
    missing."""
    for argument in argv:
        key, _, value = argument.partition("=")
        sweeper = (
            value if key.lstrip("+~") == "hydra/sweeper" else sweeper_of(value) if key == "hparams_search" else None
        )
        if sweeper not in SWEEPER_EXTRAS:
            continue
        extra, modules = SWEEPER_EXTRAS[sweeper]
        missing = [name for name in modules if not module_found(name)]
        if missing:
            raise ImportError(
                f"{argument} needs the {sweeper} sweeper, and {missing} are not installed: install the extra with "
                f'`pip install -c constraints.txt -e ".[{extra}]"`'
            )


def module_found(name: str) -> bool:
    """Whether the module can be imported (a parent package that is missing counts as missing)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
