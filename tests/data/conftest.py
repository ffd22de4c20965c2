"""Fixtures shared by the data-layer tests."""

from __future__ import annotations

import pytest

from tests.fixtures import make_fixtures as mf


@pytest.fixture(scope="module")
def truth(real_dir):
    """(book, trades) of the fixture window, from Grinder's Binance ingest of the real capture."""
    return mf.ground_truth(mf.WINDOW_S, real_dir / mf.SOURCE.name)
