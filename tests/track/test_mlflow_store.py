"""MLflow tracking on a real backtest of the bundled sample: logged runs read back, sweeps, FAILED runs, the UI."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import grinder
from grinder.core import strategy
from grinder.data.tape import load_tape
from grinder.errors import DataError, TrackingError
from grinder.sim.backtest import VenueConfig, run_backtest
from grinder.sim.run_folder import summarize, write_run
from grinder.track import mlflow_store
from grinder.track.mlflow_store import log_backtest, open_store, sweep_run, ui_command, ui_env
from grinder.track.provenance import data_fingerprint, git_commit
from tests.conftest import REPO

LAKE = REPO / "data" / "sample" / "lake"


def backtest(out, **params):
    """A real run folder: the static grid on the sample, without the HTML report (slow, and not under test)."""
    tape = load_tape(LAKE, "binance-usdm", "BTCUSDT")
    grid = strategy.get("static_grid")
    p = grid.validate({"interval": 1.0, "half_spread": 2.0, "order_qty": 0.1, "max_position": 5, **params})
    venue = VenueConfig()
    res = run_backtest(tape, grid, grid.vector(p), venue)
    meta = {
        "strategy": grid.name,
        "params": p.model_dump(),
        "venue": venue.model_dump(),
        "gates": {"max_position": 5.0},
        "selection": {"root": str(LAKE), "venue": "binance-usdm", "symbol": "BTCUSDT", "start": None, "end": "x"},
        "events": len(tape),
        "stats": {"Total Return [%]": 1.5, "Sharpe Ratio": -0.25, "Period": "0 days 00:10:00"},
    }
    summary = summarize(res, meta, grid.modes)
    return write_run(out, f"{grid.name}-BTCUSDT", res, summary, report=False), data_fingerprint(tape), summary


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two run folders (levels 20 and 10) and their data fingerprint."""
    out = tmp_path_factory.mktemp("runs")
    a, fp, summary = backtest(out, levels=20)
    b, _, _ = backtest(out, levels=10)
    (a / "report.html").write_text("<html>report</html>")  # stands in for the report write_run can make
    return a, b, fp, summary


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("track") / "mlruns"  # does not exist yet: the first log creates it


@pytest.fixture(scope="module")
def logged(runs, store):
    a, _, fp, _ = runs
    return log_backtest(a, fingerprint=fp, root=store, tags={"note": "first"})


def test_store_is_sqlite_with_every_artifact_folder_inside_it(store, logged):
    assert mlflow_store.tracking_uri(store) == f"sqlite:///{store.resolve()}/mlflow.db"
    assert (store / "mlflow.db").is_file() and (store / "artifacts").is_dir()
    client, exp_id = open_store(store)
    locations = {e.name: e.artifact_location for e in client.search_experiments()}
    assert locations == {"grinder": str(store / "artifacts" / exp_id), "Default": str(store / "artifacts" / "0")}
    assert client.get_run(logged).info.experiment_id == exp_id
    assert client.get_run(logged).info.artifact_uri.startswith(str(store / "artifacts" / exp_id) + "/")


