"""The notebooks in notebooks/ are kept in git without outputs, each with a parameters cell, a test that runs it
and a line in notebooks/README.md; notebooks/strip.py strips one that was run."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tests.conftest import REPO

FOLDER = REPO / "notebooks"
NOTEBOOKS = sorted(FOLDER.glob("*.ipynb"))
STRIP = FOLDER / "strip.py"


def test_the_notebooks_are_there():
    assert {p.name for p in NOTEBOOKS} >= {"sweep.ipynb", "data_and_book.ipynb", "backtest.ipynb", "walk_forward.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [], f"{path.name} cell {cell.id} has outputs: run notebooks/strip.py"
        assert cell.execution_count is None, (
            f"{path.name} cell {cell.id} has an execution count: run notebooks/strip.py"
        )
    r = subprocess.run([sys.executable, STRIP, "--check", path], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr  # nothing else of a run either (timings, kernel version)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_has_a_parameters_cell_a_test_and_a_readme_line(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert tagged == code[:1], f"{path.name}: its first code cell, and only that one, must be tagged 'parameters'"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    tests = "".join(p.read_text() for p in (REPO / "tests" / "notebooks").glob("test_*.py") if p != Path(__file__))
    assert f'"notebooks" / "{path.name}"' in tests, f"no test in tests/notebooks/ runs {path.name}"
    assert f"`{path.name}`" in (FOLDER / "README.md").read_text(), f"notebooks/README.md has no line on {path.name}"


def _as_if_run(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook as Jupyter saves it after a run: outputs, counts, cell timings, the kernel's language info."""
    nb = copy.deepcopy(nb)
    count = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        count += 1
        cell.execution_count = count
        cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00.000000Z"}
        cell.outputs = [
            nbformat.v4.new_output("stream", name="stdout", text="printed\n"),
            nbformat.v4.new_output("execute_result", data={"text/plain": "42"}, execution_count=count),
        ]
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7", "mimetype": "text/x-python"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return nb


def test_strip_restores_a_run_notebook_byte_for_byte(tmp_path):
    copies = []
    for path in NOTEBOOKS:
        run = tmp_path / path.name
        nbformat.write(_as_if_run(nbformat.read(path, as_version=4)), run)
        assert run.read_text() != path.read_text()
        copies.append(run)
    check = subprocess.run([sys.executable, STRIP, "--check", *copies], capture_output=True, text=True, timeout=600)
    assert check.returncode == 1 and check.stdout.count("not stripped") == len(copies)
    assert all(
        run.read_text() != path.read_text() for run, path in zip(copies, NOTEBOOKS, strict=True)
    )  # --check wrote nothing
    r = subprocess.run([sys.executable, STRIP, *copies], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    for run, path in zip(copies, NOTEBOOKS, strict=True):
        assert run.read_text() == path.read_text()
    again = subprocess.run([sys.executable, STRIP, "--check", *copies], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout == ""


def test_strip_without_arguments_strips_the_folder_it_lives_in(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy(STRIP, folder / "strip.py")
    run = folder / NOTEBOOKS[0].name
    nbformat.write(_as_if_run(nbformat.read(NOTEBOOKS[0], as_version=4)), run)
    r = subprocess.run([sys.executable, folder / "strip.py"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == f"{run}: stripped"
    assert run.read_text() == NOTEBOOKS[0].read_text()
