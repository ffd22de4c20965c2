"""tests/notebooks/runner.py itself, on small notebooks made here: parameters injected as papermill does, the
kernel is this interpreter, a failing cell or a write outside the named paths fails the run."""

from __future__ import annotations

import sys

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

from tests.notebooks.runner import run_notebook


def _notebook(path, *cells, tagged=0):
    """A notebook of code `cells`, the one at index `tagged` tagged `parameters`."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})  # fmt: skip
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nb.cells[tagged].metadata["tags"] = ["parameters"]
    nbformat.write(nb, path)
    return path


def test_parameters_are_injected_after_the_tagged_cell(kernels, tmp_path):
    path = _notebook(tmp_path / "p.ipynb", "import sys\nseen = []", "from pathlib import Path\nn = 1\nout = Path('x')",
                     "seen.append((n, out))", tagged=1)  # fmt: skip
    run = run_notebook(path, {"n": 7, "out": tmp_path / "o"}, kernels, tmp_path / "work",
                       {"seen": "seen", "kernel": "sys.executable", "cwd": "__import__('os').getcwd()"})  # fmt: skip
    assert run.values["seen"] == [[7, str(tmp_path / "o")]]
    assert run.values["kernel"] == sys.executable and run.values["cwd"] == str(tmp_path / "work")
    assert run.nb.cells[2].metadata["tags"] == ["injected-parameters"]
    assert [c.execution_count for c in run.nb.cells] == [1, 2, 3, 4, 5]
    assert nbformat.read(path, as_version=4).cells[2].source == "seen.append((n, out))"  # the file is left as it was


def test_a_failing_cell_fails_the_run_with_its_traceback(kernels, tmp_path):
    path = _notebook(tmp_path / "f.ipynb", "x = 1", "raise ValueError('the cell says no')")
    with pytest.raises(CellExecutionError, match="the cell says no"):
        run_notebook(path, {"x": 2}, kernels, tmp_path / "work")


@pytest.mark.parametrize(
    "cell",
    ["open('stray.txt', 'w').close()", "import os\nos.makedirs(os.path.join(os.environ['GRINDER_MLRUNS'], 'x'))"],
    ids=["a file in the working folder", "the default MLflow store"],
)
def test_a_write_outside_the_named_paths_fails_the_run(kernels, tmp_path, cell):
    path = _notebook(tmp_path / "w.ipynb", "out = None", cell)
    with pytest.raises(AssertionError, match="wrote outside the paths its parameters name"):
        run_notebook(path, {"out": tmp_path / "out"}, kernels, tmp_path / "work")
