"""The README's Python snippet gives what the command line gives, for the whole sample and for a window."""

from __future__ import annotations

import re

from tests.cli.test_cli import grinder
from tests.conftest import REPO

PARAMS = ["-p", "interval=1", "-p", "half_spread=2", "-p", "order_qty=0.1", "-p", "max_position=5"]


def snippet() -> str:
    """The README's Python code block (the one after "From Python or a notebook")."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text[text.index("From Python or a notebook") :], re.S)
    assert blocks, "no Python snippet in README.md"
    return blocks[0]


def digest(r) -> str:
    assert r.returncode == 0, r.stderr
    return r.stdout.split("digest ")[1].split()[0]


def equity(r) -> float:
    return float(r.stdout.split("equity ")[1].split()[0])


def test_the_readme_snippet_reproduces_grinder_backtest(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the snippet names the bundled sample by a relative path, as a user in the repo would
    ns: dict = {}
    exec(compile(snippet(), "README.md", "exec"), ns)
    common = ["backtest", "static_grid", "--root", "data/sample/lake", *PARAMS, "--no-report", "--no-track"]
    whole = grinder(*common, "--out", tmp_path / "a", cwd=REPO)
    assert ns["res"].digest == digest(whole) and round(ns["res"].equity, 4) == equity(whole)
    window = grinder(*common, "--start", "2024-08-08T23:55", "--end", "2024-08-08T23:58", "--out", tmp_path / "b",
                     cwd=REPO)  # fmt: skip
    assert ns["res_w"].digest == digest(window) and round(ns["res_w"].equity, 4) == equity(window)
    assert ns["res_w"].digest != ns["res"].digest
