"""End-to-end tests of the `grinder` command: real process, real files, exit codes and messages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, write_capture


def grinder(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "grinder", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env=None if env is None else {**os.environ, **env},
    )


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    dst = tmp_path_factory.mktemp("sample") / "lake"
    shutil.copytree(REPO / "data" / "sample" / "lake", dst)
    return dst


def test_ls_and_check_on_bundled_sample(sample):
    r = grinder("data", "ls", "--root", sample)
    assert r.returncode == 0, r.stderr
    assert "BTCUSDT" in r.stdout and "445,174" in r.stdout and "21,313" in r.stdout
    r = grinder("data", "check", "--root", sample, "--symbol", "BTCUSDT")
    assert r.returncode == 0, r.stderr
    facts = json.loads(r.stdout.strip().splitlines()[-1])
    assert facts == {"events": 466_576, "crossed": 0, "bbo_checked": 629, "bbo_matched": 629, "coverage_gaps": 0,
                     "unsynced_spans": 1, "unsynced_ns": 171_000_000, "clean": True}  # fmt: skip


def test_query_formats(sample):
    r = grinder(
        "data",
        "query",
        "select side, count(*) as n from trades group by side order by side",
        "--root",
        sample,
        "--format",
        "csv",
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "side,n" and len(lines) == 3
    assert sum(int(x.split(",")[1]) for x in lines[1:]) == 21_313


def test_ingest_then_ls(real_lines, tmp_path):
    path = write_capture(tmp_path / "btcusdt_cli.gz", real_lines)
    root = tmp_path / "lake"
    r = grinder("data", "ingest", "binance", path, "--root", root)
    assert r.returncode == 0, r.stderr
    assert "ingested binance-usdm/BTCUSDT" in r.stdout
    assert "skipped" in r.stdout  # pre-snapshot diffs are reported, not silently dropped
    r = grinder("data", "ls", "--root", root)
    assert r.returncode == 0 and "BTCUSDT" in r.stdout


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_ingest_progress_counts_the_bytes_read(real_lines, tmp_path, monkeypatch, gz):
    """The bar counts the input's bytes on disk (compressed for gzip) up to their size, then the write ends."""
    import contextlib

    from typer.testing import CliRunner

    from grinder.cli.common import ConsoleProgress
    from grinder.cli.main import app

    path = write_capture(tmp_path / "btcusdt_cli.gz", real_lines)
    if not gz:
        path = tmp_path / "btcusdt_cli"
        path.write_bytes(b"".join(real_lines))
    bars: list[tuple[str, int]] = []
    seen: list[tuple[int, int]] = []

    @contextlib.contextmanager
    def count(self, text, total):  # as on a terminal: the bar is drawn and updated
        bars.append((text, total))
        yield lambda done, total_: seen.append((done, total_))

    monkeypatch.setattr(ConsoleProgress, "count", count)
    r = CliRunner().invoke(app, ["data", "ingest", "binance", str(path), "--root", str(tmp_path / "lake")])
    assert r.exit_code == 0, r.output
    assert "ingested binance-usdm/BTCUSDT" in r.stdout
    size = path.stat().st_size
    assert bars == [("ingesting 1 file(s) as binance binance-usdm/BTCUSDT", size)]
    assert seen[0] == (0, size) and seen[-1] == (size, size) and all(t == size for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


@pytest.mark.parametrize(
    "args,message",
    [
        (["data", "ingest", "binance", "/nonexistent/btcusdt_x.gz"], "/nonexistent/btcusdt_x.gz: no such file"),
        (["data", "ingest", "binance", "{bad}"], "cannot tell the symbol"),
        (["data", "ingest", "binance", "{bad}", "--symbol", "ZZZUSDT"], "no built-in rules for binance-usdm/ZZZUSDT"),
        (["data", "ingest", "binance", "{bad}", "--symbol", "BTCUSDT", "--tick-size", "-1"], "invalid tick_size"),
        (
            ["data", "ingest", "binance", "{bad}", "--symbol", "BTCUSDT", "--tick-size", "inf"],
            "invalid tick_size: Input should be a finite number",
        ),
        (
            [
                "data",
                "ingest",
                "binance",
                "{bad}",
                "--symbol",
                "ZZZUSDT",
                "--tick-size",
                "0.1",
                "--lot-size",
                "0.001",
                "--min-notional",
                "nan",
            ],
            "invalid min_notional: Input should be a finite number",
        ),  # fmt: skip
        (["data", "ingest", "binance", "{bad}", "--symbol", "BTCUSDT"], "x.gz: corrupt or truncated gzip"),
        (["data", "ingest", "binance", "{bad}", "--symbol", "BTCUSDT", "--compression", "gzip"], "unknown compression"),
        (["data", "query", "select nope from book", "--root", "{sample}"], "query failed: Binder Error"),
        (["data", "ls", "--root", "{empty}"], "holds no data"),
        (["data", "check", "--symbol", "BTCUSDT", "--root", "{sample}", "--start", "yesterday"], "cannot read time"),
        (
            [
                "data",
                "check",
                "--symbol",
                "BTCUSDT",
                "--root",
                "{sample}",
                "--start",
                "2020-01-01",
                "--end",
                "2020-01-02",
            ],
            "no book or trade rows",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, sample, tmp_path):
    bad = tmp_path / "x.gz"
    bad.write_bytes(b"\x1f\x8b\x08 not really gzip\n")
    subst = {"{bad}": str(bad), "{sample}": str(sample), "{empty}": str(tmp_path / "empty")}
    r = grinder(*[subst.get(a, a) for a in args])
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_malformed_file_reports_file_and_line(real_lines, tmp_path):
    lines = list(real_lines[:200])
    lines[120] = lines[120][:50] + b"\n"
    path = write_capture(tmp_path / "btcusdt_bad.gz", lines)
    r = grinder("data", "ingest", "binance", path, "--root", tmp_path / "lake")
    assert r.returncode == 2
    assert f"{path}:121: malformed JSON" in r.stderr
    assert not (tmp_path / "lake" / "book").exists()


def test_synth_then_check(tmp_path):
    root = tmp_path / "lake"
    r = grinder("data", "synth", "--events", "50000", "--seed", "3", "--root", root)
    assert r.returncode == 0, r.stderr
    assert "generated synthetic/SYNTHUSDT seed 3" in r.stdout
    r = grinder("data", "check", "--venue", "synthetic", "--symbol", "SYNTHUSDT", "--root", root)
    assert r.returncode == 0, r.stderr
    facts = json.loads(r.stdout.strip().splitlines()[-1])
    assert facts["crossed"] == 0 and facts["bbo_checked"] == facts["bbo_matched"] > 0


GRID = ["-p", "interval=1.0", "-p", "half_spread=2.0", "-p", "order_qty=0.1", "-p", "max_position=5"]


def test_backtest_writes_a_run_folder_with_a_stable_digest(sample, tmp_path):
    digests = []
    for threads in ("1", "2"):  # the digest does not depend on the number of threads
        r = grinder("backtest", "static_grid", "--root", sample, *GRID, "--out", tmp_path / "runs",
                    env={"NUMBA_NUM_THREADS": threads})  # fmt: skip
        assert r.returncode == 0, r.stderr
        digests.append(r.stdout.split("digest ")[1].split()[0])
    assert digests[0] == digests[1]
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and {p.name for p in runs[0].iterdir()} == {
        "fills.parquet",
        "steps.parquet",
        "funding.parquet",
        "summary.json",
        "report.html",
        "qrules.parquet",
    }
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["digest"] == digests[0] and summary["fills"] > 500 and summary["params"]["levels"] == 20
    assert f"report: {runs[0] / 'report.html'}" in r.stdout.replace(str(runs[1]), str(runs[0]))
    fills = pq.read_table(runs[0] / "fills.parquet").to_pydict()
    assert set(fills["level"]) <= {*range(-20, 0), *range(1, 21)}
    assert abs(summary["equity"] - (summary["realized"] + summary["unrealized"] - summary["fees"]
                                    - summary["funding_paid"])) < 1e-6  # fmt: skip


def test_backtest_partial_fills_and_latency_file(sample, tmp_path):
    lat = tmp_path / "lat.csv"
    lat.write_text("ts,entry_ns,response_ns\n0,5000000,5000000\n")
    r = grinder("backtest", "static_grid", "--root", sample, *GRID, "--partial-fills", "--latency-file", lat,
                "--no-report", "--out", tmp_path / "runs")  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads((next((tmp_path / "runs").iterdir()) / "summary.json").read_text())
    assert summary["venue"]["partial_fills"] is True and summary["venue"]["latency_file"] == str(lat)
    assert summary["counters"]["partial_fills"] > 0


def test_backtest_reads_a_toml_config(sample, tmp_path):
    cfg = tmp_path / "grid.toml"
    cfg.write_text(
        "[strategy]\ninterval = 1.0\nhalf_spread = 2.0\norder_qty = 0.1\nmax_position = 5.0\n"
        "[venue]\nentry_latency_ns = 5000000\n"
    )
    r = grinder("backtest", "static_grid", "--root", sample, "--config", cfg, "--out", tmp_path / "runs")
    assert r.returncode == 0, r.stderr
    run = next((tmp_path / "runs").iterdir())
    assert json.loads((run / "summary.json").read_text())["venue"]["entry_latency_ns"] == 5_000_000


@pytest.mark.parametrize(
    "args,message",
    [
        (["nope"], "unknown strategy 'nope'"),
        (["static_grid", "-p", "intervl=1"], "unknown parameter(s) intervl"),
        (
            ["static_grid", "-p", "interval=-1", "-p", "half_spread=2", "-p", "order_qty=1", "-p", "max_position=5"],
            "interval: Input should be greater than 0",
        ),
        (["static_grid", "-p", "interval"], "expected NAME=VALUE"),
        (["static_grid", *GRID, "--queue", "fifo"], "venue: queue"),
        (["static_grid", *GRID, "--start", "2020-01-01", "--end", "2020-01-02"], "no book or trade rows"),
        (["static_grid", *GRID, "--config", "/nonexistent.toml"], "/nonexistent.toml: no such file"),
        (["static_grid", *GRID, "--latency-file", "/nonexistent.parquet"], "no such latency file"),
    ],
)
def test_backtest_bad_input_is_one_line_and_exit_2(args, message, sample, tmp_path):
    r = grinder("backtest", *args, "--root", sample, "--out", tmp_path / "runs")
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_backtest_gates_from_toml_are_applied_and_validated(sample, tmp_path):
    base = "[strategy]\ninterval = 1.0\nhalf_spread = 2.0\norder_qty = 0.1\nmax_position = 5.0\n"
    good = tmp_path / "good.toml"
    good.write_text(base + "[gates]\nrate_capacity = 10\nrate_per_s = 20\n")
    r = grinder("backtest", "static_grid", "--root", sample, "--config", good, "--out", tmp_path / "runs")
    assert r.returncode == 0, r.stderr
    summary = json.loads((next((tmp_path / "runs").iterdir()) / "summary.json").read_text())
    assert summary["gates"]["rate_capacity"] == 10 and summary["counters"]["blocked_rate_limit"] > 0
    bad = tmp_path / "bad.toml"
    bad.write_text(base + "[gates]\nrate_capacity = -1\n")
    r = grinder("backtest", "static_grid", "--root", sample, "--config", bad, "--out", tmp_path / "runs2")
    assert r.returncode == 2 and "gates: rate_capacity" in r.stderr and not (tmp_path / "runs2").exists()


def test_backtest_cache_keeps_tape_and_replay_and_changes_nothing(sample, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(sample, lake)
    digests = []
    for _ in range(2):
        r = grinder("backtest", "static_grid", "--root", lake, *GRID, "--cache", "--no-report", "--out", tmp_path / "r")
        assert r.returncode == 0, r.stderr
        digests.append(r.stdout.split("digest ")[1].split()[0])
    assert digests[0] == digests[1]
    assert any((lake / "_tapes").iterdir()) and any((lake / "_replays").iterdir())


SWEEP = ["-g", "interval=1,2", "-g", "half_spread=1:4:3", "-p", "order_qty=0.1", "-p", "max_position=5"]


def test_sweep_writes_a_folder_and_its_sets_match_lone_backtests(sample, tmp_path):
    r = grinder("sweep", "static_grid", "--root", sample, *SWEEP, "--train", "0.6", "--out", tmp_path / "sw")
    assert r.returncode == 0, r.stderr
    folder = next((tmp_path / "sw").iterdir())
    files = {"results.parquet", "ranking.parquet", "summary.json", "report.html", "best"}  # best: MLflow child runs
    assert {p.name for p in folder.iterdir()} == files and len(list((folder / "best").iterdir())) == 3
    assert f"sweep folder: {folder}" in r.stdout and "#1 set" in r.stdout
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["sets"] == 4 and summary["backtests"] == 8 and summary["rank_key"] == "equity_out"
    rows = pq.read_table(folder / "results.parquet").to_pylist()
    test = next(w for w in summary["windows"] if w["sample"] == "out")
    row = next(x for x in rows if x["window"] == "test" and x["interval"] == 2.0 and x["half_spread"] == 4.0)
    lone = grinder("backtest", "static_grid", "--root", sample, "-p", "interval=2", "-p", "half_spread=4",
                   "-p", "order_qty=0.1", "-p", "max_position=5", "--start", test["start_ns"], "--end",
                   test["end_ns"], "--no-report", "--out", tmp_path / "runs")  # fmt: skip
    assert lone.returncode == 0, lone.stderr
    assert lone.stdout.split("digest ")[1].split()[0] == row["digest"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["-p", "order_qty=0.1"], "empty sweep grid"),
        (["-g", "intervl=1,2"], "unknown parameter(s) intervl"),
        (["-g", "interval=2:1:1", "-p", "half_spread=1", "-p", "order_qty=0.1", "-p", "max_position=5"],
         "range '2:1:1' yields no value"),
        ([*SWEEP, "--rank-by", "profit"], "unknown ranking metric 'profit'"),
        ([*SWEEP, "--walk-forward", "-1"], "walk_forward must be >= 0"),
        ([*SWEEP, "--walk-forward", "2", "--fold-by", "calendar"], "unknown fold basis 'calendar'"),
        ([*SWEEP, "--memory-limit", "lots"], "memory size 'lots'"),
        ([*SWEEP, "--min-events", "10000000"], "fewer than the minimum 10,000,000"),
        (["-g", "interval"], "expected NAME=SPEC"),
        ([*SWEEP, "--search", "grid"], "unknown search 'grid'"),
        ([*SWEEP, "--resume"], "--study and --resume go with --search tpe"),
    ],
)  # fmt: skip
def test_sweep_bad_input_is_one_line_and_exit_2(args, message, sample, tmp_path):
    r = grinder("sweep", "static_grid", "--root", sample, *args, "--out", tmp_path / "sw")
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "sw").exists() or not any((tmp_path / "sw").iterdir())


def test_sweep_on_a_dask_cluster_gives_the_local_sweep_id(sample, tmp_path):
    from distributed import LocalCluster

    args = ["sweep", "static_grid", "--root", sample, *SWEEP, "--train", "0.5", "--no-report"]
    local = grinder(*args, "--out", tmp_path / "a")
    assert local.returncode == 0, local.stderr
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0", host="127.0.0.1") as lc:
        remote = grinder(*args, "--cluster", lc.scheduler_address, "--out", tmp_path / "b")
    assert remote.returncode == 0, remote.stderr
    sid = [r.stdout.split("sweep id ")[1].split()[0] for r in (local, remote)]
    assert sid[0] == sid[1]


def test_sweep_cluster_that_does_not_answer_is_one_line_and_exit_2(sample, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = grinder("sweep", "static_grid", "--root", sample, *SWEEP, "--cluster", f"tcp://127.0.0.1:{port}",
                "--out", tmp_path / "sw", env={"GRINDER_CONNECT_TIMEOUT_S": "2"})  # fmt: skip
    assert r.returncode == 2 and "does not answer" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "sw").exists()