def test_logged_run_reads_back(runs, store, logged, tmp_path):
    a, _, fp, summary = runs
    client, _ = open_store(store)
    run = client.get_run(logged)
    assert run.info.status == "FINISHED" and run.info.run_name == a.name
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["p.levels"] == "20" and params["p.half_spread"] == "2.0"
    assert params["venue.queue"] == "risk_averse" and params["venue.maker_fee"] == "null"
    assert params["gates.max_position"] == "5.0"
    for key in ("equity", "realized", "unrealized", "fees", "funding_paid", "position"):
        assert metrics[key] == pytest.approx(summary[key])
    assert metrics["fills"] == summary["fills"] > 100
    assert metrics["counters.placed"] == summary["counters"]["placed"] > 0
    assert metrics["stats.Total Return pct"] == 1.5 and metrics["stats.Sharpe Ratio"] == -0.25
    assert "stats.Period" not in metrics  # not a number
    assert metrics["max_drawdown"] >= max(0.0, -summary["equity"])
    assert tags["digest"] == summary["digest"] and tags["data_fingerprint"] == fp
    assert tags["strategy"] == "static_grid" and tags["symbol"] == "BTCUSDT" and tags["venue"] == "binance-usdm"
    assert tags["end"] == "x" and "start" not in tags  # a selection without a start has no start tag
    assert tags["kind"] == "backtest" and tags["note"] == "first" and tags["run_dir"] == str(a.resolve())
    assert tags["grinder_version"] == grinder.__version__
    # The checkout may be committed to while the tests run: check the form, not the hash.
    if git_commit(REPO) is None:
        assert "git_commit" not in tags
    else:
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", tags["git_commit"])
    files = {f.path: f.file_size for f in client.list_artifacts(logged)}
    assert set(files) == {"summary.json", "report.html", "fills.parquet", "steps.parquet", "funding.parquet",
                          "qrules.parquet"}  # fmt: skip
    assert files["fills.parquet"] == (a / "fills.parquet").stat().st_size
    local = client.download_artifacts(logged, "summary.json", str(tmp_path))
    assert json.loads(open(local).read())["digest"] == summary["digest"]


@pytest.mark.filterwarnings(f"ignore:{mlflow_store.SA_NOLOAD_WARNING}")  # importing MLflow's store module
def test_experiments_open_in_the_runs_view_in_new_and_old_stores(tmp_path):
    from mlflow.entities import ExperimentTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    def kinds(root):
        client, _ = open_store(root)  # this open tags what lacks the kind
        return {e.name: e.tags.get("mlflow.experimentKind") for e in client.search_experiments()}

    fresh = tmp_path / "fresh"
    open_store(fresh, "other")
    assert kinds(fresh) == {"Default": "custom_model_development", "grinder": "custom_model_development",
                            "other": "custom_model_development"}  # fmt: skip
    # A store made before the tag: experiments without it, and one whose kind someone chose in the UI.
    old = tmp_path / "old"
    old.mkdir()
    direct = SqlAlchemyStore(mlflow_store.tracking_uri(old), mlflow_store.artifact_root(old))
    direct.create_experiment("grinder")
    direct.create_experiment("chosen", tags=[ExperimentTag("mlflow.experimentKind", "genai_development")])
    gone = direct.create_experiment("gone")
    direct.delete_experiment(gone)
    before = {e.name: e.tags.get("mlflow.experimentKind") for e in direct.search_experiments()}
    direct.engine.dispose()
    assert before == {"Default": None, "grinder": None, "chosen": "genai_development"}
    assert kinds(old) == {"Default": "custom_model_development", "grinder": "custom_model_development",
                          "chosen": "genai_development"}  # fmt: skip
    with pytest.raises(TrackingError, match="'gone' was deleted"):
        open_store(old, "gone")
    client, _ = open_store(old)
    assert "mlflow.experimentKind" not in client.get_experiment(gone).tags  # a deleted one stays as it was


def test_a_short_run_logs_its_return_and_per_window_figures(runs, store, logged):
    from grinder.report.load import load_run
    from grinder.report.stats import ANNUALISE_MIN_S, choose_capital, run_stats

    a, _, _, summary = runs
    run = client_for_store(store).get_run(logged)
    metrics, tags = run.data.metrics, run.data.tags
    ts = pq.read_table(a / "steps.parquet", columns=["ts"]).column("ts").to_numpy()
    hours = (ts[-1] - ts[0]) / 3.6e12  # the sample is one span without gaps
    assert metrics["covered_hours"] == pytest.approx(hours) and 0 < hours < 1
    # No capital in the summary: the report's capital, the largest gross notional held.
    capital, _ = choose_capital(load_run(a))
    assert tags["return_over"] == "max_notional" and metrics["return_base"] == pytest.approx(capital.amount)
    assert metrics["return_pct"] == pytest.approx(100 * summary["equity"] / capital.amount)
    assert tags["return_figures"] == "per_window" and "sharpe" not in metrics
    assert metrics["pnl_per_hour"] == pytest.approx(summary["equity"] / hours)
    note = run_stats(load_run(a)).note
    assert f"under the {ANNUALISE_MIN_S // 86_400} days annualised figures need" in note


