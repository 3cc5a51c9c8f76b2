"""notebooks/explore_run.ipynb runs top to bottom on a real tiny training run (with its evaluate report)."""

import json
import re

import nbformat
import pytest
from nbclient import NotebookClient

from distil.evaluate import report_rows
from distil.evaluation.tables import format_comparison
from tests.conftest import REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "explore_run.ipynb"


def outputs(notebook, output_type: str) -> list:
    return [
        o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == output_type
    ]


def test_notebook_executes_on_a_tiny_run(evaluated_tiny_run, monkeypatch):
    run_dir, _ = evaluated_tiny_run
    monkeypatch.setenv("RUN_DIR", str(run_dir))  # the kernel inherits the environment
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3").execute()

    figures = [o for o in outputs(notebook, "display_data") if "image/png" in o.data]
    assert len(figures) == 3  # loss terms, validation comparison, report percentages
    text = "".join(o.text for o in outputs(notebook, "stream") if o.name == "stdout")
    assert f"run: {run_dir}" in text and "validations: 2" in text  # 4 steps, validated every 2
    report = json.loads((run_dir / "evaluate" / "report.json").read_text())
    assert format_comparison(report_rows(report), ("", "teacher", "student", "student/teacher")) in text
    sentences = re.findall(r'"([^"]*\[MASK\][^"]*)",', notebook.cells[1].source)  # the SENTENCES parameter
    assert len(sentences) == 3
    for sentence in sentences:
        for model in ("teacher", "student"):  # one row of predictions per model
            assert re.search(re.escape(sentence) + rf" +{model} +\S", text), (sentence, model)


def test_notebook_names_a_wrong_run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RUN_DIR", str(tmp_path))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    with pytest.raises(Exception, match="lacks"):
        NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
