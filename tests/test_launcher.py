"""The tests' launcher: a command run in a fork of the test process gives what a fresh interpreter gives."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import run_forked

PROBE = """
import os
import sys
import warnings

warnings.warn("a warning of the command")
print("stdout of the command, HOME_OF_PROBE =", os.environ.get("HOME_OF_PROBE"))
sys.exit("the command's refusal")
"""


@pytest.mark.skipif(sys.platform != "linux", reason="run_cli forks commands on Linux only")
def test_a_forked_command_has_a_fresh_interpreters_status_output_warnings_and_environment(tmp_path, monkeypatch):
    (tmp_path / "launcher_probe.py").write_text(PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path), "HOME_OF_PROBE": "probe"}
    argv = [sys.executable, "-m", "launcher_probe"]
    fresh = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    forked = run_forked("launcher_probe", argv, env, timeout=30)
    assert (fresh.returncode, fresh.stdout) == (1, "stdout of the command, HOME_OF_PROBE = probe\n")
    assert "UserWarning: a warning of the command" in fresh.stderr and "the command's refusal" in fresh.stderr
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
