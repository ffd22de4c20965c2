"""The real Binance captures the benchmarks use (../shared/data/real, or $GRINDER_REAL_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("GRINDER_REAL_DATA", REPO.parent / "shared" / "data" / "real" / "binance-usdm"))
# window name -> (files in order, later files continuing earlier ones; symbol)
WINDOWS = {
    "btcusdt_20230404": (["btcusdt_20230404.dat.gz", "btcusdt_20230405.dat.gz"], "BTCUSDT"),
    "btcusdt_20240718": (["btcusdt_20240718.gz", "btcusdt_20240719.gz"], "BTCUSDT"),
    "btcusdt_20240808": (["btcusdt_20240808.gz"], "BTCUSDT"),
    "ethusdt_20240718": (["ethusdt_20240718.gz", "ethusdt_20240719.gz"], "ETHUSDT"),
}