def synthetic_run(out, name, ts, capital=None):
    """A run folder of a drifting random-walk equity over the step times `ts` (ns), holding 1 at mid 100."""
    rng = np.random.default_rng(7)
    n = len(ts)
    equity = np.cumsum(rng.normal(0.01, 1.0, n))
    steps = {"ts": ts, "mid": np.full(n, 100.0), "position": np.ones(n), "mode": np.zeros(n, np.int64),
             "quote_bid": np.full(n, 99.0), "quote_ask": np.full(n, 101.0), "equity": equity}  # fmt: skip
    folder = out / name
    folder.mkdir()
    pq.write_table(pa.table(steps), folder / "steps.parquet")
    fills = {"ts_exch": np.zeros(0, np.int64), "side": np.zeros(0, np.int64), "price": np.zeros(0),
             "qty": np.zeros(0), "maker": np.zeros(0, bool), "fee": np.zeros(0)}  # fmt: skip
    pq.write_table(pa.table(fills), folder / "fills.parquet")
    pq.write_table(pa.table({"ts": np.zeros(0, np.int64), "amount": np.zeros(0)}), folder / "funding.parquet")
    summary = {"strategy": "static_grid", "settle": "USDT", "equity": float(equity[-1])}
    if capital is not None:
        summary["capital"] = capital
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder, summary


def test_a_long_run_logs_the_reports_sharpe_and_a_gappy_one_does_not(store, tmp_path):
    from grinder.report.load import load_run
    from grinder.report.stats import ANNUALISE_MIN_S, run_stats

    minute = 60 * 10**9
    start = 1_700_000_000 * 10**9
    steps = ANNUALISE_MIN_S // 60 + 2 * 1440  # 32 days of one-minute steps
    long, summary = synthetic_run(tmp_path, "long", start + minute * np.arange(steps), capital=20_000.0)
    run = client_for_store(store).get_run(log_backtest(long, fingerprint=None, root=store, experiment="synthetic"))
    metrics, tags = run.data.metrics, run.data.tags
    assert tags["return_figures"] == "annualised" and tags["return_over"] == "capital"
    assert "pnl_per_hour" not in metrics and metrics["covered_hours"] == pytest.approx((steps - 1) / 60)
    # The report's figures, from vectorbt on the same returns (5-minute buckets of the 1-minute steps).
    stats = run_stats(load_run(long))
    assert stats.freq == "5min"
    assert metrics["sharpe"] == pytest.approx(stats.table["Sharpe Ratio"], rel=1e-9)
    assert np.isfinite(metrics["sharpe"]) and metrics["sharpe"] != 0
    assert metrics["return_pct"] == pytest.approx(stats.table["Total Return [%]"], rel=1e-9)
    assert metrics["return_pct"] == pytest.approx(100 * summary["equity"] / 20_000)
    assert "annualised figures need" not in stats.note
    # As many steps over the same 64 days of calendar, but in two one-hour spans: too little market time.
    hour = start + minute * np.arange(60)
    gappy, summary = synthetic_run(tmp_path, "gappy", np.concatenate([hour, hour + 64 * 86_400 * 10**9]))
    run = client_for_store(store).get_run(log_backtest(gappy, fingerprint=None, root=store, experiment="synthetic"))
    metrics, tags = run.data.metrics, run.data.tags
    assert tags["return_figures"] == "per_window" and "sharpe" not in metrics
    assert metrics["covered_hours"] == pytest.approx(118 / 60)  # 59 minutes in each span
    assert metrics["pnl_per_hour"] == pytest.approx(summary["equity"] / (118 / 60))
    assert tags["return_over"] == "max_notional" and metrics["return_base"] == 100.0


def client_for_store(root):
    return open_store(root)[0]


def test_large_steps_stay_in_the_run_folder(runs, store, monkeypatch):
    a, _, fp, _ = runs
    monkeypatch.setattr(mlflow_store, "STEPS_MAX_BYTES", 1000)
    run_id = log_backtest(a, fingerprint=fp, root=store, experiment="small")
    client, _ = open_store(store)
    assert "steps.parquet" not in {f.path for f in client.list_artifacts(run_id)}
    assert "not copied" in client.get_run(run_id).data.tags["steps_artifact"]


