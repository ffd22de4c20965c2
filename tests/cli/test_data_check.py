"""`grinder data check` on two captures 15 months apart: the gap and the unsynced start are reported."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_cli import grinder
from tests.sim.test_backtest_real import two_capture_lake


@pytest.fixture(scope="module")
def lake(real_dir, tmp_path_factory):
    return two_capture_lake(tmp_path_factory.mktemp("gap") / "lake", real_dir)


def test_the_minute_before_a_captures_snapshot_is_not_called_clean(lake):
    r = grinder("data", "check", "--root", lake, "--symbol", "BTCUSDT", "--start", "2024-07-18T23:57",
                "--end", "2024-07-18T23:58")  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    # The 2023 capture's book is not carried over: the book waits for the 2024 snapshot (T = ...022750 ms).
    assert (
        "  book unsynced: 2024-07-18T23:57:00.000 -> 2024-07-18T23:57:02.750 (2.750 s): "
        "no snapshot yet in its coverage span (before the capture's first snapshot)"
    ) in lines
    assert "  coverage gap: 2023-04-04T23:58:36.739 -> 2024-07-18T23:57:02.750 (471.0 days): no data" in lines
    facts = json.loads(lines[-1])
    assert facts["clean"] is False and facts["coverage_gaps"] == 1
    assert facts["unsynced_spans"] == 1 and facts["unsynced_ns"] == 2_750_000_000
    # Once synced, the rebuilt book is the venue's: every comparable best bid/ask matches.
    assert facts["crossed"] == 0 and facts["bbo_checked"] == facts["bbo_matched"] > 0


def test_a_window_inside_one_synced_capture_is_clean(lake):
    r = grinder("data", "check", "--root", lake, "--symbol", "BTCUSDT", "--start", "2024-07-18T23:57:10",
                "--end", "2024-07-18T23:57:20")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "  clean: the book is synced from its first snapshot on" in r.stdout.splitlines()
    facts = json.loads(r.stdout.splitlines()[-1])
    assert facts["clean"] is True and facts["unsynced_spans"] == 0 and facts["coverage_gaps"] == 0


def test_the_lead_in_before_the_data_s_first_snapshot_is_reported_but_a_gap_is_not_clean(lake):
    r = grinder("data", "check", "--root", lake, "--symbol", "BTCUSDT")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [x for x in lines if x.startswith("  book unsynced: 2023-04-04T23:58:20.452 -> 2023-04-04T23:58:20.580")]
    assert [x for x in lines if x.startswith("  coverage gap: 2023-04-04T23:58:36.739 -> 2024-07-18T23:57:02.750")]
    facts = json.loads(lines[-1])
    assert facts["clean"] is False and facts["coverage_gaps"] == 1 and facts["unsynced_spans"] == 1
