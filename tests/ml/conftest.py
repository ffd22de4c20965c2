"""What the ml tests share: the bundled sample lake (copied, so nothing writes into the repository) and its tape."""

from __future__ import annotations

import shutil

import pytest

from grinder.data.tape import load_tape
from tests.conftest import REPO

SAMPLE = REPO / "data" / "sample" / "lake"
VENUE, SYMBOL = "binance-usdm", "BTCUSDT"


@pytest.fixture(scope="session")
def sample_lake(tmp_path_factory):
    dst = tmp_path_factory.mktemp("ml-sample") / "lake"
    shutil.copytree(SAMPLE, dst)
    return dst


@pytest.fixture(scope="session")
def sample_tape(sample_lake):
    return load_tape(sample_lake, VENUE, SYMBOL)