def test_sweep_with_two_children(runs, store, tmp_path):
    a, b, fp, _ = runs
    table = tmp_path / "results.parquet"
    pd.DataFrame({"levels": [10, 20], "equity": [1.0, 2.0]}).to_parquet(table)
    page = tmp_path / "report.html"
    page.write_text("<html>sweep</html>")
    spec = {"levels": [10, 20], "fixed": {"interval": 1.0}}
    with sweep_run(store, "grid-levels", spec, {"strategy": "static_grid"}, experiment="sweeps") as sweep:
        sweep.log_artifact(table)
        sweep.log_artifact(page)
        sweep.log_metrics({"best equity": 2.0, "sets": 2})
        kids = [sweep.log_child(a, fingerprint=fp)]
        kids.append(log_backtest(b, fingerprint=fp, root=store, parent_run_id=sweep.run_id))
    client, exp_id = open_store(store, "sweeps")
    parent = client.get_run(sweep.run_id)
    assert parent.info.status == "FINISHED" and parent.info.experiment_id == exp_id
    assert parent.data.tags["kind"] == "sweep" and parent.data.tags["strategy"] == "static_grid"
    assert parent.data.params == {"spec.levels": "[10, 20]", "spec.fixed.interval": "1.0"}
    assert parent.data.metrics == {"best equity": 2.0, "sets": 2.0}
    files = {f.path for f in client.list_artifacts(sweep.run_id)}
    assert files == {"results.parquet", "report.html", "sweep_spec.json"}
    children = client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{sweep.run_id}'")
    assert sorted(r.info.run_id for r in children) == sorted(kids)
    assert {r.data.params["p.levels"] for r in children} == {"20", "10"}
    assert all(r.info.status == "FINISHED" for r in children)


def test_a_sweeps_children_reuse_its_client_and_cost_four_requests_each(runs, store, monkeypatch):
    from mlflow.tracking import MlflowClient

    a, b, fp, _ = runs
    calls = []
    for name in ("create_run", "log_batch", "log_param", "log_metric", "set_tag", "log_artifact", "log_artifacts",
                 "set_terminated", "get_run"):  # fmt: skip
        original = getattr(MlflowClient, name)

        def spy(self, *args, _name=name, _original=original, **kw):
            calls.append(_name)
            return _original(self, *args, **kw)

        monkeypatch.setattr(MlflowClient, name, spy)
    opened = []
    real_open = mlflow_store.open_store
    monkeypatch.setattr(mlflow_store, "open_store", lambda *x, **k: opened.append(x) or real_open(*x, **k))
    with sweep_run(store, "batched", {"levels": [10, 20]}, experiment="batched") as sweep:
        calls.clear()
        kids = [sweep.log_child(a, fingerprint=fp), sweep.log_child(b, fingerprint=fp)]
    assert len(opened) == 1  # the sweep's own; its children reuse its client and experiment
    # Per child: the run with its tags, one batch of params and metrics, one copy of its folder, its end.
    assert calls[:8] == ["create_run", "log_batch", "log_artifacts", "set_terminated"] * 2
    client, exp_id = open_store(store, "batched")
    for kid, folder in zip(kids, (a, b), strict=True):
        run = client.get_run(kid)
        assert run.info.experiment_id == exp_id and run.data.tags["mlflow.parentRunId"] == sweep.run_id
        assert {f.path for f in client.list_artifacts(kid)} == {p.name for p in folder.iterdir()}
        assert run.data.metrics["equity"] == json.loads((folder / "summary.json").read_text())["equity"]


@pytest.mark.parametrize("error", [ValueError("boom"), KeyboardInterrupt()], ids=["error", "ctrl-c"])
def test_a_failing_sweep_leaves_a_failed_parent(runs, store, error):
    a, _, fp, _ = runs
    exp = f"failing-{type(error).__name__}"
    with pytest.raises(type(error)):
        with sweep_run(store, "doomed", {"levels": [1]}, experiment=exp) as sweep:
            sweep.log_child(a, fingerprint=fp)
            raise error
    client, exp_id = open_store(store, exp)
    statuses = {r.data.tags.get("kind"): r.info.status for r in client.search_runs([exp_id])}
    assert statuses == {"sweep": "FAILED", "backtest": "FINISHED"}


