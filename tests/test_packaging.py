"""What `pip install` puts in site-packages: one top-level package, `grinder`, holding every package in the tree."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MOUNTED = {"grinder.live": "live", "grinder.strategies": "strategies"}  # top-level folders installed under grinder


def _config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_in_the_tree_is_installed_and_nothing_else():
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "grinder").rglob("__init__.py")}
    on_disk |= set(MOUNTED)
    assert set(_config()["packages"]) == on_disk


def test_only_grinder_at_the_top_level():
    cfg = _config()
    assert {p.split(".")[0] for p in cfg["packages"]} == {"grinder"}
    assert cfg["package-dir"] == MOUNTED


def test_installed_modules_come_from_the_folders():
    import grinder.live.adapter
    import grinder.strategies.static_grid

    assert Path(grinder.live.adapter.__file__).parent == ROOT / "live"
    assert Path(grinder.strategies.static_grid.__file__).parent == ROOT / "strategies"
