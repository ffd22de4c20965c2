"""The adapter's Prometheus metrics: read at scrape time, served on loopback, closed with the adapter, hostile paths."""

from __future__ import annotations

import asyncio
import math
import socket
import stat
import time
from collections import deque

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from grinder.errors import ConfigError
from grinder.live.adapter import LiveAdapter
from grinder.live.audit import AuditLog
from grinder.live.client import make_client
from grinder.live.config import LiveConfig, load_config
from grinder.live.metrics import LATENCY_BUCKETS_S, QUIET_NEEDED_S, LatencyFold, MetricsServer
from grinder.venue.server import VenueServer
from tests.live.test_adapter import PARAMS, _until, config, emulator_session, offline
from tests.venue.test_server import CREDS, tape  # noqa: F401 - tape is a fixture

# Every family the adapter exports, each labelled by strategy and symbol (issue 22's list).
ADAPTER_FAMILIES = {
    "grinder_adapter_info", "grinder_decisions", "grinder_decision_latency_seconds", "grinder_orders_created",
    "grinder_orders_cancelled", "grinder_orders_rejected", "grinder_fills", "grinder_open_orders",
    "grinder_position_base", "grinder_equity_settle", "grinder_realized_pnl_settle", "grinder_fees_settle",
    "grinder_budget_actions_remaining", "grinder_budget_actions_limit", "grinder_budget_notional_remaining_quote",
    "grinder_budget_notional_limit_quote", "grinder_breaker_state", "grinder_book_age_seconds", "grinder_book_stale",
    "grinder_reconciliations", "grinder_reconcile_mismatches", "grinder_position_drift_base",
    "grinder_wallet_drift_settle", "grinder_lot_size_base", "grinder_gate_blocks", "grinder_quant_rule_ratio",
    "grinder_quant_rule_ratio_max", "grinder_quant_rule_orders", "grinder_quant_rule_orders_max",
    "grinder_rollout_mode", "grinder_kill_switch_engaged", "grinder_is_leader", "grinder_fencing_token",
    "grinder_taker_orders_sent", "grinder_taker_orders",
}  # fmt: skip


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, its labels less strategy and symbol): value} of an exposition."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = {k: v for k, v in s.labels.items() if k not in ("strategy", "symbol")}
            out[(s.name, frozenset(labels.items()))] = s.value
    return out


def value(got: dict, name: str, **labels) -> float:
    return got[(name, frozenset(labels.items()))]


async def scrape(port: int, timeout: float = 10.0) -> str:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return await r.text()


async def metrics_session(tape, tmp_path, during, **cfg_kw):  # noqa: F811
    """An adapter with a metrics port (0: any) against a fresh emulator; `during(adapter, srv, run)` once it serves.

    Returns (adapter, what `during` returned); the adapter is stopped (unless `during` did) and everything closed.
    """

    async def serving(adapter, srv, task):
        await _until(lambda: adapter.metrics_server is not None or task.done(), 30, "the metrics server")
        return await during(adapter, srv, task)

    return await emulator_session(tape, tmp_path, serving, metrics_port=0, **cfg_kw)


