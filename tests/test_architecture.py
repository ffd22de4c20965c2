"""docs/architecture.md has one row per module in the tree, and names no module that is gone."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "architecture.md"


def _modules() -> set[str]:
    files = [p for d in ("grinder", "live", "strategies") for p in (REPO / d).rglob("*.py")]
    return {p.relative_to(REPO).as_posix() for p in files if p.name != "__init__.py" or p.parent.name == "grinder"}


def _rows() -> set[str]:
    return set(re.findall(r"^\| `([\w/]+\.py)`", PAGE.read_text(), re.M))


def test_every_module_has_a_row():
    assert sorted(_modules() - _rows()) == []


def test_every_row_names_a_module_that_exists():
    assert sorted(_rows() - _modules()) == []
