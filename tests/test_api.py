"""The public API at the package's top level: what a strategy author and a notebook import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import grinder

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", grinder.__all__)
def test_every_public_name_resolves_to_the_object_its_module_defines(name):
    where = grinder._API[name]
    module, attr = where if isinstance(where, tuple) else (where, name)
    assert getattr(grinder, name) is getattr(__import__(module, fromlist=[attr]), attr)


def test_an_unknown_name_is_an_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="no attribute 'run_everything'"):
        _ = grinder.run_everything


def test_a_bare_import_stays_light():
    """`grinder live` imports the package before its config is read (the early kill-switch handler):
    the API's heavy modules load only when a name is used."""
    code = "import sys, grinder; print(sorted(m for m in ('numba', 'pandas', 'pydantic') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("path", sorted((REPO / "strategies").glob("*.py")), ids=lambda p: p.name)
def test_shipped_strategies_import_only_the_public_api(path):
    """A strategy file is written against `grinder`'s top level (and other strategy files), not its insides."""
    deep = [
        node.module
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom)
        and node.module
        and node.module.startswith("grinder.")
        and not node.module.startswith("grinder.strategies.")
    ]
    assert deep == [], f"{path.name} imports {deep}"
