#!/usr/bin/env bash
# Refresh constraints.txt on purpose: re-resolve every dependency of requirements.txt and setup.cfg (all extras) to
# its newest allowed release in a fresh virtual environment, run the test suite there, and only when it passes
# rewrite constraints.txt with the exact versions installed. Commit the new file with the suite's result.
#   bash scripts/refresh_constraints.sh                      # newest CPU build of torch
#   TORCH_SPEC=torch==2.13.0 bash scripts/refresh_constraints.sh   # keep a given torch
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
. "$work/venv/bin/activate"
python -m pip install --quiet --upgrade pip
# the CPU build of torch (as CI installs it); its dependencies resolve with the next line
python -m pip install --quiet --retries 1 --no-deps "${TORCH_SPEC:-torch}" --index-url https://download.pytorch.org/whl/cpu
python -m pip install --quiet -r requirements.txt -e ".[test,onnx,optuna,dev]"
python -m pytest -q -n auto --dist loadfile
{
    echo "# The exact versions the test suite last passed with, written by scripts/refresh_constraints.sh on $(date -u +%F)"
    echo "# (Python $(python -c 'import platform; print(platform.python_version() + ", " + platform.machine())')). The README's install commands and CI use it:"
    echo "# pip install -c constraints.txt ... torch is pinned without its local build tag (+cpu, +cu128), so either"
    echo "# build of that release satisfies it."
    python -m pip freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/'
} > constraints.txt
echo "constraints.txt rewritten: $(grep -vc '^#' constraints.txt) pinned packages"
