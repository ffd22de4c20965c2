"""Strip notebooks before they go into git: no outputs, no execution counts, no metadata of a run.

    .venv/bin/python notebooks/strip.py                  # every notebook in notebooks/
    .venv/bin/python notebooks/strip.py a.ipynb b.ipynb  # these
    .venv/bin/python notebooks/strip.py --check          # change nothing; exit 1 naming any not stripped

Kept: the cells' sources, ids and tags (the `parameters` tag the tests inject after), the kernel
spec and the language's name. Notebooks are written in nbformat's layout (one-space indent, sorted
keys: what Jupyter writes), so a notebook's diff shows only what changed in its cells. Needs only
nbformat, which the test extra's nbclient brings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
# What Jupyter, nbclient and papermill add to a cell or a notebook when it runs or is viewed.
RUN_CELL_METADATA = ("execution", "ExecuteTime", "collapsed", "scrolled", "papermill")
RUN_METADATA = ("widgets", "papermill", "signature")


def stripped(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook without outputs, execution counts and run metadata (changed in place and returned)."""
    for cell in nb.cells:
        for key in RUN_CELL_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    for key in RUN_METADATA:
        nb.metadata.pop(key, None)
    # A kernel fills in its version, mime type and the like; only the language's name is the notebook's.
    language = nb.metadata.get("language_info", {}).get("name")
    if language is not None:
        nb.metadata["language_info"] = {"name": language}
    return nb


def stripped_text(path: Path) -> str:
    """The text `path` holds once stripped (what `strip` writes)."""
    text = nbformat.writes(stripped(nbformat.read(path, as_version=nbformat.NO_CONVERT)))
    return text if text.endswith("\n") else text + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="notebooks (default: every one in notebooks/)")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if any notebook is not stripped")
    args = ap.parse_args(argv)
    dirty = []
    for path in args.notebooks or sorted(HERE.glob("*.ipynb")):
        text = stripped_text(path)
        if path.read_text(encoding="utf-8") != text:
            dirty.append(path)
            if not args.check:
                path.write_text(text, encoding="utf-8")
    for path in dirty:
        print(f"{path}: {'not stripped' if args.check else 'stripped'}")
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
