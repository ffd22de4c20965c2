"""Fixtures of the notebook tests: the kernel spec every notebook runs with."""

from __future__ import annotations

import pytest

from tests.notebooks.runner import write_kernel_spec


@pytest.fixture(scope="session")
def kernels(tmp_path_factory):
    """The folder holding this session's `python3` kernel spec (this interpreter's ipykernel)."""
    return write_kernel_spec(tmp_path_factory.mktemp("jupyter"))