def test_an_emulator_session_exports_every_metric_labelled_by_strategy_and_symbol(tape, tmp_path):  # noqa: F811
    gate: list[float] = []  # the quiet stretch left when the server let each scrape read the adapter

    async def during(adapter, srv, task):
        server = adapter.metrics_server
        seen = server.quiet_left_s
        server.quiet_left_s = lambda: gate.append(seen()) or gate[-1]
        await _until(lambda: adapter.decisions > 20 and len(adapter.latencies) > 3 and adapter.audit.events.get("fill"))
        for _ in range(10):  # scrapes at random moments of the step
            await scrape(adapter.metrics_server.port)
            await asyncio.sleep(0.037)
        await asyncio.sleep(1.5)  # a reconciliation (reconcile_s = 1) after the fills
        return adapter.metrics_server.port, await scrape(adapter.metrics_server.port)

    adapter, (port, text) = asyncio.run(metrics_session(tape, tmp_path, during))
    # Each scrape read the adapter in a quiet stretch with time left, never in a decision's run-up.
    read = [x for x in gate if x >= QUIET_NEEDED_S]
    assert len(read) == 11 and all(x < 0.1 for x in read), str(gate)
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert ADAPTER_FAMILIES <= set(fams)
    for name in ADAPTER_FAMILIES:
        assert fams[name].samples, name
        for s in fams[name].samples:
            assert s.labels["strategy"] == "static_grid" and s.labels["symbol"] == "BTCUSDT", s
    got = samples(text)
    info = next(s for s in fams["grinder_adapter_info"].samples)
    assert (
        info.labels["mode"] == "live" and info.labels["settle"] == "USDT" and info.labels["epoch"] == adapter.ids.epoch
    )
    assert value(got, "grinder_decisions_total") > 20
    n = value(got, "grinder_decision_latency_seconds_count", stage="request")
    assert n >= 3 and value(got, "grinder_decision_latency_seconds_bucket", stage="request", le="+Inf") == n
    assert 0 < value(got, "grinder_decision_latency_seconds_sum", stage="request") < n * 0.1
    assert value(got, "grinder_orders_created_total") >= 4 and value(got, "grinder_fills_total") >= 1
    assert value(got, "grinder_reconciliations_total") >= 2
    assert value(got, "grinder_is_leader") == 1 and value(got, "grinder_fencing_token") == 0
    assert value(got, "grinder_kill_switch_engaged") == 0
    assert value(got, "grinder_breaker_state", state="closed") == 1
    assert value(got, "grinder_breaker_state", state="open") == 0
    assert value(got, "grinder_rollout_mode", mode="execute_cancel_all") == 1
    assert value(got, "grinder_rollout_mode", mode="detect_only") == 0
    assert value(got, "grinder_book_stale") == 0 and 0 <= value(got, "grinder_book_age_seconds") < 5
    assert value(got, "grinder_budget_actions_limit") == 10_000
    assert value(got, "grinder_budget_actions_remaining") <= 10_000 - value(got, "grinder_orders_created_total")
    assert value(got, "grinder_quant_rule_orders_max", window="1m") == 1200
    assert math.isnan(value(got, "grinder_quant_rule_ratio", rule="ufr"))  # too few orders for the ratio to apply
    assert value(got, "grinder_lot_size_base") == 0.001
    assert value(got, "grinder_gate_blocks_total", reason="daily_loss") == 0

    # At stop: the run's last figures in the state folder (0600), the listener closed.
    prom = tmp_path / "state" / "metrics.prom"
    assert stat.S_IMODE(prom.stat().st_mode) == 0o600
    last = samples(prom.read_text())
    assert value(last, "grinder_decisions_total") == adapter.decisions
    assert value(last, "grinder_fills_total") == adapter.audit.events["fill"]
    assert adapter.metrics_server is None
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    started = [e for e in adapter.audit.events if e == "metrics_serving"]
    assert started == ["metrics_serving"]


def test_a_tiny_budget_shows_as_none_left_and_creates_refused_for_it(tape, tmp_path):  # noqa: F811
    async def during(adapter, srv, task):
        await _until(lambda: hasattr(adapter, "port") and (adapter.port.refused_total or adapter.port._refused))
        return await scrape(adapter.metrics_server.port)

    _, text = asyncio.run(metrics_session(tape, tmp_path, during, max_actions_per_day=4))
    got = samples(text)
    assert value(got, "grinder_budget_actions_remaining") == 0 and value(got, "grinder_budget_actions_limit") == 4
    assert value(got, "grinder_orders_rejected_total", reason="budget_actions") >= 1  # counted before its audit line
    assert value(got, "grinder_orders_rejected_total", reason="breaker_open") == 0


