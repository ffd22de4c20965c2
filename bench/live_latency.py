"""Decision latency inside the live adapter: from a book update to the order request, p50 / p99 over a replay.

The venue emulator (`grinder venue serve`) replays a lake selection in its own process, so its
matching and sending do not share the adapter's event loop. The adapter runs here, in live mode
(real ccxt.pro over loopback, HMAC-signed REST) and then in paper mode, with static_grid
re-quoting every `--step-ms`. For every decision that sends something it records, in ns from the
moment the decision's inputs were ready (the later of the depth update behind its book arriving
and the decision clock waking the adapter):

- wait: until the decision started (event-loop scheduling: other messages being handled);
- decide: until its intents were decided (strategy kernel, diff, gates; for a decision taken ahead
  of its tick and adopted at it, column "ahead", checking that its inputs still hold);
- request: until its first order request was handed to the connection (budget, audit trail,
  ccxt building and signing the request, or sending the one it signed ahead, column "presigned";
  paper: until the local venue was called);
- clock late: apart, how long after its scheduled time the decision clock woke the adapter (asyncio
  sleeps to the millisecond); it shifts when a decision happens, not how fast it reacts.

`request` is the figure the target is about: p99 under 1 ms, the network excluded (what happens
after the request is handed to aiohttp is the network's). The emulator stands for Binance, which
does not share the adapter's CPUs: by default it runs on a CPU of its own at idle priority
(`--venue shared` lets the two compete). Writes bench/out/live_latency.json. Run:
`.venv/bin/python bench/live_latency.py [--seconds 60] [--speed 2] [--root data/sample/lake]`.

The modes `live+model` and `paper+model` put a registered model in the decision path (`[model]`,
active, live.model): ml_grid on the same grid, held in its BASE mode so it quotes as static_grid
does, its signals the model's forecast from the live features. Its decisions read the features and
predict (in the hot window ahead of the tick, again at the tick only if a market event came since).
For those modes the bench also prints what the model adds per decision: the features' read (flush
+ read) and the compiled trees' prediction as the session timed them, and, on the features the
session logged, xgboost's own one-row predict and the ml_grid decision (`Decider.decide` with the
forecast) timed here. `--model models:/NAME@ALIAS --mlruns DIR` names the model; without it one is
trained on `--root` into a temporary store (`grinder.ml.train.train_job`, fwd_rv_10s). Compare:
`.venv/bin/python bench/live_latency.py --modes live live+model`. With `--hot-ms 0` nothing is
decided ahead: every decision, the model's read and prediction included, runs at its tick.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from grinder.live.adapter import LiveAdapter, run_for  # noqa: E402
from grinder.live.config import LiveConfig  # noqa: E402

KEY, SECRET = "bench-key", "bench-secret"
PHASES = ("wait", "decide", "request", "clock late")
NOT_DONE = ("_error", "_failed", "_rejected", "_refused", "_not_done")  # audit events of requests that did not go


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_venue(args, port: int) -> subprocess.Popen:
    env = {**os.environ, "GRINDER_VENUE_API_KEY": KEY, "GRINDER_VENUE_SECRET": SECRET}
    cmd = [sys.executable, "-m", "grinder", "venue", "serve", "--root", str(args.root), "--symbol", args.symbol,
           "--speed", str(args.speed), "--port", str(port)]  # fmt: skip
    if args.venue == "apart":
        # The venue stands in for Binance, which does not run on the adapter's CPUs: it gets the
        # last CPU (the adapter the others) at idle priority (SCHED_IDLE), inherited by its threads.
        # Left to the scheduler, its wake-ups land on the adapter's CPU and take a 4 ms tick of it.
        if shutil.which("chrt") is None or shutil.which("taskset") is None:
            raise SystemExit("--venue apart needs chrt and taskset (util-linux); or pass --venue shared")
        cmd = ["chrt", "--idle", "0", "taskset", "-c", str(args.venue_cpu), *cmd]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"venue emulator exited: {proc.stdout.read()}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/fapi/v1/time", timeout=1).read()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("venue emulator did not answer within 60 s")


# ml_grid held in BASE (no forecast reaches 1e6 bps/sqrt(s), none is at or below 0): it quotes static_grid's grid.
BASE_ONLY = {"tighten_vol": 0.0, "widen_vol": 1e6, "pause_vol": 1e6, "confirm": 1}


async def session(args, mode: str, port: int, state: Path) -> tuple[LiveAdapter, float]:
    params = {"levels": args.levels, "interval": 0.5, "half_spread": 0.1, "order_qty": 0.002, "max_position": 0.05}
    venue_mode, _, with_model = mode.partition("+")
    extra: dict = {}
    if with_model:
        extra = {"model": {"uri": args.model, "mlruns": str(args.mlruns), "mode": "active", "warmup_s": 0}}
        params |= BASE_ONLY
    cfg = LiveConfig(strategy="ml_grid" if with_model else "static_grid", params=params, symbol=args.symbol,
                     mode=venue_mode, step_ms=args.step_ms, api_url=f"http://127.0.0.1:{port}", state_dir=state,
                     reconcile_s=10.0, hot_ms=args.hot_ms, **extra)  # fmt: skip
    keys = (KEY, SECRET) if venue_mode == "live" else ()
    t0 = time.monotonic()
    adapter = await run_for(cfg, args.seconds, *keys, **({"model_log": []} if with_model else {}))
    return adapter, time.monotonic() - t0


def percentiles(ns) -> dict:
    """p50 / p99 / max of nanosecond timings, in microseconds."""
    a = np.asarray(ns, dtype=np.float64) / 1e3 if len(ns) else np.zeros(1)
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)), "max_us": float(a.max())}


def timed(f, n: int) -> list[int]:
    """ns of each of n calls of f(i)."""
    out = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        f(i)
        out.append(time.perf_counter_ns() - t0)
    return out


def model_costs(adapter: LiveAdapter) -> dict:
    """What the model adds to a decision: the session's features reads and predictions, and, on the features it
    logged, xgboost's one-row predict and the ml_grid decision with the forecast, timed here."""
    from grinder.core.decision import Decider

    m = adapter.model
    rows = [r.features for r in adapter.model_log if not np.isnan(r.outputs).all()]
    n = len(rows)
    if not n:
        return {}
    xgb = timed(lambda i: m.loaded.predict(rows[i][None, :]), n)
    d = Decider(adapter.strategy, adapter.strategy.validate(adapter.cfg.params))
    signals = [np.array([m.loaded.predict(r[None, :])[0, 0]]) for r in rows]
    bb, ba = adapter.top[0], adapter.top[1]

    def decide(i: int) -> None:
        d.decide(0, bb, ba, 1.0, 1.0, adapter.tick, adapter.lot, 0.0, 0.0, 1.0, [], signals[i])

    timed(decide, min(n, 200))  # compiled, then warm
    return {"predictor": m.predictor, "read": percentiles(m.read_ns), "predict": percentiles(m.predict_ns),
            "xgboost_predict": percentiles(xgb), "decide": percentiles(timed(decide, n)), "rows": n,
            "reads": len(m.read_ns), "predictions": len(m.predict_ns), "decisions": adapter.decisions}  # fmt: skip


