"""A registered model in the live decision path: shadow and active sessions against the emulator and in paper mode,
a version pinned at start, refusals at start, and the live features and forecasts against the offline pass.

The models are trained by `grinder.ml.train.train_job` on a copy of the bundled sample lake into a temporary
MLflow store: v1 of `vol` (fwd_rv_10s) is the champion; v2 (another seed and rate) is where the alias moves
mid-session; `mark` (markout_bid_10s) predicts a label ml_grid does not read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from grinder.data.tape import load_tape
from grinder.errors import ConfigError
from grinder.features.offline import compute_features
from grinder.features.online import OnlineFeatures
from grinder.features.spec import FeatureSet
from grinder.live.config import load_config
from grinder.live.features import LiveFeatures
from grinder.live.parity import lockstep_session
from grinder.live.trees import compile_trees
from grinder.ml import registry
from grinder.ml.model import load_model
from grinder.ml.train import train_job
from tests.conftest import REPO
from tests.live.test_live_cli import ENV, config, events, procs, serve, start, wait_for  # noqa: F401 - procs: fixture

SAMPLE = REPO / "data" / "sample" / "lake"
LABEL = "fwd_rv_10s"
FAST = {"num_boost_round": 40}  # a small model: the tests are about the path, not the forecast's skill
# The trading grid of the sessions: wide enough to rest a while; the shadow's ml_grid quotes other prices.
STATIC = "params = { levels = 2, interval = 5.0, half_spread = 10.0, order_qty = 0.002, max_position = 0.01 }\n"
ML = {"levels": 2, "interval": 2.0, "half_spread": 1.0, "order_qty": 0.002, "max_position": 0.01}  # ml_grid's
ML_PARAMS = ", ".join(f"{k} = {v}" for k, v in ML.items())  # ... as a TOML inline table's body
ML_MODES = {"base", "widen", "tighten", "pause"}
STEP_NS = 100_000_000


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """(mlruns, v1 model, v2 model): v1 and v2 of `vol` trained on the sample, `champion` on v1; `mark` v1 too."""
    d = tmp_path_factory.mktemp("models")
    lake = d / "lake"
    shutil.copytree(SAMPLE, lake)
    mlruns = d / "mlruns"
    v1 = train_job(LABEL, root=lake, mlruns=mlruns, name="vol", folds=2, xgb_params=FAST, seed=0)
    v2 = train_job(LABEL, root=lake, mlruns=mlruns, name="vol", folds=2, xgb_params=FAST | {"eta": 0.2}, seed=1)
    train_job("markout_bid_10s", root=lake, mlruns=mlruns, name="mark", folds=2, xgb_params=FAST)
    client = registry.open_registry(mlruns)
    registry.set_alias(client, "vol", registry.CHAMPION, v1.model_version)
    registry.set_alias(client, "mark", registry.CHAMPION, "1")
    assert (v1.model_version, v2.model_version) == ("1", "2") and v1.model_sha256 != v2.model_sha256
    return mlruns, load_model("models:/vol/1", mlruns), load_model("models:/vol/2", mlruns)


@pytest.fixture(scope="module")
def tape():
    return load_tape(SAMPLE, "binance-usdm", "BTCUSDT")


def model_table(mlruns: Path, mode: str, extra: str = "", uri: str = "models:/vol@champion") -> str:
    return f'[model]\nuri = "{uri}"\nmlruns = "{mlruns}"\nmode = "{mode}"\n{extra}'


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def run_dir(state: Path) -> Path | None:
    """The run folder the session's audit trail names (None before it is written)."""
    made = [e for e in events(state) if e["event"] == "run_folder"]
    return Path(made[-1]["path"]) if made else None


def decision_lines(state: Path, name: str) -> list[dict]:
    folder = run_dir(state)
    return lines(folder / name) if folder is not None else []


