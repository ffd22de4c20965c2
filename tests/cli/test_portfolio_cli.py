"""`grinder portfolio` end to end: real BTCUSDT and ETHUSDT windows plus synthetic symbols in one lake."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from tests.cli.test_cli import grinder
from tests.portfolio.test_real_universe import universe  # noqa: F401 - the shared lake fixture

CONFIG = """
[strategy]
levels = 10
half_spread = 2.0
interval = 1.0
order_qty = 0.01
max_position = 0.1

[symbols.ETHUSDT]
interval = 0.05
half_spread = 0.1
order_qty = 0.1
max_position = 1.0

[symbols."synthetic/SYNBUSDT"]
interval = 1.0
half_spread = 2.0

[symbols."synthetic/SYNCUSDT"]
interval = 0.05
half_spread = 0.1
order_qty = 0.1
max_position = 1.0

[prefilter]
max_spread_bps = 5.0
"""


def test_portfolio_chooses_trades_and_allocates(universe, tmp_path):  # noqa: F811
    root, _, t0 = universe
    cfg = tmp_path / "pf.toml"
    cfg.write_text(CONFIG)
    cands = "BTCUSDT,ETHUSDT,synthetic/SYNBUSDT,synthetic/SYNCUSDT"
    args = ["portfolio", "static_grid", "--root", root, "--symbols", cands, "--k", "3", "--start", t0,
            "--end", t0 + 360 * 10**9, "--lookback-s", "120", "--budget", "9000", "--config", cfg,
            "--out", tmp_path / "pf"]  # fmt: skip
    r = grinder(*args)
    assert r.returncode == 0, r.stderr
    folder = next((tmp_path / "pf").iterdir())
    assert {p.name for p in folder.iterdir()} == {"summary.json", "features.parquet", "equity.parquet", "report.html"}
    s = json.loads((folder / "summary.json").read_text())
    assert len(s["picks"]) == 3 and set(s["picks"]) <= set(s["candidates"])
    eq = pq.read_table(folder / "equity.parquet").to_pandas()
    total = sum(eq[f"{p}_allocated"] for p in s["picks"])
    assert abs(total.iloc[-1] - s["equity"]) < 1e-9 and abs(eq["portfolio_equity"].iloc[-1] - s["equity"]) < 1e-9
    assert (sum(eq[f"{p}_budget"] for p in s["picks"]) <= 9000 + 1e-9).all()
    again = grinder(*args[:-1], tmp_path / "pf2")
    assert again.stdout.split("portfolio id ")[1].split()[0] == s["portfolio_id"]
    # The library call a notebook makes, with the same arguments: the same picks, digests and id.
    from grinder import portfolio_job

    done = portfolio_job("static_grid", cands.split(","), k=3, start=t0, end=t0 + 360 * 10**9, lookback_s=120,
                         budget=9000, config=cfg, root=root, out_dir=tmp_path / "pf3")  # fmt: skip
    lib = json.loads((done.folder / "summary.json").read_text())
    assert lib == done.summary and lib["portfolio_id"] == s["portfolio_id"] and lib["digests"] == s["digests"]
    assert {k: v for k, v in lib.items() if k != "seconds"} == {k: v for k, v in s.items() if k != "seconds"}


GRID = ["-p", "interval=1", "-p", "half_spread=2", "-p", "order_qty=0.01", "-p", "max_position=0.1"]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--symbols", ""], "no candidate symbols"),
        (["--symbols", "BTCUSDT,NOPEUSDT", *GRID], "no data for NOPEUSDT"),
        (["--symbols", "BTCUSDT", "--k", "0"], "--k must be at least 1"),
        (["--symbols", "BTCUSDT,ETHUSDT", "--budget", "-1", *GRID], "budget must be positive"),
    ],
)  # fmt: skip
def test_portfolio_bad_input(universe, tmp_path, extra, message):  # noqa: F811
    root, _, _ = universe
    r = grinder("portfolio", "static_grid", "--root", root, *extra, "--out", tmp_path / "pf")
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "pf").exists()
