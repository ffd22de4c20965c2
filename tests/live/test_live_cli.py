"""`grinder live` as a process against `grinder venue serve`: kill -9 with orders resting, restart, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.venue.test_server import SYMBOL, client

SAMPLE = REPO / "data" / "sample" / "lake"
ENV = {**os.environ, "GRINDER_VENUE_API_KEY": "test-key", "GRINDER_VENUE_SECRET": "test-secret",
       "GRINDER_API_KEY": "test-key", "GRINDER_API_SECRET": "test-secret"}  # fmt: skip


def start(*args, env: dict | None = None) -> subprocess.Popen:
    """`python -m grinder *args` with the test credentials (and `env`) in its environment."""
    return subprocess.Popen([sys.executable, "-m", "grinder", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**ENV, **(env or {})}, cwd=REPO)  # fmt: skip


def events(state: Path) -> list[dict]:
    path = state / "audit.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def wait_for(pred, timeout: float = 60.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError("timed out")


def open_orders(port: int) -> list[str]:
    async def go():
        ex = client(port)
        try:
            return sorted(o["clientOrderId"] for o in await ex.fetch_open_orders(SYMBOL))
        finally:
            await ex.close()

    return asyncio.run(go())


KILL_RESTART_TOML = """step_ms = 200
reconcile_s = 60
[params]
levels = 2
interval = 5.0
half_spread = 10.0
order_qty = 0.002
max_position = 0.01
"""
PAPER_TOML = """mode = "paper"
step_ms = 100
params = { levels = 3, interval = 0.5, half_spread = 0.1, order_qty = 0.002, max_position = 0.01 }
"""


@pytest.fixture
def procs():
    """Processes a test starts (the venue first); whatever is still running at the end is killed."""
    running: list[subprocess.Popen] = []
    yield running
    for p in running:
        if p.poll() is None:
            p.kill()
            p.wait()


def serve(procs: list, *options: str) -> int:
    """`grinder venue serve` on the sample at 5x (and `options`, e.g. --loop); returns its port."""
    venue = start("venue", "serve", "--root", str(SAMPLE), "--speed", "5", *options)
    procs.append(venue)
    line = venue.stdout.readline()
    m = re.search(r"127\.0\.0\.1:(\d+)", line)
    assert m, line + venue.stderr.read()
    return int(m.group(1))


def config(tmp_path: Path, port: int, rest: str) -> tuple[Path, Path]:
    """A static_grid config for BTCUSDT on the venue at `port`, then `rest` (TOML); (its path, its state folder)."""
    state = tmp_path / "state"
    path = tmp_path / "live.toml"
    path.write_text(f'strategy = "static_grid"\nsymbol = "BTCUSDT"\napi_url = "http://127.0.0.1:{port}"\n'
                    f'state_dir = "{state}"\n{rest}')  # fmt: skip
    return path, state


def test_kill_9_then_restart_reconciles_orphans_and_keeps_the_budget(tmp_path, procs):
    port = serve(procs)
    cfg, state = config(tmp_path, port, KILL_RESTART_TOML)
    first = start("live", "--config", str(cfg))
    procs.append(first)
    wait_for(lambda: sum(e["event"] == "created" for e in events(state)) >= 4)
    first.send_signal(signal.SIGKILL)  # orders left resting, no goodbye
    assert first.wait(10) == -9
    resting = [c for c in open_orders(port) if c.startswith("g_static_grid:BTCUSDT:")]
    assert resting
    spent = json.loads((state / "budget.jsonl").read_text().splitlines()[-1])["actions"]
    n_before = len(events(state))

    second = start("live", "--config", str(cfg))
    procs.append(second)
    wait_for(lambda: any(e["event"] == "created" for e in events(state)[n_before:]))
    after = events(state)[n_before:]
    orphans = {e["client_id"] for e in after if e["event"] == "mismatch" and e["kind"] == "orphan"}
    assert orphans and orphans <= set(resting)  # the killed process's orders were found (some may have filled)
    handled = {e["client_id"] for e in after if e["event"] in ("cancelled", "cancel_not_open")}
    assert orphans <= handled  # ... and cancelled (or filled meanwhile: the replay goes on)
    assert not set(open_orders(port)) & set(resting)  # none of them is left
    assert json.loads((state / "budget.jsonl").read_text().splitlines()[-1])["actions"] > spent + len(
        resting
    )  # continued
    new_ids = [e["client_id"] for e in after if e["event"] == "create"]
    assert not set(new_ids) & {e.get("client_id") for e in events(state)[:n_before]}  # ids never reused

    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0, second.stderr.read()
    assert not [c for c in open_orders(port) if c.startswith("g_static_grid:")]  # cancelled first
    assert events(state)[-1]["event"] == "stop"


def test_a_bad_config_is_one_line_and_exit_2(tmp_path):
    cfg = tmp_path / "live.toml"
    cfg.write_text('strategy = "static_grid"\nsymbol = "BTCUSDT"\nparams = {}\nstep_ms = 0\n')
    r = subprocess.run([sys.executable, "-m", "grinder", "live", "--config", str(cfg)], capture_output=True,
                       text=True, env=ENV, cwd=REPO, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "step_ms" in r.stderr and "Traceback" not in r.stderr


def test_a_compressed_config_is_one_line_and_exit_2(tmp_path):
    import gzip

    cfg = tmp_path / "live.toml"
    cfg.write_bytes(gzip.compress(b'strategy = "static_grid"\nsymbol = "BTCUSDT"\nparams = {}\n'))
    r = subprocess.run([sys.executable, "-m", "grinder", "live", "--config", str(cfg)], capture_output=True,
                       text=True, env=ENV, cwd=REPO, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"error: {cfg}: not a TOML text file (not UTF-8: compressed or binary?)"


def test_paper_mode_as_a_process_needs_no_key_fills_and_reports_position_and_pnl_on_sigterm(tmp_path, procs):
    port = serve(procs)
    cfg, state = config(tmp_path, port, PAPER_TOML)
    env = {k: v for k, v in ENV.items() if not k.startswith("GRINDER_API_")}  # paper: no credentials
    paper = subprocess.Popen([sys.executable, "-m", "grinder", "live", "--config", str(cfg)], env=env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    procs.append(paper)
    wait_for(lambda: len([e for e in events(state) if e["event"] == "fill"]) >= 2)
    paper.send_signal(signal.SIGTERM)
    assert paper.wait(30) == 0, paper.stderr.read()
    out = paper.stdout.read()
    stop = events(state)[-1]
    assert stop["event"] == "stop" and stop["pnl"] is not None
    assert f"position {stop['position']:g}, PnL {stop['pnl']:+.4f} USDT" in out
    assert open_orders(port) == []  # the venue never saw an order


@pytest.mark.parametrize(
    "api_url, env, expected",
    [
        ("http://localhost@evil.com", {}, "no user name or password"),  # garbage: config validation
        ("https://fapi.binance.com", {}, "needs ALLOW_MAINNET_TRADE=1"),  # the guard, before any request
        ("DEAD", {}, "did not answer"),  # a venue that is down
        ("DEAD", {"GRINDER_API_KEY": ""}, "set GRINDER_API_KEY"),  # no credentials
    ],
    ids=["garbage-url", "mainnet-host", "venue-down", "no-credentials"],
)
def test_operator_errors_are_one_line_exit_2_and_no_traceback(api_url, env, expected, tmp_path):
    import socket

    if api_url == "DEAD":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            api_url = f"http://127.0.0.1:{s.getsockname()[1]}"
    cfg = tmp_path / "live.toml"
    cfg.write_text(f'strategy = "static_grid"\nsymbol = "BTCUSDT"\napi_url = "{api_url}"\n'
                   f'state_dir = "{tmp_path / "s"}"\n{KILL_RESTART_TOML}')  # fmt: skip
    run_env = {k: v for k, v in ENV.items() if k != "ALLOW_MAINNET_TRADE"} | env
    r = subprocess.run([sys.executable, "-m", "grinder", "live", "--config", str(cfg)], capture_output=True,
                       text=True, env=run_env, cwd=REPO, timeout=120)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert expected in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("setting", ["taken", "off-loopback"])
def test_a_metrics_port_in_use_or_off_loopback_is_one_line_exit_2_before_the_venue_is_asked(setting, tmp_path):
    import socket

    with socket.socket() as dead, socket.socket() as taken:
        dead.bind(("127.0.0.1", 0))  # a venue that would not answer: the metrics error must come first
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        line = f"metrics_port = {busy}" if setting == "taken" else 'metrics_port = 9108\nmetrics_addr = "0.0.0.0"'
        cfg = tmp_path / "live.toml"
        api_url = f"http://127.0.0.1:{dead.getsockname()[1]}"
        cfg.write_text(f'strategy = "static_grid"\nsymbol = "BTCUSDT"\napi_url = "{api_url}"\n'
                       f'state_dir = "{tmp_path / "s"}"\n{line}\n{KILL_RESTART_TOML}')  # fmt: skip
        r = subprocess.run([sys.executable, "-m", "grinder", "live", "--config", str(cfg)], capture_output=True,
                           text=True, env=ENV, cwd=REPO, timeout=120)  # fmt: skip
    expected = {
        "taken": f"error: metrics_port {busy}: cannot listen on 127.0.0.1:{busy}: Address already in use",
        "off-loopback": f"error: {cfg}: metrics_addr: '0.0.0.0' is not a loopback address",
    }[setting]
    assert r.returncode == 2 and r.stderr.startswith(expected), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