def order_log(port: int) -> list[dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/orders", timeout=30) as r:
        return json.loads(r.read())["entries"]


def metric(prom: str, name: str, *labels: str) -> float:
    """The value of the one sample of `name` in Prometheus text `prom` whose labels include every one of `labels`."""
    found = [line for line in prom.splitlines() if line.startswith(name + "{") and all(x in line for x in labels)]
    assert len(found) == 1, (name, labels, found)
    return float(found[0].rsplit(" ", 1)[1])


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, proc.stderr.read()


def test_the_config_fails_closed_and_names_the_field(tmp_path):
    head = 'symbol = "BTCUSDT"\nmode = "paper"\n'
    ml = f"params = {{ {ML_PARAMS} }}\n"
    model = '[model]\nuri = "models:/vol@champion"\n'
    cases = {
        # A strategy that reads signals, with no model to give them: refused at load.
        f'strategy = "ml_grid"\n{ml}': "strategy: ml_grid reads a model's fwd_rv_ forecast",
        f'strategy = "static_grid"\n{STATIC}{model}mode = "active"\n': "model.mode: active drives the configured",
        f'strategy = "static_grid"\n{STATIC}{model}mode = "shadow"\n': "model.strategy: shadow mode needs",
        f'strategy = "ml_grid"\n{ml}{model}mode = "shadow"\nstrategy = "ml_grid"\n': "strategy: in shadow mode",
        f'strategy = "static_grid"\n{STATIC}{model}mode = "shadow"\nstrategy = "static_grid"\n':
            "model.strategy: static_grid reads no signals",
        f'strategy = "static_grid"\n{STATIC}{model}mode = "shadow"\nstrategy = "ml_grid"\n[model.params]\nlevels = 2\n':
            "model.params: strategy ml_grid: interval",
        f'strategy = "ml_grid"\n{ml}[model]\nuri = "vol@champion"\nmode = "active"\n':
            "model.uri: model 'vol@champion'",
        f'strategy = "ml_grid"\n{ml}{model}mode = "live"\n': "model.mode: String should match",
    }  # fmt: skip
    for text, expected in cases.items():
        path = tmp_path / "live.toml"
        path.write_text(head + text)
        with pytest.raises(ConfigError) as e:
            load_config(path)
        assert str(e.value).startswith(f"{path}: {expected}"), (text, str(e.value))
    path.write_text(f'{head}strategy = "ml_grid"\n{ml}{model}mode = "active"\nwarmup_s = 0\n')
    assert load_config(path).model.warmup_s == 0  # and a complete one loads


def test_the_audit_trail_keeps_a_models_hashes_and_still_masks_signatures(tmp_path):
    from grinder.live.audit import AuditLog

    digest, sig = "3b" * 32, "a1" * 32
    audit = AuditLog(tmp_path / "audit.jsonl", secrets=("k3y-secret",))
    line = json.loads(audit.render(0, "model", sha256=digest, feature_set_version=digest, detail=f"signature {sig}",
                                   other=digest, model_sha256=f"{digest} k3y-secret"))  # fmt: skip
    audit.close()
    assert line["sha256"] == line["feature_set_version"] == digest  # a content hash, whole: as it is
    assert line["detail"] == "signature ***" and line["other"] == "***"  # a bare 64-hex token elsewhere: masked
    assert line["model_sha256"] == "*** ***"  # not one digest alone: the usual rules


def test_live_features_apply_both_streams_in_exchange_time_order_whatever_the_arrival():
    fs = FeatureSet()
    snap = {"lastUpdateId": 10, "T": 1000, "bids": [["100.0", "1.0"], ["99.9", "2.0"]], "asks": [["100.1", "1.5"]]}
    diffs = [{"e": "depthUpdate", "s": "X", "T": 1000 + 40 * k, "U": 10 + k, "u": 10 + k, "pu": 9 + k,
              "b": [["100.0", f"{1 + k % 3}.0"]], "a": [["100.1", "0"], ["100.2", f"{k + 1}.0"]] if k % 2 else
              [["100.1", "1.5"]]} for k in range(1, 30)]  # fmt: skip
    trades = [{"e": "trade", "s": "X", "T": 1000 + 55 * k, "m": k % 3 == 0, "q": f"0.{k}", "X": "MARKET"}
              for k in range(1, 20)]  # fmt: skip
    # Exchange-time order, as the offline pass applies them (book updates through the same l2 book).
    ordered = LiveFeatures(fs, "X", 0.1)
    timeline = sorted([(d["T"], 0, i) for i, d in enumerate(diffs)] + [(t["T"], 1, i) for i, t in enumerate(trades)])
    ordered.tap(0, snap)
    ref = OnlineFeatures(fs)
    ref_book = LiveFeatures(fs, "X", 0.1)  # only its book: the reference applies trades itself, in time order
    ref_book.tap(0, snap)
    ref_book.flush()
    ref.on_book(1000 * 1_000_000, ref_book.hdr, ref_book.wq, ref_book.ok, ref_book.oq, True)
    for ts, kind, i in timeline:
        if kind == 0:
            ref_book.tap(0, diffs[i])
            ref_book.flush()
            ref.on_book(ts * 1_000_000, ref_book.hdr, ref_book.wq, ref_book.ok, ref_book.oq, True)
        else:
            ref.on_trade(ts * 1_000_000, -1 if trades[i]["m"] else 1, float(trades[i]["q"]))
    want = ref.read(timeline[-1][0] * 1_000_000, np.empty(len(fs.names)))
    # The live tap, the depth stream running ahead of the trades (they come on another socket).
    for d in diffs:
        ordered.tap(0, d)
    for t in trades:
        ordered.tap(0, t)
    got = np.empty(len(fs.names))
    assert ordered.read(got) == timeline[-1][0] * 1_000_000 and ordered.received == 1 + len(diffs) + len(trades)
    assert np.array_equal(got, want, equal_nan=True)
    # Applied as they arrived instead, a trade older than the book update before it is not decayed: other sums.
    naive = OnlineFeatures(fs)
    naive_book = LiveFeatures(fs, "X", 0.1)
    naive_book.tap(0, snap)
    naive_book.flush()
    naive.on_book(1000 * 1_000_000, naive_book.hdr, naive_book.wq, naive_book.ok, naive_book.oq, True)
    for d in diffs:
        naive_book.tap(0, d)
        naive_book.flush()
        naive.on_book(d["T"] * 1_000_000, naive_book.hdr, naive_book.wq, naive_book.ok, naive_book.oq, True)
    for t in trades:
        naive.on_trade(t["T"] * 1_000_000, -1 if t["m"] else 1, float(t["q"]))
    assert not np.array_equal(naive.read(timeline[-1][0] * 1_000_000, np.empty(len(fs.names))), want, equal_nan=True)
    # A diff that does not continue the last one unsyncs the book: no book features until the next snapshot.
    ordered.tap(0, {"e": "depthUpdate", "s": "X", "T": 5000, "U": 99, "u": 99, "pu": 98, "b": [], "a": []})
    ordered.read(got)
    assert ordered.gaps == 1 and np.isnan(got[:3]).all()


def test_the_compiled_trees_give_xgboosts_outputs_bit_for_bit(store, tape):
    _, v1, _ = store
    trees, why = compile_trees(v1.booster, v1.objective, len(v1.feature_set.names))
    assert trees is not None and why == ""
    x = compute_features(tape, v1.feature_set).values.T  # every update point of the sample
    assert np.array_equal(np.array([trees.predict(r) for r in x]), v1.predict(x)[:, 0])
    # A model whose output is transformed (a probability) is left to xgboost, with the reason.
    assert compile_trees(v1.booster, "binary:logistic", len(v1.feature_set.names)) == (
        None, "objective binary:logistic transforms the margin")  # fmt: skip


def test_in_lock_step_the_live_features_and_forecasts_are_the_offline_ones(store, tape, tmp_path):
    mlruns, v1, _ = store
    model = {"uri": "models:/vol@champion", "mlruns": str(mlruns), "mode": "active", "warmup_s": 1.0}
    ticks = 150
    live = asyncio.run(lockstep_session(tape, "ml_grid", ML, STEP_NS, ticks, tmp_path, model=model))
    recs = live.model
    assert len(recs) == ticks and [r.ts_ns for r in recs] == live.decision_ts
    # Each decision read its features at the latest exchange time received by then (grinder.ml.signals).
    ts = np.asarray(tape.ts_exch)
    known = [int(ts[ts <= t].max()) for t in live.decision_ts]
    assert [r.features_ts_ns for r in recs] == known
    # The offline pass over the same tape from the emulator's first book (the adapter never saw the trades
    # before it: the emulator applies them unstreamed), sampled at those times.
    first = int((tape.kind == 2).nonzero()[0][0])
    rows = ("ts_exch", "ts_local", "kind", "side", "price", "price_ticks", "qty", "ref", "flags")
    cut = dataclasses.replace(tape, **{c: getattr(tape, c)[first:] for c in rows})
    offline = compute_features(cut, v1.feature_set, at=np.array(known)).values.T
    online = np.array([r.features for r in recs])
    assert (np.isnan(online) == np.isnan(offline)).all()
    assert np.nanmax(np.abs(online - offline)) <= 1e-9
    # The forecast: NaN (ml_grid pauses, quoting nothing) until a second of features, then the model's on the
    # offline features exactly.
    cold = np.array([r.features_ts_ns - live.start_ns < 1_000_000_000 for r in recs])
    out = np.array([r.outputs[0] for r in recs])
    assert 5 <= cold.sum() < ticks - 50 and np.isnan(out[cold]).all()
    assert all(r.mode == "pause" and r.targets == () for r in np.array(recs)[cold])
    assert np.array_equal(out[~cold], v1.predict(offline[~cold])[:, 0])
    assert len({r.mode for r in recs}) >= 2 and live.fills  # the model strategy quoted, and was filled


def test_a_decision_taken_ahead_is_not_adopted_once_a_market_event_moved_the_features(store, tmp_path):
    from grinder.live.adapter import LiveAdapter
    from grinder.live.audit import AuditLog
    from grinder.live.client import make_client
    from grinder.live.config import LiveConfig

    mlruns, _, _ = store
    cfg = LiveConfig(strategy="ml_grid", params=ML, symbol="BTCUSDT", mode="paper", state_dir=tmp_path / "state",
                     model={"uri": "models:/vol@champion", "mlruns": str(mlruns), "mode": "active",
                            "warmup_s": 0})  # fmt: skip
    ex = make_client(cfg)
    audit = AuditLog(tmp_path / "audit.jsonl")
    adapter = LiveAdapter(cfg, ex, audit, clock_ns=lambda: 1_723_161_256_000_000_000)
    try:
        adapter.tick, adapter.lot = 0.1, 0.001
        adapter.model.attach(ex, "BTCUSDT", 0.1)
        tap = adapter.model.features.tap
        tap(0, {"lastUpdateId": 5, "T": 1_723_161_256_000, "bids": [["60000.0", "1.0"]], "asks": [["60000.1", "2.0"]]})
        adapter.top = (600_000, 600_001, 1.0, 2.0)
        tick = 10**12

        def ahead_then_adopt(event: dict | None):
            adapter._decide_ahead(tick, 0)
            forecast, read = adapter._ahead[3][-1], adapter.model.reading()
            if event is not None:
                tap(0, event)
            adapter.tick_sched_ns = tick
            return forecast, read, adapter._adopt_ahead([])

        forecast, read, adopted = ahead_then_adopt(None)
        assert adopted is not None and adopted[0][-1] is forecast  # nothing new: the decision taken ahead holds
        assert adapter.model.reading() is read  # ... and the features were not read again
        trade = {"e": "trade", "s": "BTCUSDT", "T": 1_723_161_256_500, "m": False, "q": "3.5", "X": "MARKET"}
        forecast, read, adopted = ahead_then_adopt(trade)
        assert adopted is None  # a trade moved the features (the top of book did not change): decided afresh
        fresh = adapter._inputs(known=[])[1][-1]
        now = adapter.model.reading()
        assert now.ts_ns == trade["T"] * 1_000_000 > read.ts_ns and fresh is now.outputs
        names = adapter.model.names
        assert now.features[names.index("intensity_1s")] > 0 == read.features[names.index("intensity_1s")]
    finally:
        adapter.ids.close()
        adapter.budget.close()
        audit.close()
        asyncio.run(ex.close())


def test_the_shadow_strategy_is_compiled_before_its_first_decision(store, tmp_path):
    from grinder.core.strategy import get
    from grinder.live.audit import AuditLog
    from grinder.live.config import LiveConfig
    from grinder.live.model import ModelPath

    mlruns, _, _ = store
    cfg = LiveConfig(strategy="static_grid", params={}, symbol="BTCUSDT", mode="paper",
                     model={"uri": "models:/vol@champion", "mlruns": str(mlruns), "mode": "shadow",
                            "strategy": "ml_grid", "params": ML})  # fmt: skip
    audit = AuditLog(tmp_path / "audit.jsonl")
    try:
        path = ModelPath.open(cfg, get("static_grid"), audit, lambda: 0)
    finally:
        audit.close()
    # Its decision step compiled at start, not on the event loop at the first decision (seconds).
    assert path.shadow is not None and path.shadow._step is not None and path.predictor == "compiled"


def test_a_shadow_session_logs_the_models_decisions_and_sends_none_of_them(store, tmp_path, procs):  # noqa: F811
    mlruns, v1, _ = store
    port = serve(procs)
    shadow = f'strategy = "ml_grid"\nwarmup_s = 1\nparams = {{ {ML_PARAMS} }}\n'
    cfg, state = config(tmp_path, port, f"step_ms = 100\n{STATIC}{model_table(mlruns, 'shadow', shadow)}")
    live = start("live", "--config", str(cfg))
    procs.append(live)
    wait_for(lambda: sum(x["forecast"][0] is not None for x in decision_lines(state, "shadow.jsonl")) >= 30, 120)
    stop(live)
    folder = run_dir(state)
    log = lines(folder / "shadow.jsonl")
    trail = events(state)
    # The champion, pinned: its version, hash and feature set in the audit trail, run.json and the metrics.
    loaded = next(e for e in trail if e["event"] == "model")
    assert (loaded["name"], loaded["version"], loaded["alias"], loaded["mode"]) == ("vol", "1", "champion", "shadow")
    assert loaded["sha256"] == v1.model_sha256 and loaded["feature_set_version"] == v1.feature_set.version
    run = json.loads((folder / "run.json").read_text())
    assert run["model"]["version"] == "1" and run["model"]["sha256"] == v1.model_sha256
    done = run["model"]["at_stop"]
    # Every shadow decision written; its targets differed from the static grid's (other prices).
    assert done["shadow_decisions"] == len(log) >= 30 and 0 < done["targets_differ"] <= len(log)
    assert sum(x["differs"] for x in log) == done["targets_differ"]
    assert all(len(x["features"]) == len(v1.feature_set.names) and x["mode"] in ML_MODES for x in log)
    assert "targets" in log[0] and any(x["n_targets"] > 0 for x in log)
    warm = [x for x in log if x["forecast"][0] is not None]
    assert np.array_equal([x["forecast"][0] for x in warm], v1.predict(np.array([x["features"] for x in warm],
                                                                               dtype=float))[:, 0])  # fmt: skip
    prom = (folder / "metrics.prom").read_text()
    assert metric(prom, "grinder_model_info", 'version="1"', f'sha256="{v1.model_sha256}"', 'mode="shadow"') == 1
    assert metric(prom, "grinder_shadow_decisions_total") == len(log)
    assert metric(prom, "grinder_shadow_target_differences_total") == done["targets_differ"]
    # Nothing of the shadow left: every order the venue took is one the static grid's audit trail created.
    creates = [e for e in order_log(port) if e["method"] == "POST" and e["path"] == "/fapi/v1/order"]
    audited = {e["client_id"] for e in trail if e["event"] == "create"}
    assert creates and {e["client_id"] for e in creates} <= audited
    assert all(e["client_id"].startswith("g_static_grid:BTCUSDT:") for e in creates)
    assert any(e["event"] == "model_forecasts" for e in trail) and trail[-1]["event"] == "stop"


def test_an_active_session_trades_the_model_strategy_and_keeps_its_pinned_version(store, tmp_path, procs):  # noqa: F811
    mlruns, v1, v2 = store
    port = serve(procs)
    active = model_table(mlruns, "active", "warmup_s = 1")
    body = f'strategy = "ml_grid"\nstep_ms = 100\nparams = {{ {ML_PARAMS} }}\n{active}'
    cfg = tmp_path / "live.toml"
    state = tmp_path / "state"
    cfg.write_text(f'symbol = "BTCUSDT"\napi_url = "http://127.0.0.1:{port}"\nstate_dir = "{state}"\n{body}')
    live = start("live", "--config", str(cfg))
    procs.append(live)
    client = registry.open_registry(mlruns)
    try:
        wait_for(lambda: sum(e["event"] == "created" for e in events(state)) >= 2, 120)
        before = len(decision_lines(state, "model.jsonl"))
        registry.set_alias(client, "vol", registry.CHAMPION, "2")  # the alias moves mid-session
        wait_for(lambda: len(decision_lines(state, "model.jsonl")) >= before + 30, 120)
        stop(live)
    finally:
        registry.set_alias(client, "vol", registry.CHAMPION, "1")
    folder = run_dir(state)
    log = lines(folder / "model.jsonl")
    # The forecasts after the move are still v1's (v2's would differ on these features).
    after = [x for x in log[before:] if x["forecast"][0] is not None]
    x = np.array([r["features"] for r in after], dtype=float)
    assert len(after) >= 20 and np.array_equal([r["forecast"][0] for r in after], v1.predict(x)[:, 0])
    assert not np.array_equal(v2.predict(x)[:, 0], v1.predict(x)[:, 0])
    run = json.loads((folder / "run.json").read_text())
    pinned = (run["model"]["version"], run["model"]["at_stop"]["version"], run["model"]["alias"])
    assert pinned == ("1", "1", "champion")
    assert metric((folder / "metrics.prom").read_text(), "grinder_model_info", 'version="1"', 'mode="active"') == 1
    # The model strategy's orders are at the venue: every create the venue took is ml_grid's.
    trail = events(state)
    creates = [e for e in order_log(port) if e["method"] == "POST" and e["path"] == "/fapi/v1/order"]
    assert creates and all(e["client_id"].startswith("g_ml_grid:BTCUSDT:") for e in creates)
    assert {e["client_id"] for e in creates} <= {e["client_id"] for e in trail if e["event"] == "create"}
    # No forecast (ml_grid pauses) while the features held less than warmup_s since the first synced book.
    synced = run["model"]["at_stop"]["synced_ns"]
    assert all((x["forecast"][0] is None) == (x["features_ts_ns"] - synced < 1_000_000_000) for x in log)
    assert all(x["mode"] == "pause" and x["n_targets"] == 0 for x in log if x["forecast"][0] is None)
    # Its forecast and mode in the audit trail: each change of mode at once, the forecasts per interval.
    changes = [x["mode"] for i, x in enumerate(log) if i == 0 or x["mode"] != log[i - 1]["mode"]]
    assert [e["mode"] for e in trail if e["event"] == "model_mode"] == changes
    assert sum(e["decisions"] for e in trail if e["event"] == "model_forecasts") == len(log)


def test_a_paper_session_with_the_model_active_fills_locally_and_sends_nothing(store, tmp_path, procs):  # noqa: F811
    mlruns, _, _ = store
    port = serve(procs)
    params = "levels = 3, interval = 0.5, half_spread = 0.1, order_qty = 0.002, max_position = 0.01"
    body = (f'mode = "paper"\nstep_ms = 100\nstrategy = "ml_grid"\nparams = {{ {params} }}\n'
            f'{model_table(mlruns, "active", "warmup_s = 0")}')  # fmt: skip
    cfg = tmp_path / "live.toml"
    state = tmp_path / "state"
    cfg.write_text(f'symbol = "BTCUSDT"\napi_url = "http://127.0.0.1:{port}"\nstate_dir = "{state}"\n{body}')
    env = {k: v for k, v in ENV.items() if not k.startswith("GRINDER_API_")}  # paper: no credentials
    paper = subprocess.Popen([sys.executable, "-m", "grinder", "live", "--config", str(cfg)], env=env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    procs.append(paper)
    wait_for(lambda: sum(e["event"] == "fill" for e in events(state)) >= 2, 120)
    stop(paper)
    trail = events(state)
    fills = [e for e in trail if e["event"] == "fill"]
    assert all(e["client_id"].startswith("g_ml_grid:BTCUSDT:") for e in fills)
    assert len(decision_lines(state, "model.jsonl")) > 0
    assert not [e for e in order_log(port) if e["method"] == "POST"]  # the venue saw no order


@pytest.mark.parametrize("case", ["no-such-alias", "garbled", "tampered", "label-not-read"])
def test_a_model_that_cannot_be_had_refuses_the_start_with_exit_2_and_one_line(case, store, tmp_path):
    mlruns, v1, _ = store
    uri = "models:/mark@champion" if case == "label-not-read" else "models:/vol@nosuch" if case == "no-such-alias" \
        else "models:/vol@champion"  # fmt: skip
    expected = {"no-such-alias": "models:/vol@nosuch: no alias 'nosuch' of registered model 'vol'",
                "garbled": "models:/vol@champion: cannot read its xgboost model",
                "tampered": "models:/vol/1: the stored booster hashes to",
                "label-not-read": "models:/mark/1 predicts markout_bid_10s"}[case]  # fmt: skip
    with socket_nobody_answers() as api_url:  # the refusal comes before the venue is asked
        cfg = tmp_path / "live.toml"
        state = tmp_path / "state"
        cfg.write_text(f'symbol = "BTCUSDT"\napi_url = "{api_url}"\nstate_dir = "{state}"\nstrategy = "ml_grid"\n'
                       f'params = {{ {ML_PARAMS} }}\n{model_table(mlruns, "active", uri=uri)}')  # fmt: skip
        booster = _booster_file(mlruns, "vol", "1") if case in ("garbled", "tampered") else None
        kept = booster.read_bytes() if booster is not None else b""
        try:
            if case == "garbled":  # half the file overwritten: no longer a model xgboost reads
                booster.write_bytes(kept[: len(kept) // 2] + bytes(b ^ 0x5A for b in kept[len(kept) // 2 :]))
            elif case == "tampered":  # a valid model, but not the one registered (its hash tag)
                changed = v1.booster.copy()
                changed.set_attr(tampered="1")
                changed.save_model(str(booster))
            r = subprocess.run([sys.executable, "-m", "grinder", "live", "--config", str(cfg)], capture_output=True,
                               text=True, env=ENV, cwd=REPO, timeout=180)  # fmt: skip
        finally:
            if booster is not None:
                booster.write_bytes(kept)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ") and expected in r.stderr, r.stderr
    # Nothing of a session was written: no client ids reserved, no budget, no run folder.
    assert not (state / "client_ids.json").exists() and not (state / "budget.jsonl").exists()
    assert not (state / "runs").exists()


class socket_nobody_answers:
    """A loopback URL whose port is bound but never accepts (a venue that would not answer)."""

    def __enter__(self) -> str:
        import socket

        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{self.s.getsockname()[1]}"

    def __exit__(self, *exc) -> None:
        self.s.close()


def _booster_file(mlruns: Path, name: str, version: str) -> Path:
    """The booster file of a registered version's logged model in the store (the file load_model reads)."""
    import yaml

    client = registry.open_registry(mlruns)
    mv = client.get_model_version(name, version)
    model_id = getattr(mv, "model_id", None) or str(mv.source).rsplit("/", 1)[-1]  # as load_model finds it
    folder = Path(client.get_logged_model(model_id).artifact_location.removeprefix("file://"))
    return folder / yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["xgboost"]["data"]
