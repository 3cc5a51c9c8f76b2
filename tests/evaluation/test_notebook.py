"""notebooks/explore_run.ipynb runs top to bottom on real tiny training runs: a masked LM's (with its evaluate report)
and a causal LM's trained from a teacher cache (next-token scores, no teacher scores, greedy continuations)."""

import json
import re

import nbformat
import pytest
from jupyter_client import KernelManager
from nbclient import NotebookClient

from distil.data.sources import LocalFiles
from distil.evaluate import report_rows
from distil.evaluation.tables import format_comparison
from distil.prepare import prepare
from distil.topk_cache.writer import cache_teacher
from tests.conftest import REPO_ROOT, run_cli
from tests.tiny_assets import write_tiny_causal_teacher

NOTEBOOK = REPO_ROOT / "notebooks" / "explore_run.ipynb"


def outputs(notebook, output_type: str) -> list:
    return [
        o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == output_type
    ]


@pytest.fixture(scope="module")
def kernel():
    """One Python kernel for all the notebook's runs here (each starts with imports that take seconds)."""
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel()
    yield manager
    manager.shutdown_kernel(now=True)


def executed(run_dir, kernel):
    """The notebook executed on `run_dir`, given through the RUN_DIR environment variable as its header says (set by
    a first cell, removed again after the run)."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(f"import os\nos.environ['RUN_DIR'] = {str(run_dir)!r}"))
    try:
        NotebookClient(notebook, km=kernel, timeout=300).execute()
    finally:
        notebook.cells.pop(0)
    return notebook


@pytest.fixture(scope="module")
def causal_run_from_a_cache(tmp_path_factory, tiny_corpus_dir):
    """A 3-step `distil.train` run of a tiny Llama-layout teacher's student from its top-8 cache, validated once."""
    home = tmp_path_factory.mktemp("causal_cached")
    teacher = write_tiny_causal_teacher(home / "teacher")
    shards, cache = home / "shards", home / "cache"
    sources = [LocalFiles(str(tiny_corpus_dir / "*.txt"))]
    prepare(str(teacher), sources, [], str(shards), val_documents=5, seed=0, num_proc=1, causal=True)
    cache_teacher(
        str(shards), str(teacher), str(cache), topk=8, max_length=16, seed=7, kl_positions="masked", batch_size=32
    )
    result = run_cli(
        home, f"hydra.run.dir={home / 'run'}", f"teacher.name_or_path={teacher}", "data=shards",
        f"data.shards_dir={shards}", "data.max_length=16", "data.batch_size=4", "data.val_batch_size=4",
        "data.num_workers=0", "seed=7", "trainer.max_steps=3", "trainer.val_check_interval=3",
        "trainer.limit_val_batches=2", "trainer.log_every_n_steps=1", "callbacks.progress_bar.refresh_rate=0",
        "logger=csv", f"distill.teacher_cache={cache}", "distill.alpha_cos=0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return home / "run"


def test_notebook_executes_on_a_tiny_run(evaluated_tiny_run, kernel):
    run_dir, _ = evaluated_tiny_run
    notebook = executed(run_dir, kernel)
    figures = [o for o in outputs(notebook, "display_data") if "image/png" in o.data]
    assert len(figures) == 3  # loss terms, validation comparison, report percentages
    text = "".join(o.text for o in outputs(notebook, "stream") if o.name == "stdout")
    assert f"run: {run_dir}" in text and "validations: 2" in text  # 4 steps, validated every 2
    assert re.search(r"student masked-LM accuracy \d\.\d{4} = \d+\.\d% of the teacher's \d\.\d{4}", text)
    report = json.loads((run_dir / "evaluate" / "report.json").read_text())
    assert format_comparison(report_rows(report), ("", "teacher", "student", "student/teacher")) in text
    sentences = re.findall(r'"([^"]*\[MASK\][^"]*)",', notebook.cells[1].source)  # the SENTENCES parameter
    assert len(sentences) == 3
    for sentence in sentences:
        for model in ("teacher", "student"):  # one row of predictions per model
            assert re.search(re.escape(sentence) + rf" +{model} +\S", text), (sentence, model)


def test_notebook_executes_on_a_causal_run_from_a_teacher_cache(causal_run_from_a_cache, kernel):
    notebook = executed(causal_run_from_a_cache, kernel)
    figures = [o for o in outputs(notebook, "display_data") if "image/png" in o.data]
    assert len(figures) == 2  # loss terms, the student's validation (no report)
    text = "".join(o.text for o in outputs(notebook, "stream") if o.name == "stdout")
    assert "validations: 1" in text and "teacher's" not in text
    assert re.search(r"last validation \(step 2\): student next-token accuracy \d\.\d{4}, perplexity \d+\.\d\d", text)
    parameter = re.search(r"PROMPTS = \[(.*?)\]", notebook.cells[1].source, flags=re.DOTALL).group(1)
    prompts = re.findall(r'"([^"]+)"', parameter)
    assert len(prompts) == 2
    for prompt in prompts:  # each continued by both models
        assert re.search(re.escape(repr(prompt)) + r"\n    teacher: '.*'\n    student: '.*'", text), prompt


def test_notebook_names_a_wrong_run_dir(tmp_path, kernel):
    with pytest.raises(Exception, match="lacks"):
        executed(tmp_path, kernel)
