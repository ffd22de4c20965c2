"""pyproject.toml and environment.yml must name the same packages with the same lower bounds."""

from __future__ import annotations

import re
import tomllib

from tests.conftest import REPO


def _spec(line: str) -> tuple[str, str]:
    m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(>=\s*[0-9.]+)?", line)
    return m.group(1).lower().replace("_", "-"), (m.group(2) or "").replace(" ", "")


def test_environment_yml_agrees_with_pyproject():
    py = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pip = dict(_spec(d) for d in py["dependencies"] + py["optional-dependencies"]["test"])
    conda = {}
    text = (REPO / "environment.yml").read_text()
    for line in text[text.index("dependencies:") :].splitlines():
        m = re.match(r"\s+- ([A-Za-z][^:#]*)$", line)
        if m and m.group(1).strip() not in ("pip", "-e ."):
            name, bound = _spec(m.group(1))
            if name != "python":
                conda[name] = bound
    assert conda == pip