def summary(adapter: LiveAdapter, wall_s: float, state: Path) -> dict:
    lat = np.array(adapter.latencies, dtype=np.float64).reshape(-1, len(PHASES)) / 1e3  # us
    events = collections.Counter(json.loads(line)["event"] for line in (state / "audit.jsonl").open())
    errors = {k: v for k, v in sorted(events.items()) if k.endswith(NOT_DONE)}
    out = {"decisions": adapter.decisions, "ahead": adapter.decided_ahead, "sending": len(lat),
           "presigned": adapter.ex.presigned_sent, "seconds": round(wall_s, 1), "errors": errors}  # fmt: skip
    for i, name in enumerate(PHASES):
        col = lat[:, i] if len(lat) else np.zeros(1)
        out[name] = {"p50_us": float(np.percentile(col, 50)), "p99_us": float(np.percentile(col, 99)),
                     "max_us": float(col.max())}  # fmt: skip
    if adapter.model is not None:
        out["model"] = model_costs(adapter)
    return out


@contextlib.contextmanager
def a_model(args):
    """args.model / args.mlruns: as given, or a model trained on args.root into a temporary store for the run."""
    if args.model:
        yield
        return
    from grinder.ml import registry
    from grinder.ml.train import train_job

    with tempfile.TemporaryDirectory() as d:
        lake = Path(d) / "lake"
        shutil.copytree(args.root, lake)  # the trainer's reads never touch the lake given
        args.mlruns = Path(d) / "mlruns"
        trained = train_job("fwd_rv_10s", root=lake, symbol=args.symbol, mlruns=args.mlruns, name="bench-vol")
        registry.set_alias(registry.open_registry(args.mlruns), "bench-vol", registry.CHAMPION, trained.model_version)
        args.model = "models:/bench-vol@champion"
        yield


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=REPO / "data" / "sample" / "lake", help="lake to replay")
    ap.add_argument("--symbol", default="BTCUSDT")
    ap.add_argument("--speed", type=float, default=2.0, help="replay speed, x real time (the sample lasts 345 s)")
    ap.add_argument("--seconds", type=float, default=60.0, help="wall time per mode")
    ap.add_argument("--step-ms", type=int, default=100)
    ap.add_argument("--hot-ms", type=float, default=5.0, help="the adapter's hot window (0: nothing decided ahead)")
    ap.add_argument("--levels", type=int, default=5, help="grid levels a side")
    ap.add_argument("--modes", nargs="+", default=["live", "paper"],
                    choices=["live", "paper", "live+model", "paper+model"])  # fmt: skip
    ap.add_argument("--model", help="with a +model mode: models:/NAME@ALIAS (default: one trained on --root)")
    ap.add_argument("--mlruns", type=Path, default=REPO / "mlruns", help="the MLflow store --model is in")
    ap.add_argument("--venue", default="apart", choices=["apart", "shared"],
                    help="apart: the emulator on a CPU of its own at idle priority; shared: as they come")  # fmt: skip
    args = ap.parse_args()
    if args.venue == "apart":
        cpus = os.sched_getaffinity(0)
        if len(cpus) < 2:
            raise SystemExit("--venue apart needs two CPUs; pass --venue shared")
        args.venue_cpu = max(cpus)  # the emulator's; the adapter (this process) keeps the others
        os.sched_setaffinity(0, cpus - {args.venue_cpu})  # before any thread starts: they all inherit it
    results = {}
    with a_model(args) if any("+model" in m for m in args.modes) else contextlib.nullcontext():
        for mode in args.modes:
            port = free_port()
            venue = start_venue(args, port)
            try:
                with tempfile.TemporaryDirectory() as d:
                    adapter, wall = asyncio.run(session(args, mode, port, Path(d)))
                    results[mode] = summary(adapter, wall, Path(d))
            finally:
                venue.terminate()
                venue.wait(30)
    print(f"decision latency, static_grid {args.levels} levels a side, decision every {args.step_ms} ms, "
          f"hot window {args.hot_ms:g} ms, replay of {args.root} at {args.speed:g}x, venue emulator {args.venue} "
          f"({platform.node()}, {os.cpu_count()} CPUs)")  # fmt: skip
    print(
        f"{'mode':11} {'decisions':>9} {'ahead':>6} {'sending':>8} {'presigned':>9}  "
        + "  ".join(f"{p + ' p50/p99/max us':>28}" for p in PHASES)
    )
    for mode, r in results.items():
        cells = "  ".join(f"{r[p]['p50_us']:>9.0f} {r[p]['p99_us']:>9.0f} {r[p]['max_us']:>8.0f}" for p in PHASES)
        print(f"{mode:11} {r['decisions']:>9} {r['ahead']:>6} {r['sending']:>8} {r['presigned']:>9}  {cells}")
        if r["errors"]:
            print(f"            audit trail: {r['errors']}")
    for mode, r in results.items():
        m = r.get("model")
        if m:
            cells = ", ".join(f"{k.replace('_', ' ')} {m[k]['p50_us']:.1f} / {m[k]['p99_us']:.1f}"
                              for k in ("read", "predict", "xgboost_predict", "decide"))  # fmt: skip
            print(f"{mode}: per decision, p50 / p99 us: {cells} ({m['predictor']} trees predict; "
                  f"{m['reads']} reads and {m['predictions']} predictions in {m['decisions']} decisions)")  # fmt: skip
    worst = max(r["request"]["p99_us"] for r in results.values())
    print(f"target: request p99 < 1000 us -> {'met' if worst < 1000 else 'NOT met'} (worst p99 {worst:.0f} us)")
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "live_latency.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                       "results": results}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
