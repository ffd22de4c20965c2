"""Run a notebook as Jupyter does: nbclient drives a real IPython kernel, cell by cell.

The kernel is the Python running the tests (the project's .venv after `make install`), found
through a kernel spec written for the test session, so a global Jupyter, or a `python3` kernel
spec on the machine pointing at another interpreter, plays no part. As papermill does, the values
a test gives are put in a cell injected after the one tagged `parameters`. A probe cell appended
at the end prints what the test asks for (names or expressions of the notebook's namespace) as
one JSON line; neither cell is written back to the notebook.

Each notebook runs in an empty working folder, with `$GRINDER_LAKE` and `$GRINDER_MLRUNS`
pointing inside it: a notebook that wrote anywhere but the paths its parameters cell names (a
default run folder, the default MLflow store or lake) would leave something there, which
`run_notebook` refuses.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

KERNEL = "python3"  # the name every notebook's metadata gives
# Generous on purpose: a cell compiles numba kernels or runs a sweep; on a loaded 2-core machine a
# tight limit fails notebooks that are right. A cell that hangs still ends the test, at this limit.
CELL_TIMEOUT_S = 600
STARTUP_TIMEOUT_S = 600
PROBE = "__notebook_probe__ "  # marks the probe cell's JSON line among anything else it prints


def write_kernel_spec(folder: Path) -> Path:
    """A kernel spec named `python3` under `folder`/kernels that runs ipykernel with this interpreter.

    Returns the kernels folder. Tracebacks come without terminal colours, so a failing cell reads
    plainly in pytest's report. (nbclient itself keeps the kernel's history in memory, so kernels of
    tests running side by side share no SQLite file in ~/.ipython.)
    """
    kernels = folder / "kernels"
    spec = kernels / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}", "--InteractiveShell.colors=nocolor"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"}))
    return kernels


@dataclass(frozen=True)
class Executed:
    """A notebook after its run: the executed notebook (with the injected and probe cells) and the probed values."""

    nb: nbformat.NotebookNode
    values: dict


def _literal(value) -> str:
    """Python source for a parameter value: paths as Path(...), anything else as its repr (a literal)."""
    if isinstance(value, Path):
        return f"Path({str(value)!r})"
    source = repr(value)
    compile(source, "<parameter>", "eval")  # a value whose repr is no expression fails here, not in the kernel
    return source


def inject_parameters(nb: nbformat.NotebookNode, parameters: dict) -> None:
    """Put a cell setting `parameters` right after the cell tagged `parameters` (there must be exactly one)."""
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"a notebook needs exactly one cell tagged 'parameters', this one has {len(tagged)}")
    source = "\n".join(["# Injected by tests/notebooks/runner.py", "from pathlib import Path", ""]
                       + [f"{name} = {_literal(value)}" for name, value in parameters.items()])  # fmt: skip
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(tagged[0] + 1, cell)


def _probe_cell(probe: dict[str, str]) -> nbformat.NotebookNode:
    """A cell printing the interpreter and each of `probe`'s expressions (name -> source) as one JSON line."""
    items = ", ".join(f"{name!r}: {expr}" for name, expr in probe.items())
    source = (
        "import json as _probe_json, sys as _probe_sys\n"
        f"print({PROBE!r} + _probe_json.dumps({{'executable': _probe_sys.executable, 'values': {{{items}}}}}, "
        "default=str))"
    )
    return nbformat.v4.new_code_cell(source)


def _manager_class(kernels: Path):
    """nbclient's kernel manager, looking for kernel specs in `kernels` only: no user, system or
    environment spec can stand in for ours. (nbclient makes the manager itself, so it also shuts
    the kernel down when the notebook ends or fails.)"""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class Manager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _only_ours(self):
            return KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)

    return Manager


def run_notebook(path: Path, parameters: dict, kernels: Path, work: Path, probe: dict[str, str] | None = None):
    """Execute the notebook at `path` with `parameters` injected, in the empty folder `work`; returns Executed.

    `kernels` comes from `write_kernel_spec`. A failing cell raises nbclient's CellExecutionError
    with the cell's traceback. Checks that the kernel ran this interpreter and that nothing was
    written in `work`.
    """
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    inject_parameters(nb, parameters)
    nb.cells.append(_probe_cell(probe or {}))
    work.mkdir(parents=True, exist_ok=True)
    if any(work.iterdir()):
        raise ValueError(f"{work} must be empty: the run checks that the notebook leaves nothing there")
    client = NotebookClient(nb, kernel_manager_class=_manager_class(kernels), kernel_name=KERNEL,
                            timeout=CELL_TIMEOUT_S, startup_timeout=STARTUP_TIMEOUT_S,
                            resources={"metadata": {"path": str(work)}})  # fmt: skip
    env = {**os.environ, "GRINDER_LAKE": str(work / "lake"), "GRINDER_MLRUNS": str(work / "mlruns")}
    client.execute(env=env)
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("name") == "stdout")
    lines = [line[len(PROBE) :] for line in text.splitlines() if line.startswith(PROBE)]
    if len(lines) != 1:
        raise AssertionError(f"the probe cell printed {len(lines)} result lines: {text!r}")
    out = json.loads(lines[0])
    assert out["executable"] == sys.executable, f"the kernel ran {out['executable']}, not {sys.executable}"
    left = sorted(p.relative_to(work).as_posix() for p in work.rglob("*"))
    assert not left, f"{path.name} wrote outside the paths its parameters name: {left}"
    return Executed(nb, out["values"])