def test_failure_while_logging_marks_the_run_failed_and_names_the_folder(runs, store, monkeypatch):
    from mlflow.tracking import MlflowClient

    a, _, fp, _ = runs

    def broken(self, run_id, local_path, artifact_path=None):
        raise OSError("disk full")

    monkeypatch.setattr(MlflowClient, "log_artifact", broken)
    monkeypatch.setattr(MlflowClient, "log_artifacts", broken)  # a whole run folder is copied in one call
    with pytest.raises(TrackingError, match="disk full") as e:
        log_backtest(a, fingerprint=fp, root=store, experiment="broken")
    assert e.value.path == str(a)
    client, exp_id = open_store(store, "broken")
    assert [r.info.status for r in client.search_runs([exp_id])] == ["FAILED"]


def test_bad_input_is_a_data_error_before_any_run_exists(runs, store, tmp_path):
    a, _, fp, _ = runs
    with pytest.raises(DataError, match="no such run folder"):
        log_backtest(tmp_path / "nope", fingerprint=fp, root=store, experiment="bad")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "summary.json").write_text((a / "summary.json").read_text())
    with pytest.raises(DataError, match="missing") as e:
        log_backtest(partial, fingerprint=fp, root=store, experiment="bad")
    assert e.value.path == str(partial / "fills.parquet")
    (partial / "summary.json").write_text("{not json")
    with pytest.raises(DataError, match="not readable JSON"):
        log_backtest(partial, fingerprint=fp, root=store, experiment="bad")
    with pytest.raises(TrackingError, match="no parent run") as e:
        log_backtest(a, fingerprint=fp, root=store, parent_run_id="0" * 32)
    assert e.value.path == str(store)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(TrackingError, match="cannot open the MLflow store") as e:
        open_store(blocked)
    assert e.value.path == str(blocked)
    client, _ = open_store(store)
    assert client.get_experiment_by_name("bad") is None  # nothing was created for bad input


def test_importing_the_module_does_not_import_mlflow():
    code = "import sys, grinder.track.mlflow_store, grinder.track.provenance; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_default_root_follows_the_environment(monkeypatch):
    monkeypatch.delenv("GRINDER_MLRUNS", raising=False)
    assert str(mlflow_store.default_root()) == "mlruns"
    monkeypatch.setenv("GRINDER_MLRUNS", "/somewhere/else")
    assert str(mlflow_store.default_root()) == "/somewhere/else"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, data: dict | None = None):
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status, r.read()


def test_ui_starts_and_shows_the_logged_run(store, logged, tmp_path):
    port = free_port()
    cmd = ui_command(store, port=port)
    assert cmd[cmd.index("--workers") + 1] == "1" and cmd[cmd.index("--host") + 1] == "127.0.0.1"
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "ui.log").open("wb")
    # Its own session, so the server and the uvicorn worker it spawns are stopped together.
    proc = subprocess.Popen(cmd, env=ui_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 45
        while True:
            assert proc.poll() is None, (tmp_path / "ui.log").read_text()
            try:
                if get(base + "/health") == (200, b"OK"):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "UI did not answer in 45 s:\n" + (tmp_path / "ui.log").read_text()
            time.sleep(0.25)
        status, page = get(base + "/")
        assert status == 200 and b"<html" in page.lower()
        _, exp_id = open_store(store)
        _, body = get(base + "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id]})
        runs = {r["info"]["run_id"]: r for r in json.loads(body)["runs"]}
        assert runs[logged]["info"]["status"] == "FINISHED"
        _, body = get(f"{base}/ajax-api/2.0/mlflow/artifacts/list?run_id={logged}")
        assert "summary.json" in {f["path"] for f in json.loads(body)["files"]}
        tags = {t["key"]: t["value"] for t in runs[logged]["data"]["tags"]}
        _, body = get(f"{base}/get-artifact?path=summary.json&run_uuid={logged}")
        assert json.loads(body)["digest"] == tags["digest"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
