"""MLflow from the command line: an empty store, a small sweep, then the parent, children, metrics and artifacts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.cli.test_cli import GRID, SWEEP, grinder, sample  # noqa: F401 - the sample lake fixture


def client_for(root):
    from grinder.track.mlflow_store import open_store

    return open_store(root)


def test_sweep_is_one_parent_run_with_its_best_sets_as_children(sample, tmp_path):  # noqa: F811
    store = tmp_path / "mlruns"
    r = grinder("sweep", "static_grid", "--root", sample, *SWEEP, "--train", "0.6", "--children", "2",
                "--mlruns", store, "--out", tmp_path / "sw")  # fmt: skip
    assert r.returncode == 0, r.stderr
    parent_id = r.stdout.split("mlflow run: ")[1].split()[0]
    client, exp = client_for(store)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["sets"] == 4
    assert client.get_experiment(exp).tags["mlflow.experimentKind"] == "custom_model_development"
    # Tagged like its children, so one filter finds the sweep and the backtests of a strategy and market.
    assert {k: parent.data.tags[k] for k in ("kind", "strategy", "symbol", "venue")} == {
        "kind": "sweep", "strategy": "static_grid", "symbol": "BTCUSDT", "venue": "binance-usdm"}  # fmt: skip
    found = client.search_runs(
        [exp], "tags.strategy = 'static_grid' and tags.symbol = 'BTCUSDT' and tags.kind = 'sweep'"
    )
    assert [r.info.run_id for r in found] == [parent_id]
    assert "best_equity_out" in parent.data.metrics
    arts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"results.parquet", "ranking.parquet", "summary.json", "report.html"} <= arts
    kids = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert len(kids) == 2 and all(k.info.status == "FINISHED" for k in kids)
    folder = next((tmp_path / "sw").iterdir())
    best = json.loads((folder / "summary.json").read_text())["best"][0]
    top = next(k for k in kids if k.data.tags["sweep_rank"] == "1")
    assert top.data.tags["sweep_set"] == str(best["set"]) and float(top.data.params["p.interval"]) == best["interval"]
    child_summary = json.loads(next((folder / "best").glob("*rank1-set*/summary.json")).read_text())
    assert top.data.tags["digest"] == child_summary["digest"]
    arts = {a.path for a in client.list_artifacts(top.info.run_id)}
    assert {"summary.json", "fills.parquet", "steps.parquet"} <= arts and "report.html" not in arts  # --child-reports
    assert "tracking " in r.stdout
    # The sweep's report, written before the child runs, links them once they exist: folder and MLflow run.
    page = (folder / "report.html").read_text()
    rank1 = next((folder / "best").glob("*rank1-set*")).name
    assert f"href='best/{rank1}/" in page and top.info.run_id in page


@pytest.fixture(scope="module")
def whole_run(sample, tmp_path_factory):  # noqa: F811
    """A whole backtest (`--whole`, the default) tracked in its own store: (store, the command's result).
    The two tests below read it; neither writes to it."""
    tmp = tmp_path_factory.mktemp("whole")
    store = tmp / "mlruns"
    r = grinder("backtest", "static_grid", "--root", sample, *GRID, "--whole", "--no-report", "--mlruns", store,
                "--out", tmp / "runs")  # fmt: skip
    return store, r


def test_a_backtest_is_one_run_with_its_digest_and_data_fingerprint(whole_run):
    store, r = whole_run
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.split("mlflow run: ")[1].split()[0]
    run = client_for(store)[0].get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["digest"] == r.stdout.split("digest ")[1].split()[0]
    assert len(run.data.tags["data_fingerprint"]) == 64 and "fills" in run.data.metrics


def test_a_chunked_backtest_is_the_whole_runs_digest_and_data_fingerprint(sample, whole_run, tmp_path):  # noqa: F811
    chunked_store = tmp_path / "mlruns"
    chunked = grinder("backtest", "static_grid", "--root", sample, *GRID, "--chunked", "--no-report", "--mlruns",
                      chunked_store, "--out", tmp_path / "runs")  # fmt: skip
    tags = []
    for store, r in (whole_run, (chunked_store, chunked)):
        assert r.returncode == 0, r.stderr
        tags.append(client_for(store)[0].get_run(r.stdout.split("mlflow run: ")[1].split()[0]).data.tags)
    assert tags[0]["digest"] == tags[1]["digest"]
    assert tags[0]["data_fingerprint"] == tags[1]["data_fingerprint"]
    for extra, what in ((["--cache"], "--cache"), (["--model", "models:/vol@champion"], "--model")):
        r = grinder("backtest", "static_grid", "--root", sample, *GRID, "--chunked", *extra, "--no-track",
                    "--out", tmp_path / "runs")  # fmt: skip
        assert r.returncode == 2 and f"--chunked reads the lake an hour at a time: it takes no {what}" in r.stderr


def test_a_sweep_that_fails_is_marked_failed(sample, tmp_path):  # noqa: F811
    from distributed import LocalCluster

    store = tmp_path / "mlruns"
    # A Dask scheduler without workers: the sweep's run is open when the study finds no one to run it
    # (a selection starting before the data no longer fails: windows are cut within the data).
    with LocalCluster(n_workers=0, dashboard_address=":0", host="127.0.0.1") as lc:
        r = grinder("sweep", "static_grid", "--root", sample, *SWEEP, "--train", "0.5", "--cluster",
                    lc.scheduler_address, "--mlruns", store, "--out", tmp_path / "sw",
                    env={"GRINDER_WORKER_TIMEOUT_S": "1"})  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr and "has no workers" in r.stderr, r.stderr
    client, exp = client_for(store)
    runs = client.search_runs([exp])
    assert [x.info.status for x in runs] == ["FAILED"]
    assert not (tmp_path / "sw").exists()


def test_ui_without_a_store_says_so(tmp_path):
    r = grinder("ui", "--mlruns", tmp_path / "none")
    assert r.returncode == 2 and "no MLflow store here yet" in r.stderr and "Traceback" not in r.stderr


def stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat fields after the command name (state first, then ppid, ...), None when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def children_of(pid: int) -> dict[int, str]:
    """Every descendant of a process, pid -> its start time (so a reused pid is not taken for it), from /proc."""
    stats = {int(d.name): stat(int(d.name)) for d in Path("/proc").iterdir() if d.name.isdigit()}
    stats = {p: st for p, st in stats.items() if st}  # some ended while we looked
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        kids = {p: st[19] for p, st in stats.items() if int(st[1]) == parent}
        found |= kids
        todo.extend(kids)
    return found


def running(pid: int, start: str) -> bool:
    """Whether that process still exists and is not a zombie (a zombie holds no port and no memory)."""
    st = stat(pid)
    return st is not None and st[19] == start and st[0] != "Z"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # our requests' TIME_WAIT sockets do not count
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for(check, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


# SIGKILL: `grinder ui` cannot pass it on; the kernel sends its server SIGTERM (Linux's parent-death signal).
@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["SIGTERM", "SIGINT", "SIGKILL"]
)
def test_ui_stops_with_its_server_on_a_signal(tmp_path, signum):
    store = tmp_path / "mlruns"
    client_for(store)  # an empty store: `grinder ui` refuses a folder without one
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "ui.log"

    def health() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "grinder", "ui", "--mlruns", str(store), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    kids = {}
    try:
        assert wait_for(lambda: health() or proc.poll() is not None, 60) and proc.poll() is None, log.read_text()
        kids = children_of(proc.pid)
        assert kids, "the UI runs no server process"
        proc.send_signal(signum)
        # A stop asked for is not a failure.
        assert proc.wait(timeout=60) == (-signal.SIGKILL if signum == signal.SIGKILL else 0), log.read_text()
        # Generous: MLflow's process waits for uvicorn's shutdown, and `grinder ui` kills what is left after 10 s.
        assert wait_for(lambda: not any(running(*k) for k in kids.items()), 30), log.read_text()
        assert wait_for(lambda: port_free(port), 30) and not health()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid, start in kids.items():
            if running(pid, start):
                os.kill(pid, signal.SIGKILL)
