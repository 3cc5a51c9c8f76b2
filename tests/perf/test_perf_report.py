"""`scripts/perf_report.sh`, which re-measures docs/performance.md on a GPU: its ladder and its argument check."""

import re
import subprocess

from tests.conftest import CONF_DIR, REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "perf_report.sh"


def test_ladder_runs_every_bench_opt_setting_in_the_documented_order():
    ladder = re.search(r"^LADDER=(\S+)$", SCRIPT.read_text(), re.MULTILINE).group(1).split(",")
    settings = CONF_DIR / "bench_opt"
    assert sorted(ladder) == sorted(path.stem for path in settings.glob("*.yaml"))
    comment = re.search(r"# Ladder: (.*); each setting", (settings / "all.yaml").read_text()).group(1)
    assert ladder == comment.split(" -> ")


def test_an_unknown_part_is_refused_before_anything_runs(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(["bash", str(SCRIPT), str(out), "ladder", "bogus"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown part 'bogus': use ladder, targets, profile or tests" in result.stderr
    assert not out.exists()
