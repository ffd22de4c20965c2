"""The live adapter against the emulator over loopback through ccxt.pro: it quotes, gets fills, stops clean."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time

import pytest

from grinder.book.l2 import EMPTY
from grinder.data.instruments import resolve_instrument
from grinder.errors import ConfigError, VenueError
from grinder.live.adapter import LiveAdapter
from grinder.live.audit import AuditLog
from grinder.live.client import credentials, make_client
from grinder.live.config import LiveConfig
from grinder.live.paper import PaperBinance
from grinder.venue.exchange import Exchange
from grinder.venue.server import VenueServer
from grinder.venue.wire import Wire
from tests.venue.test_server import CREDS, SYMBOL, client, tape  # noqa: F401 - tape is a fixture

PARAMS = {"levels": 3, "interval": 0.5, "half_spread": 0.1, "order_qty": 0.002, "max_position": 0.01}


def config(tmp_path, port: int, **kw) -> LiveConfig:
    return LiveConfig(strategy="static_grid", params=PARAMS, symbol="BTCUSDT", api_url=f"http://127.0.0.1:{port}",
                      state_dir=tmp_path / "state", step_ms=100, reconcile_s=1.0, **kw)  # fmt: skip


class Seen(set):
    """Every client id seen resting on the venue while the adapter ran; `timeline` has each look: (clock ns, ids)."""

    def __init__(self):
        super().__init__()
        self.timeline: list[tuple[int, frozenset[str]]] = []


async def session(tape, tmp_path, seconds: float, before=None, during=None, mode: str = "live", **cfg_kw):  # noqa: F811
    srv = VenueServer(tape, CREDS, speed=20.0)
    srv.preroll()
    port = await srv.start()
    replay = asyncio.create_task(srv.run_replay())
    other = client(port)
    await other.load_markets()
    if before is not None:
        await before(srv, other)
    cfg = config(tmp_path, port, mode=mode, **cfg_kw)
    ex = make_client(cfg, CREDS.api_key, CREDS.secret) if mode != "paper" else make_client(cfg)
    venue = srv.x if mode != "paper" else None  # paper: the adapter's own local venue, known after start
    audit = AuditLog(tmp_path / "audit.jsonl", secrets=(CREDS.api_key, CREDS.secret))
    adapter = LiveAdapter(cfg, ex, audit)
    task = asyncio.create_task(adapter.run())
    mid_run = Seen()
    for k in range(int(seconds / 0.25)):
        if during is not None and k == int(seconds / 0.5):
            during(srv)
        await asyncio.sleep(0.25)
        venue = venue or getattr(ex, "x", None)
        seen = frozenset(o.client_id for o in venue.open_orders()) if venue is not None else frozenset()
        mid_run |= seen
        mid_run.timeline.append((time.time_ns(), seen))
    adapter.stop()
    await asyncio.wait_for(task, 30)
    left = sorted(o.client_id for o in srv.x.open_orders())
    if mode == "paper":
        left += sorted(o.client_id for o in ex.x.open_orders())
    replay.cancel()
    await ex.close()
    await other.close()
    audit.close()
    await srv.stop()
    events = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    return adapter, srv, mid_run, left, events


def test_the_adapter_quotes_gets_fills_and_cancels_its_orders_on_stop(tape, tmp_path):  # noqa: F811
    async def foreign(srv, other):
        bb, _ = srv.x.best()
        await other.create_order(SYMBOL, "limit", "buy", 0.002, (bb - 20_000) * 0.1,
                                 {"postOnly": True, "clientOrderId": "web_keep_me"})  # fmt: skip

    adapter, srv, mid_run, left, events = asyncio.run(session(tape, tmp_path, 6.0, foreign))
    ours = [c for c in mid_run if c.startswith("g_static_grid:BTCUSDT:")]
    assert len(ours) >= 4 and adapter.decisions > 10  # quotes resting while it ran ...
    assert adapter.decided_ahead > 0  # decisions taken ahead of their tick were adopted at it
    assert adapter.ex.presigned_sent > 0  # ... and their first requests left as signed ahead
    created = {e["client_id"] for e in events if e["event"] == "created"}
    sides = {e["side"] for e in events if e["event"] == "create" and e["client_id"] in created}
    assert sides == {"buy", "sell"}  # ... on both sides of the book
    kinds = [e["event"] for e in events]
    assert "created" in kinds and kinds[-1] == "stop"
    assert left == ["web_keep_me"]  # its own orders cancelled on stop, the foreign one untouched
    fills = [e for e in events if e["event"] == "fill"]
    assert fills and adapter.position == pytest.approx(srv.x.position()[0], abs=1e-9)
    text = (tmp_path / "audit.jsonl").read_text()
    assert CREDS.secret not in text and CREDS.api_key not in text


def test_a_decisions_orders_go_out_together_not_one_round_trip_each(tape, tmp_path):  # noqa: F811
    async def slow(srv, other):
        srv.faults.slow_s = 0.25  # every REST answer takes a quarter second

    adapter, srv, _, left, events = asyncio.run(session(tape, tmp_path, 5.0, slow))
    creates = [e["ts_ns"] for e in events if e["event"] == "create"]
    created = [e["ts_ns"] for e in events if e["event"] == "created"]
    assert len(creates) >= 4 and created
    # The first grid: every create sent before the first answer (one at a time, only one would be:
    # each answer takes 0.25 s). No bound on how close together: a loaded machine spreads them.
    first_grid = [t for t in creates if t < created[0]]
    assert len(first_grid) >= 4
    assert not [c for c in left if c.startswith(("g_", "grinder_"))]


def test_secrets_come_from_the_environment_or_files_and_mainnet_is_gated(tmp_path, monkeypatch):
    for k in ("GRINDER_API_KEY", "GRINDER_API_SECRET", "GRINDER_API_KEY_FILE", "GRINDER_API_SECRET_FILE",
              "ALLOW_MAINNET_TRADE"):  # fmt: skip
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ConfigError, match="set GRINDER_API_KEY or GRINDER_API_KEY_FILE"):
        credentials()
    (tmp_path / "secret").write_text("s3cret\n")
    monkeypatch.setenv("GRINDER_API_KEY", "k")
    monkeypatch.setenv("GRINDER_API_SECRET_FILE", str(tmp_path / "secret"))
    assert credentials() == ("k", "s3cret")
    mainnet = LiveConfig(strategy="static_grid", params=PARAMS, symbol="BTCUSDT")
    with pytest.raises(ConfigError, match="ALLOW_MAINNET_TRADE=1"):
        make_client(mainnet, "k", "s")
    monkeypatch.setenv("ALLOW_MAINNET_TRADE", "1")
    with pytest.raises(ConfigError, match="not in mainnet_allowlist"):
        make_client(mainnet, "k", "s")


def pairs(events, first: str, then: str):
    """(first, the next `then` after it) event pairs."""
    out = []
    for i, e in enumerate(events):
        if e["event"] == first:
            nxt = next((f for f in events[i + 1 :] if f["event"] == then), None)
            out.append((e, nxt))
    return out


def test_a_sequence_gap_stops_decisions_until_the_book_is_resynced(tape, tmp_path):  # noqa: F811
    def gap(srv):
        srv.faults.seq_gap = True

    adapter, srv, _, left, events = asyncio.run(session(tape, tmp_path, 6.0, during=gap))
    stale = pairs(events, "book_stale", "book_fresh")
    assert stale and stale[0][0]["reason"] == "sequence gap"
    gap_ev, fresh = stale[0]
    assert fresh is not None and fresh["decisions"] == gap_ev["decisions"]  # no decision on the stale book
    assert adapter.decisions > fresh["decisions"]  # and trading resumed after the resync
    assert sum(p == "/fapi/v1/depth" for _, p in srv.faults.requests) >= 2  # a new snapshot
    assert not [c for c in left if c.startswith(("g_", "grinder_"))]


def test_quotes_are_cancelled_while_the_book_is_stale(tape, tmp_path):  # noqa: F811
    def slow_gap(srv):
        srv.faults.seq_gap = True
        # Only the new snapshot is slow: the book stays stale over many ticks while orders still go through.
        srv.faults.depth_slow_s = 1.2

    # 9 s: the gap comes at 4.5 s, leaving room for a slow resync on a busy machine.
    adapter, srv, seen, left, events = asyncio.run(session(tape, tmp_path, 9.0, during=slow_gap))
    gap_ev, fresh = pairs(events, "book_stale", "book_fresh")[0]
    assert fresh is not None and fresh["ts_ns"] - gap_ev["ts_ns"] > 1.0e9
    during = [e for e in events if gap_ev["ts_ns"] <= e["ts_ns"] <= fresh["ts_ns"]]
    # Nothing rests on a book the adapter cannot see (decision 021): no new quote goes out, and what was
    # open (a create in flight included) is cancelled at the next tick. Once those cancels are answered,
    # every look at the venue until the book is fresh again finds none of ours.
    assert not [e for e in during if e["event"] == "create"]
    settled = max(
        [e["ts_ns"] for e in during if e["event"] in ("cancelled", "cancel_not_open")], default=gap_ev["ts_ns"]
    )
    looks = [ids for t, ids in seen.timeline if settled < t < fresh["ts_ns"]]
    assert looks and not [c for ids in looks for c in ids if c.startswith(("g_", "grinder_"))]
    assert not [c for c in left if c.startswith(("g_", "grinder_"))]


def test_a_dropped_websocket_reconnects_resyncs_and_trading_goes_on(tape, tmp_path):  # noqa: F811
    def drop(srv):
        srv.faults.drop_ws = True

    adapter, srv, _, left, events = asyncio.run(session(tape, tmp_path, 8.0, during=drop))
    stale = pairs(events, "book_stale", "book_fresh")
    assert stale and stale[0][1] is not None and stale[0][1]["decisions"] == stale[0][0]["decisions"]
    assert adapter.decisions > stale[0][1]["decisions"]
    # The user stream came back too: fills after the drop are counted (the position matches the venue's).
    fills_after = [e for e in events if e["event"] == "fill" and e["ts_ns"] > stale[0][0]["ts_ns"]]
    assert fills_after and adapter.position == pytest.approx(srv.x.position()[0], abs=1e-9)
    assert not [c for c in left if c.startswith(("g_", "grinder_"))]


def test_paper_mode_takes_market_data_from_the_venue_and_fills_locally(tape, tmp_path):  # noqa: F811
    adapter, srv, mid_run, left, events = asyncio.run(session(tape, tmp_path, 6.0, mode="paper"))
    paper = adapter.ex
    assert len([c for c in mid_run if c.startswith("g_static_grid:BTCUSDT:")]) >= 4
    assert paper.rows_applied > 100 and paper.gaps == 0  # the local book followed the venue's diffs and trades
    fills = [e for e in events if e["event"] == "fill"]
    assert fills and adapter.position == pytest.approx(paper.x.position()[0], abs=1e-9)
    stop = events[-1]
    assert stop["event"] == "stop" and stop["pnl"] == adapter.pnl and stop["position"] == adapter.position
    # PnL is the paper account's: realized less fees (fixed once the orders are gone) plus the open position marked
    # at the stop, within a 1% move of the last price.
    bb, ba = paper.x.best()
    mid = (bb + ba) * 0.05
    assert abs(adapter.pnl - (paper.x.wallet() - 10_000)) <= abs(adapter.position) * mid * 0.01 + 1e-9
    assert left == [] and srv.x.orders == {}  # nothing rests anywhere; the venue never saw an order ...
    public = ("/fapi/v1/exchangeInfo", "/fapi/v1/depth", "/public/ws/0", "/public/ws/1")
    private = [p for _, p in srv.faults.requests if p not in public]
    assert private == []  # ... nor any signed request


def test_the_local_paper_book_matches_the_venue_book(tape, tmp_path):  # noqa: F811
    """Applying the venue's diffs and snapshots as they arrive gives the venue's own book, level for level."""

    async def run():
        srv = VenueServer(tape, CREDS, speed=20.0)
        srv.preroll()
        port = await srv.start()
        cfg = config(tmp_path, port, mode="paper")
        ex = make_client(cfg)
        await ex.load_markets()
        await ex.watch_order_book(SYMBOL)  # subscribed and synced before the replay moves
        replay = asyncio.create_task(srv.run_replay(until_row=srv.row + 4000))
        await replay  # the tap applies every message ccxt receives, watched or not
        await asyncio.sleep(1.0)  # the last updates still on their way
        same = ex.x.depth(50) == srv.x.depth(50)
        await ex.close()
        await srv.stop()
        return same, ex.rows_applied

    same, rows = asyncio.run(run())
    assert same and rows > 100


def test_paper_holds_diffs_that_arrive_before_the_snapshot_and_replays_them(tmp_path):
    p = PaperBinance({}, "BTCUSDT")  # its local venue set up as load_markets() would
    p.x = Exchange(resolve_instrument("binance-usdm", "BTCUSDT"))
    p.wire = Wire(p.x.instrument)

    def diff(first, last, prev, bid):
        return {"e": "depthUpdate", "s": "BTCUSDT", "T": 1, "U": first, "u": last, "pu": prev, "b": [[bid, "1.000"]],
                "a": []}  # fmt: skip

    p._on_market(0, diff(95, 100, 94, "100.0"))  # before the snapshot: held
    p._on_market(0, diff(101, 105, 100, "100.1"))
    assert p.book_u is None and len(p.held) == 2
    p._on_market(0, {"lastUpdateId": 100, "E": 1, "T": 1, "bids": [["99.0", "2.000"]], "asks": [["101.0", "1.000"]]})
    assert p.book_u == 105 and p.gaps == 0 and p.x.best() == (1001, 1010)  # the held diffs bridged and applied
    p._on_market(0, diff(107, 110, 106, "100.2"))  # pu 106 does not continue u 105: a gap
    assert p.gaps == 1 and p.book_u is None and p.x.best()[0] == EMPTY  # cleared: no fills until resynced
    p._on_market(0, {"e": "trade", "s": "BTCUSDT", "T": 2, "t": 1, "p": "100.0", "q": "1.000", "X": "MARKET",
                     "m": True})  # fmt: skip
    assert p.rows_applied == 5  # snapshot (3 rows) + 2 diffs; the trade on an unsynced book was not applied


@contextlib.contextmanager
def offline(cfg: LiveConfig, tmp_path):
    """An adapter with no client (never run): its id reservation, budget and audit trail closed after."""
    audit = AuditLog(tmp_path / "audit.jsonl", max_delay_s=None)
    adapter = LiveAdapter(cfg, ex=None, audit=audit)
    try:
        yield adapter
    finally:
        adapter.ids.close()
        adapter.budget.close()
        audit.close()


def test_housekeeping_waits_for_a_clear_stretch_but_never_more_than_a_second(tmp_path):
    import time

    from grinder.live.adapter import HOUSEKEEPING_CLEAR_NS, HOUSEKEEPING_MAX_DEFER_NS

    with offline(config(tmp_path, 1), tmp_path) as adapter:
        now = time.perf_counter_ns()
        assert adapter.housekeeping(now + 2 * HOUSEKEEPING_CLEAR_NS)  # the next decision is far: runs
        assert adapter.ids.reserve_ahead() is False  # it reserved client ids ahead ...
        assert adapter.housekeeping_runs == 1
        assert not adapter.housekeeping(time.perf_counter_ns() + HOUSEKEEPING_CLEAR_NS // 2)  # near: put off
        adapter.housekept_ns -= HOUSEKEEPING_MAX_DEFER_NS  # ... but not for longer than a second
        assert adapter.housekeeping(time.perf_counter_ns())
        assert adapter.housekeeping_runs == 2


def test_a_long_step_is_slept_in_pieces_with_housekeeping_between_them(tmp_path):
    cfg = LiveConfig(strategy="static_grid", params=PARAMS, symbol="BTCUSDT", state_dir=tmp_path / "state",
                     step_ms=2500, hot_ms=0.0)  # fmt: skip
    calls: list[float] = []

    async def run(adapter):
        task = asyncio.create_task(adapter._decide())
        await asyncio.sleep(2.2)  # before the first tick (2.5 s); no book, so it would not decide anyway
        adapter.stop()
        task.cancel()

    with offline(cfg, tmp_path) as adapter:
        adapter.housekeeping = lambda busy_from_ns: calls.append(busy_from_ns) or True
        asyncio.run(run(adapter))
    assert len(calls) == 2 and adapter.decisions == 0  # after 1 s and 2 s: journal lines never wait a whole step


def test_the_tick_adopts_the_decision_taken_ahead_only_while_its_inputs_hold(tmp_path):
    from grinder.core.decision import Decider
    from grinder.core.diff import ST_NEW
    from grinder.live.adapter import Known

    tick, wall = 5_000_000, 1_764_028_800_000_000_000

    def ahead_then_tick(adapter, change=None, at=tick):
        adapter.top, adapter.position = (10_000, 10_001, 1.0, 1.0), 0.0
        adapter.orders = {"a": Known("a", 1, 9_990, 0.002), "b": Known("b", -1, 10_011, 0.002, status=ST_NEW)}
        adapter._decide_ahead(tick, wall)
        if change is not None:
            change()
        adapter.tick_sched_ns = at
        fresh = Decider(adapter.strategy, adapter.strategy.validate(PARAMS)).decide(*adapter._inputs(wall)[1])
        return adapter._adopt_ahead(list(adapter.orders.values())), fresh

    with offline(config(tmp_path, 1), tmp_path) as adapter:
        adapter.tick, adapter.lot = 0.1, 0.001
        taken, fresh = ahead_then_tick(adapter)
        assert taken is not None and taken[0][0] == wall and taken[1] == fresh  # the tick's time, the same intents
        assert fresh.cancel and fresh.place and adapter.decided_ahead == 1
        for change in (
            lambda: setattr(adapter, "top", (10_002, 10_003, 1.0, 1.0)),  # the book moved
            lambda: setattr(adapter, "top", (10_000, 10_001, 1.0, 2.0)),  # ... or only its quantity
            lambda: setattr(adapter, "position", 0.002),  # a fill
            lambda: setattr(adapter.orders["a"], "filled", 0.001),
            lambda: setattr(adapter.orders["a"], "status", ST_NEW),  # an order acknowledged
            lambda: adapter.orders.update(a=Known("a", 1, 9_990, 0.002)),  # the same order, another object
            lambda: adapter.orders.pop("b"),
        ):
            assert ahead_then_tick(adapter, change)[0] is None
        assert ahead_then_tick(adapter, at=tick + 100_000_000)[0] is None  # taken for another tick
        assert ahead_then_tick(adapter, at=0)[0] is None  # a tick was missed
        assert adapter.decided_ahead == 1


def test_together_runs_the_first_inline_and_stops_the_rest_when_it_is_refused():
    import gc
    import warnings

    from grinder.live.adapter import _together

    async def main():
        log: list[str] = []

        async def job(name: str, result=True, wait=0.0, fail=False):
            log.append(f"{name} starts")
            if wait:
                await asyncio.sleep(wait)
            if fail:
                raise RuntimeError(name)
            log.append(f"{name} ends")
            return result

        await _together([job("a", wait=0.05), job("b", wait=0.05), job("c")])
        # b and c start while a waits (not after it): together, not one after the other.
        assert log == ["a starts", "b starts", "c starts", "c ends", "a ends", "b ends"]
        log.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await _together([job("a", result=False), job("b")])  # refused without waiting
            await asyncio.sleep(0.01)
            gc.collect()
        assert log == ["a starts", "a ends"]  # b never started ...
        assert not [w for w in caught if "never awaited" in str(w.message)]  # ... and was closed, not left
        log.clear()
        await _together([job("a"), job("b")])  # the first never waits: the others still run
        assert log == ["a starts", "a ends", "b starts", "b ends"]
        log.clear()
        with pytest.raises(RuntimeError, match="b"):
            await _together([job("a", wait=0.01), job("b", fail=True), job("c", wait=0.2)])
        await asyncio.sleep(0.3)
        assert "c ends" not in log  # still running when b failed: cancelled
        await _together([])

    asyncio.run(main())


def test_the_request_signed_ahead_is_the_first_one_the_adopted_decision_sends(tmp_path):
    from grinder.core.diff import ST_NEW
    from grinder.live.adapter import Known

    class Recorder:
        """Stands in for the client and the port: records what is presigned and what is sent."""

        def __init__(self):
            self.calls: list = []

        def presign_post_only(self, *a):
            self.calls.append(("presign create", *a))

        def presign_cancel(self, *a):
            self.calls.append(("presign cancel", *a))

        def drop_presigned(self):
            self.calls.append(("drop",))

        def prewarm(self, *a):
            self.calls.append(("prewarm",))

        def arm_probe(self):
            pass

        first_request_ns = 0

        def refusal(self, now_ns, notional):  # the port's check before a create takes its id: all clear
            return None

        async def create(self, cid, side, price, qty):
            self.calls.append(("create", "BTC/USDT:USDT", side, qty, price, str(cid)))

        async def cancel(self, order_id=None, client_id=None):
            self.calls.append(("cancel", "BTC/USDT:USDT", client_id))

    tick, wall = 5_000_000, 1_764_028_800_000_000_000
    with offline(config(tmp_path, 1), tmp_path) as adapter:
        rec = Recorder()
        adapter.ex, adapter.port, adapter.symbol, adapter.tick, adapter.lot = rec, rec, "BTC/USDT:USDT", 0.1, 0.001
        for orders, first in (
            ({}, "create"),  # nothing resting: the decision places, its first create is presigned
            ({"b": Known("b", -1, 10_011, 0.002, status=ST_NEW)}, "cancel"),  # off the grid: cancelled first
        ):
            rec.calls.clear()
            adapter.top, adapter.position, adapter.orders = (10_000, 10_001, 1.0, 1.0), 0.0, dict(orders)
            adapter.book_ts = time.monotonic()  # a fresh book: decide_once sends no create on a stale one
            adapter._decide_ahead(tick, wall)
            adapter._prepare_request()
            adapter.tick_sched_ns, adapter.tick_ns, adapter.tick_late_ns = tick, tick, 0
            asyncio.run(adapter.decide_once())
            presigned = [c for c in rec.calls if c[0].startswith("presign")]
            assert len(presigned) == 1 and ("prewarm",) in rec.calls  # the port's checks warmed, one request signed
            presigned = presigned[0]
            sent = [c for c in rec.calls if c[0] in ("create", "cancel")]
            assert presigned[0] == f"presign {first}" and sent[0] == (first, *presigned[1:])
            assert rec.calls[-1] == ("drop",) and adapter.decided_ahead > 0


async def _until(pred, timeout_s: float = 30.0, what: str = "") -> None:
    """Wait (polling the event loop) until pred() is true; AssertionError naming `what` after timeout_s."""
    t0 = asyncio.get_running_loop().time()
    while not pred():
        if asyncio.get_running_loop().time() - t0 > timeout_s:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def emulator_session(tape, tmp_path, during, speed: float = 20.0, **cfg_kw):  # noqa: F811
    """An adapter (config(**cfg_kw)) against a fresh emulator replaying at `speed`; `during(adapter, srv, task)`
    while it runs. Returns (adapter, what `during` returned); the adapter is stopped (unless `during` did) and
    everything is closed, also when `during` fails."""
    srv = VenueServer(tape, CREDS, speed=speed)
    srv.preroll()
    port = await srv.start()
    replay = asyncio.create_task(srv.run_replay())
    cfg = config(tmp_path, port, **cfg_kw)
    ex = make_client(cfg, CREDS.api_key, CREDS.secret)
    audit = AuditLog(tmp_path / "audit.jsonl", secrets=(CREDS.api_key, CREDS.secret))
    adapter = LiveAdapter(cfg, ex, audit)
    task = asyncio.create_task(adapter.run())
    try:
        got = await during(adapter, srv, task)
        adapter.stop()
        await asyncio.wait_for(task, 60)
    finally:
        if not task.done():
            adapter.stop()
            await asyncio.wait_for(task, 60)
        replay.cancel()
        await ex.close()
        audit.close()
        await srv.stop()
    return adapter, got


# After a 5xx storm clears and the cool-down has passed on the breaker's clock, the first create the
# strategy wants is the trial and orders flow again: within this many decisions (reconciliation every
# 1 s clears the creates the storm left unknown, then one decision sends).
RECOVERY_DECISIONS = 20


def test_a_5xx_storm_that_clears_lets_orders_flow_again_and_refused_creates_take_no_id(tape, tmp_path):  # noqa: F811
    skew = [0]  # ns added to the adapter's clock: the breaker's cool-down passes without waiting for it

    async def main():
        srv = VenueServer(tape, CREDS, speed=20.0)
        srv.preroll()
        port = await srv.start()
        replay = asyncio.create_task(srv.run_replay())
        cfg = config(tmp_path, port)
        ex = make_client(cfg, CREDS.api_key, CREDS.secret)
        audit = AuditLog(tmp_path / "audit.jsonl", secrets=(CREDS.api_key, CREDS.secret))
        adapter = LiveAdapter(cfg, ex, audit, clock_ns=lambda: time.time_ns() + skew[0])
        task = asyncio.create_task(adapter.run())
        try:
            await _until(lambda: len(srv.x.open_orders()) >= 2, what="the first quotes")
            srv.faults.http_status, srv.faults.http_count = 503, 10**9  # every private request fails
            await _until(lambda: adapter.port.breaker.state == "open", what="the breaker to open")
            await asyncio.sleep(1.0)  # ten decisions refused while it is open
            srv.faults.http_count = 0  # the venue is back
            await asyncio.sleep(1.0)  # ten more ticks warmed up (each asks the breaker) before the cool-down ends
            skew[0] += 31 * 10**9  # the cool-down (30 s) is over
            at = adapter.decisions
            created_before = len(srv.x.open_orders())
            await _until(lambda: adapter.port.breaker.state == "closed", what="the breaker to close")
            closed_at = adapter.decisions
            await _until(lambda: len(srv.x.open_orders()) > created_before, what="orders after recovery")
        finally:
            adapter.stop()
            await asyncio.wait_for(task, 60)
            left = [o.client_id for o in srv.x.open_orders()]
            replay.cancel()
            await ex.close()
            audit.close()
            await srv.stop()
        return adapter, at, closed_at, left

    adapter, at, closed_at, left = asyncio.run(main())
    print("RECOVERY", closed_at - at)
    assert closed_at - at <= RECOVERY_DECISIONS
    events = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert [e["state"] for e in events if e["event"] == "breaker"][-3:] == ["open", "half_open", "closed"]
    # Every client id handed out went into a create that was sent: ids are 0, 1, 2, ... with no gap.
    sent = [e["client_id"] for e in events if e["event"] == "create"]
    assert len(sent) == len(set(sent)) == adapter.ids.peek().seq
    # Refused creates: counted, a line per 10 s of the adapter's clock, not one per decision.
    refused = [e for e in events if e["event"] == "creates_refused"]
    assert refused and sum(e["counts"].get("circuit breaker open", 0) for e in refused) >= 5
    assert len(refused) <= 4 and "create_refused" not in kinds
    assert not [c for c in left if c.startswith(("g_", "grinder_"))]


def _dead_port() -> int:
    """A loopback port nobody listens on (the venue is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_failed_first_start_leaves_a_private_state_folder_the_next_start_takes(tape, tmp_path):  # noqa: F811
    old_umask = os.umask(0o022)  # the usual default: the files must be private whatever it is
    try:

        async def down():
            cfg = config(tmp_path, _dead_port())
            ex = make_client(cfg, CREDS.api_key, CREDS.secret)
            audit = AuditLog(tmp_path / "audit.jsonl", secrets=(CREDS.api_key, CREDS.secret))
            try:
                with pytest.raises(VenueError, match=r"venue http://127\.0\.0\.1:\d+ did not answer") as e:
                    await LiveAdapter(cfg, ex, audit).run()
                assert "\n" not in str(e.value) and CREDS.api_key not in str(e.value)
            finally:
                await ex.close()
                audit.close()

        asyncio.run(down())
        state = tmp_path / "state"
        for p in [state, *state.iterdir()]:
            assert p.stat().st_mode & 0o077 == 0, p  # 0600 files, a 0700 folder
        adapter, srv, mid_run, left, events = asyncio.run(session(tape, tmp_path, 3.0))  # the same state folder
    finally:
        os.umask(old_umask)
    assert [c for c in mid_run if c.startswith("g_static_grid:BTCUSDT:")]  # it trades
    assert not [c for c in left if c.startswith(("g_", "grinder_"))]
    for p in [state, *state.iterdir()]:
        assert p.stat().st_mode & 0o077 == 0, p


def test_an_unknown_symbol_is_one_line_naming_it(tape, tmp_path):  # noqa: F811
    async def main():
        srv = VenueServer(tape, CREDS, speed=20.0)
        srv.preroll()
        port = await srv.start()
        cfg = LiveConfig(strategy="static_grid", params=PARAMS, symbol="DOGEUSDT", api_url=f"http://127.0.0.1:{port}",
                         state_dir=tmp_path / "state")  # fmt: skip
        ex = make_client(cfg, CREDS.api_key, CREDS.secret)
        audit = AuditLog(tmp_path / "audit.jsonl")
        try:
            with pytest.raises(ConfigError, match=rf"^symbol DOGEUSDT is not listed by http://127\.0\.0\.1:{port}$"):
                await LiveAdapter(cfg, ex, audit).run()
        finally:
            await ex.close()
            audit.close()
            await srv.stop()
        assert not [p for _, p in srv.faults.requests if p == "/fapi/v1/order"]

    asyncio.run(main())


def test_an_order_a_slow_open_orders_answer_lacks_is_kept_until_its_own_status_says_gone(tape, tmp_path):  # noqa: F811
    from grinder.core.diff import ST_NEW
    from grinder.live.adapter import Known

    async def main():
        srv = VenueServer(tape, CREDS, speed=20.0)
        srv.preroll()
        port = await srv.start()
        cfg = config(tmp_path, port)
        ex = make_client(cfg, CREDS.api_key, CREDS.secret)
        audit = AuditLog(tmp_path / "audit.jsonl")
        adapter = LiveAdapter(cfg, ex, audit)
        try:
            await adapter._start()
            bb, _ = srv.x.best()
            cid, never = str(adapter.ids.next()), str(adapter.ids.next())
            await ex.create_post_only(SYMBOL, "buy", 0.002, (bb - 50) * 0.1, cid)
            adapter.orders = {c: Known(c, 1, bb - 50, 0.002, status=ST_NEW) for c in (cid, never)}
            real = ex.fetch_open_orders

            async def stale(*a, **k):  # an answer computed before either order reached the venue
                await real(*a, **k)
                return []

            ex.fetch_open_orders = stale
            await adapter._reconcile()
            kept = set(adapter.orders)
            await ex.cancel_by_client_id(SYMBOL, cid)
            await adapter._reconcile()
            return cid, kept, set(adapter.orders), [o.client_id for o in srv.x.open_orders()]
        finally:
            adapter.ids.close()
            adapter.budget.close()
            await ex.close()
            audit.close()
            await srv.stop()

    cid, kept, after, resting = asyncio.run(main())
    assert kept == {cid}  # the open one kept, the one never sent forgotten
    assert after == set() and resting == []  # once its status says cancelled, it is forgotten too
    checks = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    checks = [(e["status"], e["forgotten"]) for e in checks if e["event"] == "missing_checked"]
    assert sorted(checks) == [("canceled", True), ("not found", True), ("open", False)]
