"""A stop that leaves nothing of ours behind, and the dead-man's switch, against the emulator through ccxt.pro."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grinder.live.adapter import LiveAdapter
from grinder.live.audit import AuditLog
from grinder.live.budget import BudgetLimits, DailyBudget
from grinder.live.client import make_client
from grinder.live.client_ids import is_ours
from grinder.live.config import LiveConfig
from grinder.live.port import ExchangePort
from grinder.live.shutdown import EXIT_ORDERS_LEFT, DeadManLost, cancel_everything
from grinder.venue.server import VenueServer
from tests.conftest import REPO
from tests.live.test_adapter import _until, config
from tests.venue.test_server import CREDS, SYMBOL, client, tape  # noqa: F401 - tape is a fixture

FOREIGN = ("web_keep_me", "grinder_other_grid:BTCUSDT:7")  # an operator's by hand; another strategy's


def ours(ids) -> list[str]:
    return sorted(c for c in ids if is_ours(c, "static_grid", "BTCUSDT"))


def audit_of(tmp_path) -> list[dict]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


class Run:
    """An emulator and an adapter on it, in this process; `stop()` asks the adapter to stop and waits for it."""

    def __init__(self, tape, tmp_path, **cfg_kw):  # noqa: F811
        self.tape, self.tmp_path, self.cfg_kw = tape, tmp_path, cfg_kw

    async def __aenter__(self) -> Run:
        self.srv = VenueServer(self.tape, CREDS, speed=20.0)
        self.srv.preroll()
        self.port = await self.srv.start()
        self.replay = asyncio.create_task(self.srv.run_replay())
        self.other = client(self.port)  # an operator's session on the same account
        await self.other.load_markets()
        self.cfg = config(self.tmp_path, self.port, **self.cfg_kw)
        self.ex = make_client(self.cfg, CREDS.api_key, CREDS.secret)
        self.audit = AuditLog(self.tmp_path / "audit.jsonl", secrets=(CREDS.api_key, CREDS.secret))
        self.adapter = LiveAdapter(self.cfg, self.ex, self.audit)
        self.task = asyncio.create_task(self.adapter.run())
        return self

    def resting(self) -> list[str]:
        return sorted(o.client_id for o in self.srv.x.open_orders())

    async def foreign(self) -> None:
        bb, _ = self.srv.x.best()
        for i, cid in enumerate(FOREIGN):
            await self.other.create_order(SYMBOL, "limit", "buy", 0.002, (bb - 20_000 - i) * 0.1,
                                          {"postOnly": True, "clientOrderId": cid})  # fmt: skip

    def requests_since(self, n: int) -> list[tuple[str, str]]:
        return self.srv.faults.requests[n:]

    async def __aexit__(self, *exc) -> None:
        self.adapter.stop()
        try:
            if not self.task.done():  # a test that failed half-way: the adapter still stops first
                await asyncio.wait_for(self.task, 90)
        finally:
            self.replay.cancel()
            await self.ex.close()
            await self.other.close()
            self.audit.close()
            await self.srv.stop()


async def _quoting(run: Run, n: int = 4) -> None:
    await _until(lambda: len(ours(run.resting())) >= n, what=f"{n} quotes of ours resting")


def test_sigterm_while_the_venue_answers_503_then_recovers_cancels_everything_and_stops_clean(tape, tmp_path):  # noqa: F811
    async def main():
        async with Run(tape, tmp_path) as run:
            await _quoting(run)
            run.replay.cancel()  # the book stands still: no fill takes an order off meanwhile
            run.srv.faults.http_status, run.srv.faults.http_count = 503, 10**9  # every private request fails
            n = len(run.srv.faults.requests)
            run.adapter.stop()
            # The stop's lists and cancels fail for a while (a dozen requests), then the venue is back.
            await _until(lambda: len(run.requests_since(n)) >= 12, what="the stop to retry against the 503s")
            run.srv.faults.http_count = 0
            await asyncio.wait_for(run.task, 60)
            return run.adapter.stop_outcome, run.resting(), run.requests_since(n), run.srv

    outcome, left, requests, srv = asyncio.run(main())
    assert outcome.clean and left == []  # all cancelled, exit ok
    events = audit_of(tmp_path)
    kinds = [e["event"] for e in events]
    assert "open_orders_failed" in kinds and "cancel_error" in kinds  # it met the 503s ...
    assert kinds.index("stop_cancels") < kinds.index("stop_clean") < kinds.index("stop")  # ... and went on
    assert "orders_left" not in kinds
    # A clean stop disarms the dead-man's switch.
    assert "dead_man_disarmed" in kinds and srv.countdown_ms == 0 and srv.countdowns_fired == 0


def test_503_past_the_stop_budget_is_an_unclean_stop_naming_every_order_left(tape, tmp_path):  # noqa: F811
    async def main():
        async with Run(tape, tmp_path, stop_timeout_s=2.0) as run:
            await _quoting(run)
            run.replay.cancel()  # the book stands still: no fill takes an order off meanwhile
            run.srv.faults.http_status, run.srv.faults.http_count = 503, 10**9  # down for good
            run.adapter.stop()
            await asyncio.wait_for(run.task, 60)
            left = ours(run.resting())
            armed = run.srv.countdown_ms
            run.srv.faults.http_count = 0  # so the harness can close cleanly
            return run.adapter.stop_outcome, left, armed

    outcome, left, armed = asyncio.run(main())
    assert left and not outcome.clean and not outcome.verified
    assert set(left) <= set(outcome.left)  # every order of ours still resting is named
    events = audit_of(tmp_path)
    named = next(e for e in events if e["event"] == "orders_left")
    assert set(left) <= set(named["client_ids"]) and named["listed"] is False
    assert ", ".join(outcome.left) in outcome.message()
    # Left armed: the venue cancels them itself when the countdown runs out.
    assert armed == 60_000 and "dead_man_disarmed" not in [e["event"] for e in events]


def _stopped_on_a_still_book(tape, tmp_path, foreign: bool = False):  # noqa: F811
    """Quote (beside hand-placed orders if `foreign`), freeze the book, stop: (outcome, resting ids, stop requests)."""

    async def main():
        async with Run(tape, tmp_path) as run:
            if foreign:
                await run.foreign()
            await _quoting(run)
            run.replay.cancel()  # the book stands still: no fill takes ours off meanwhile
            n = len(run.srv.faults.requests)
            run.adapter.stop()
            await asyncio.wait_for(run.task, 60)
            return run.adapter.stop_outcome, run.resting(), run.requests_since(n)

    return asyncio.run(main())


def test_with_only_ours_resting_the_stop_sends_the_venues_cancel_all_once(tape, tmp_path):  # noqa: F811
    outcome, left, requests = _stopped_on_a_still_book(tape, tmp_path)
    assert outcome.clean and left == []
    stop = requests[requests.index(("GET", "/fapi/v1/openOrders")) :]  # from the stop's first list on
    assert stop.count(("DELETE", "/fapi/v1/allOpenOrders")) == 1 and ("DELETE", "/fapi/v1/order") not in stop
    kinds = [e["event"] for e in audit_of(tmp_path)]
    assert kinds.index("cancel_all_sent") < kinds.index("stop_clean")


def test_a_normal_stop_cancels_ours_one_by_one_and_leaves_foreign_orders_alone(tape, tmp_path):  # noqa: F811
    outcome, left, requests = _stopped_on_a_still_book(tape, tmp_path, foreign=True)
    assert outcome.clean and left == sorted(FOREIGN)  # ours gone, the hand-placed ones untouched
    # The cancel-all endpoint would have taken the foreign orders too: never sent while they rest.
    assert ("DELETE", "/fapi/v1/allOpenOrders") not in requests
    kinds = [e["event"] for e in audit_of(tmp_path)]
    assert "cancel_all_skipped" in kinds and "cancel_all_sent" not in kinds and "stop_clean" in kinds


def test_the_dead_mans_switch_is_kept_armed_while_the_adapter_runs_and_never_fires(tape, tmp_path):  # noqa: F811
    async def main():
        # 6 s: re-armed every 2 s, so a loop held up to 4 s by a loaded machine (the emulator shares
        # it) does not let the countdown fire; 3 s failed once under load.
        async with Run(tape, tmp_path, dead_man_s=6.0) as run:
            await _quoting(run)
            await _until(lambda: run.adapter.dead_man.arms >= 4, what="three re-arms")  # past a whole countdown
            # A quote of ours rests (the strategy replaces quotes, so there may be an instant with none).
            await _until(lambda: ours(run.resting()), what="a quote resting")
            during = (run.srv.countdowns_fired, run.srv.countdown_ms, len(ours(run.resting())))
            run.adapter.stop()
            await asyncio.wait_for(run.task, 60)
            return during, run.srv.countdown_ms, run.srv.countdowns_fired, run.adapter.stop_outcome

    (fired, armed, quotes), after, fired_after, outcome = asyncio.run(main())
    assert fired == 0 and armed == 6000 and quotes >= 1  # armed, re-armed in time, our quotes still there
    assert outcome.clean and after == 0 and fired_after == 0  # disarmed on the clean stop
    events = audit_of(tmp_path)
    armed_lines = [e for e in events if e["event"] == "dead_man_armed"]
    assert len(armed_lines) == 1 and armed_lines[0]["countdown_s"] == 6.0  # one line, not one per re-arm


def test_a_switch_that_cannot_be_armed_for_a_whole_countdown_stops_trading_with_orders_cancelled(tape, tmp_path):  # noqa: F811
    async def main():
        async with Run(tape, tmp_path, dead_man_s=2.0) as run:
            await _quoting(run)
            run.srv.faults.http_status, run.srv.faults.http_count = 503, 10**9
            await _until(lambda: any(e["event"] == "task_failed" for e in audit_of(tmp_path)), what="the stop")
            run.srv.faults.http_count = 0  # the venue answers again: the stop's cancels go through
            with pytest.raises(DeadManLost, match="dead_man_s = 2"):
                await asyncio.wait_for(run.task, 60)
            return run.adapter.stop_outcome, ours(run.resting())

    outcome, left = asyncio.run(main())
    assert outcome.clean and left == []
    kinds = [e["event"] for e in audit_of(tmp_path)]
    assert kinds.index("dead_man_arm_failed") < kinds.index("task_failed") < kinds.index("stop_clean")
    failed = next(e for e in audit_of(tmp_path) if e["event"] == "task_failed")
    assert failed["error"] == "DeadManLost"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_ours=st.integers(0, 5), n_foreign=st.integers(0, 2), failing=st.integers(0, 60),
       budget_s=st.sampled_from([0.5, 3.0]))  # fmt: skip
def test_whatever_the_venue_fails_foreign_orders_survive_and_every_order_left_is_named(
    tape,  # noqa: F811
    tmp_path,
    n_ours,
    n_foreign,
    failing,
    budget_s,
):
    """`cancel_everything` alone against the emulator: `failing` private requests answer 503 first."""
    state = tmp_path / f"ex{len(list(tmp_path.iterdir()))}"
    state.mkdir()

    async def main():
        srv = VenueServer(tape, CREDS, speed=1.0)
        srv.preroll()
        port = await srv.start()
        ex = client(port)
        audit = AuditLog(state / "audit.jsonl")
        budget = DailyBudget(state / "budget.jsonl", BudgetLimits(10_000, 1e9), max_delay_s=None)
        try:
            await ex.load_markets()
            bb, _ = srv.x.best()
            mine = [f"ours-{i}" for i in range(n_ours)]
            for i, cid in enumerate([*mine, *FOREIGN[:n_foreign]]):
                await ex.create_order(SYMBOL, "limit", "buy", 0.002, (bb - 100 - i) * 0.1,
                                      {"postOnly": True, "clientOrderId": cid})  # fmt: skip
            srv.faults.http_status, srv.faults.http_count = 503, failing
            port_ = ExchangePort(ex, SYMBOL, audit, budget, time.time_ns)
            out = await cancel_everything(ex, port_, audit, time.time_ns, SYMBOL,
                                          lambda orders: [o["clientOrderId"] for o in orders
                                                          if o["clientOrderId"].startswith("ours-")],
                                          mine, budget_s)  # fmt: skip
            return out, sorted(o.client_id for o in srv.x.open_orders()), srv.faults.requests
        finally:
            await ex.close()
            audit.close()
            budget.close()
            await srv.stop()

    out, resting, requests = asyncio.run(main())
    left = [c for c in resting if c.startswith("ours-")]
    assert [c for c in resting if not c.startswith("ours-")] == sorted(FOREIGN[:n_foreign])  # never touched
    assert set(left) <= set(out.left)  # every order of ours still resting is named
    assert not out.clean or not left  # clean means nothing of ours rests
    if failing == 0:
        assert out.clean and out.rounds <= 3  # a venue that answers: done at once
    if n_foreign:
        assert ("DELETE", "/fapi/v1/allOpenOrders") not in requests


def test_dead_man_s_is_off_or_at_least_a_second():
    base = {"strategy": "static_grid", "params": {}, "symbol": "BTCUSDT"}
    assert LiveConfig(**base, dead_man_s=0).dead_man_s == 0 and LiveConfig(**base).dead_man_s == 60
    with pytest.raises(ValueError, match="dead_man_s"):
        LiveConfig(**base, dead_man_s=0.5)


# ---- as processes: `grinder live` killed with SIGKILL, and SIGTERM with orders left ----

ENV = {**os.environ, "GRINDER_API_KEY": CREDS.api_key, "GRINDER_API_SECRET": CREDS.secret}
FAR_GRID = """strategy = "static_grid"
symbol = "BTCUSDT"
step_ms = 200
reconcile_s = 60
params = { levels = 2, interval = 5.0, half_spread = 10.0, order_qty = 0.002, max_position = 0.01 }
"""


async def _live_process(tmp_path, port: int, extra: str) -> asyncio.subprocess.Process:
    cfg = tmp_path / "live.toml"
    cfg.write_text(f'{FAR_GRID}api_url = "http://127.0.0.1:{port}"\nstate_dir = "{tmp_path / "state"}"\n{extra}')
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "grinder", "live", "--config", str(cfg),
                                                env=ENV, cwd=REPO, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)  # fmt: skip


async def _serve(tape):  # noqa: F811
    srv = VenueServer(tape, CREDS, speed=5.0)
    srv.preroll()
    port = await srv.start()
    return srv, port, asyncio.create_task(srv.run_replay())


def test_kill_9_leaves_orders_that_the_venues_countdown_cancels(tape, tmp_path):  # noqa: F811
    async def main():
        srv, port, replay = await _serve(tape)
        proc = await _live_process(tmp_path, port, "dead_man_s = 2")
        try:
            quoting = lambda: len(ours(o.client_id for o in srv.x.open_orders())) >= 2  # noqa: E731
            await _until(lambda: quoting() and srv.countdown_ms == 2000, 90, "quotes and the switch armed")
            proc.send_signal(signal.SIGKILL)  # no goodbye: nothing of the stop runs
            assert await asyncio.wait_for(proc.wait(), 30) == -signal.SIGKILL
            resting = ours(o.client_id for o in srv.x.open_orders())
            await _until(lambda: srv.countdowns_fired == 1, 30, "the countdown to run out")
            return resting, ours(o.client_id for o in srv.x.open_orders())
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            replay.cancel()
            await srv.stop()

    resting, after = asyncio.run(main())
    assert resting and after == []  # left resting by the dead process, cancelled by the venue
    kinds = [json.loads(x)["event"] for x in (tmp_path / "state" / "audit.jsonl").read_text().splitlines()]
    assert "dead_man_armed" in kinds and "stop" not in kinds


def test_sigterm_that_cannot_cancel_exits_non_zero_naming_the_orders_left(tape, tmp_path):  # noqa: F811
    async def main():
        srv, port, replay = await _serve(tape)
        proc = await _live_process(tmp_path, port, "stop_timeout_s = 2")
        try:
            await _until(lambda: len(ours(o.client_id for o in srv.x.open_orders())) >= 2, 90, "quotes")
            srv.faults.http_status, srv.faults.http_count = 503, 10**9
            proc.send_signal(signal.SIGTERM)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            return proc.returncode, err.decode(), ours(o.client_id for o in srv.x.open_orders())
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            replay.cancel()
            await srv.stop()

    code, err, left = asyncio.run(main())
    assert code == EXIT_ORDERS_LEFT, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and lines[0].startswith("error: orders of ours may still")
    assert left and all(cid in lines[0] for cid in left)  # every one resting is named