def test_a_metrics_port_in_use_stops_the_start_before_the_venue_is_asked(tape, tmp_path):  # noqa: F811
    async def main():
        srv = VenueServer(tape, CREDS, speed=20.0)
        srv.preroll()
        port = await srv.start()
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = taken.getsockname()[1]
            cfg = config(tmp_path, port, metrics_port=busy)
            ex = make_client(cfg, CREDS.api_key, CREDS.secret)
            audit = AuditLog(tmp_path / "audit.jsonl")
            try:
                with pytest.raises(ConfigError) as e:
                    await LiveAdapter(cfg, ex, audit).run()
                # The state folder was released as it was: a start on the same folder takes it.
                again = LiveAdapter(cfg.model_copy(update={"metrics_port": None}), ex, audit)
                again.ids.close()
                again.budget.close()
            finally:
                await ex.close()
                audit.close()
                await srv.stop()
        return str(e.value), busy, srv.faults.requests, audit.events

    msg, busy, requests, events = asyncio.run(main())
    assert msg == f"metrics_port {busy}: cannot listen on 127.0.0.1:{busy}: Address already in use"
    assert requests == [] and "start" not in events  # nothing asked of the venue, no session begun
    assert not (tmp_path / "state" / "adapter.pid").exists() and not (tmp_path / "state" / "metrics.prom").exists()


def test_a_scrape_during_the_stop_is_answered_or_refused_never_broken(tape, tmp_path):  # noqa: F811
    async def during(adapter, srv, task):
        await _until(lambda: adapter.audit.events.get("created", 0) >= 4)
        port = adapter.metrics_server.port
        srv.faults.slow_s = 0.2  # the stop's cancels take a while: scrapes land inside it
        answered, refused = [], 0
        adapter.stop()
        while adapter.metrics_server is not None or not answered:
            try:
                answered.append(await scrape(port))
            except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError):  # closed: no half a body
                refused += 1
                break
        return answered, refused, port

    adapter, (answered, refused, port) = asyncio.run(metrics_session(tape, tmp_path, during))
    assert len(answered) >= 2  # served all through the stop's cancels ...
    for text in answered:
        assert value(samples(text), "grinder_is_leader") == 1  # ... each a whole exposition
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # and closed once run() returned


def test_a_kill_keeps_metrics_up_until_a_scrape_has_seen_it(tape, tmp_path):  # noqa: F811
    async def during(adapter, srv, task):
        await _until(lambda: adapter.decisions > 5)
        port = adapter.metrics_server.port
        adapter.request_kill("test")
        await _until(lambda: adapter.audit.events.get("stop"))
        await asyncio.sleep(0.5)
        lingering = not task.done()  # stopped, and waiting for one more scrape
        text = await scrape(port)
        await asyncio.wait_for(task, 5)
        return lingering, text

    adapter, (lingering, text) = asyncio.run(metrics_session(tape, tmp_path, during))
    assert lingering and value(samples(text), "grinder_kill_switch_engaged") == 1
    assert adapter.metrics_server is None and "kill" in adapter.audit.events


def test_a_kill_nobody_scrapes_lingers_at_most_metrics_kill_linger_s(tape, tmp_path):  # noqa: F811
    async def during(adapter, srv, task):
        await _until(lambda: adapter.decisions > 5)
        adapter.request_kill("test")
        await _until(lambda: adapter.audit.events.get("stop"))
        t0 = time.monotonic()
        await asyncio.wait_for(task, 10)
        return time.monotonic() - t0

    _, waited = asyncio.run(metrics_session(tape, tmp_path, during, metrics_kill_linger_s=0.5))
    assert 0.3 < waited < 3


def test_a_scrape_waits_for_a_quiet_stretch_with_time_left_at_most_a_second():
    async def main():
        reg = CollectorRegistry(auto_describe=False)
        g = GaugeMetricFamily("grinder_x", "x")
        g.add_metric([], 1)
        reg.register(type("C", (), {"collect": lambda self: [g]})())
        quiet, left = asyncio.Event(), [math.inf]
        server = MetricsServer(reg, "127.0.0.1", 0, quiet, lambda: left[0])
        port = await server.start()
        try:
            pending = asyncio.create_task(scrape(port))
            await asyncio.sleep(0.3)
            held = [not pending.done() and server.scrapes == 0]  # the decision loop is in its run-up
            left[0] = 0.002
            quiet.set()  # asleep, but 2 ms before the run-up: too little for a scrape
            await asyncio.sleep(0.3)
            held.append(not pending.done() and server.scrapes == 0)
            left[0] = 0.05  # a stretch with 50 ms left
            text = await asyncio.wait_for(pending, 5)
            quiet.clear()
            t0 = time.monotonic()
            await scrape(port)  # never quiet: read anyway after QUIET_WAIT_S
            return held, text, time.monotonic() - t0
        finally:
            await server.close()

    held, text, waited = asyncio.run(main())
    assert held == [True, True] and "grinder_x 1.0" in text and 0.9 < waited < 3


def test_the_latency_fold_takes_each_entry_once_also_past_the_deques_length():
    lat = deque(maxlen=4)
    fold = LatencyFold()
    assert fold.fold(lat) == 0
    lat.extend([(0, 20_000, 300_000, 0), (0, 40_000, 2_000_000, 0)])  # 20 us / 0.3 ms and 40 us / 2 ms
    assert fold.fold(lat) == 2 and fold.fold(lat) == 0
    for _ in range(6):  # more than the deque holds: the oldest are gone, the ones it holds are folded once
        lat.append((0, 1_000, 150_000_000, 0))
    assert fold.fold(lat) == 4
    buckets = dict(fold.buckets("request"))
    assert buckets["+Inf"] == 6 and buckets[repr(LATENCY_BUCKETS_S[-1])] == 2  # 4 beyond the last bound (0.1 s)
    assert buckets["0.0005"] == 1 and buckets["0.0025"] == 2
    assert dict(fold.buckets("decided"))["1e-05"] == 4 and fold.sums["request"] == pytest.approx(0.0023 + 0.6)


def test_blocked_and_refused_counts_are_read_whether_written_out_or_not(tmp_path):
    from grinder.live.metrics import AdapterCollector

    with offline(config(tmp_path, 1), tmp_path) as adapter:
        adapter._gate_news({"rate_limit": 3}, 1_000, 0.0, 0.0)
        adapter.flush_blocked(1_000, force=True)  # written out: now in blocked_total
        adapter._gate_news({"rate_limit": 2, "max_position": 1}, 2_000, 0.0, 0.0)  # not yet
        got = {
            (s.name, s.labels.get("reason")): s.value for f in AdapterCollector(adapter).collect() for s in f.samples
        }
    assert (
        got[("grinder_gate_blocks_total", "rate_limit")] == 5
        and got[("grinder_gate_blocks_total", "max_position")] == 1
    )
    assert got[("grinder_book_age_seconds", None)] == math.inf and got[("grinder_book_stale", None)] == 1


@pytest.mark.parametrize(
    "line, expected",
    [
        ('metrics_addr = "0.0.0.0"', "metrics_addr: '0.0.0.0' is not a loopback address (127.0.0.0/8 or ::1)"),
        ('metrics_addr = "192.168.1.5"', "metrics_addr: '192.168.1.5' is not a loopback address"),
        ('metrics_addr = "::ffff:127.0.0.1"', "metrics_addr: '::ffff:127.0.0.1' is not a loopback address"),
        ('metrics_addr = "localhost"', "metrics_addr: 'localhost' is not a loopback address"),
        ("metrics_port = 65536", "metrics_port: Input should be less than or equal to 65535"),
        ("metrics_port = -1", "metrics_port: Input should be greater than or equal to 0"),
        ("metrics_port = true", "metrics_port: Input should be a valid integer"),
        ('metrics_port = "9108"', "metrics_port: Input should be a valid integer"),
    ],
)
def test_a_bad_metrics_setting_is_one_line_naming_the_field(line, expected, tmp_path):
    path = tmp_path / "live.toml"
    path.write_text(f'strategy = "static_grid"\nsymbol = "BTCUSDT"\nparams = {{}}\n{line}\n')
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: {expected}") and "\n" not in str(e.value)


def test_metrics_are_off_unless_a_port_is_set_and_loopback_forms_are_taken():
    cfg = LiveConfig(strategy="static_grid", params=PARAMS, symbol="BTCUSDT")
    assert cfg.metrics_port is None and cfg.metrics_addr == "127.0.0.1"
    for addr in ("127.0.0.1", "127.1.2.3", "::1"):
        assert LiveConfig(strategy="static_grid", params=PARAMS, symbol="BTCUSDT", metrics_port=9108,
                          metrics_addr=addr).metrics_addr == addr  # fmt: skip
