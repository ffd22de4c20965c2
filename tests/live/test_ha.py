"""High availability: `grinder live` processes electing a leader on a real redis-server, against the emulator.

Every scenario ends with the emulator's order log checked: no action with a stale fencing token and
no double execution (grinder.venue.order_log). The figures (takeover and handoff times) are printed;
run with `-s` to see them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from grinder.live.adapter import LiveAdapter
from grinder.live.audit import AuditLog
from grinder.live.client import make_client
from grinder.live.client_ids import ClientOrderId
from grinder.live.config import HaConfig
from grinder.live.leader import Leadership, key_prefix
from grinder.live.metrics import exposition
from grinder.live.port import PortFailed, PortRefused
from grinder.venue.order_log import check_fencing
from grinder.venue.server import VenueServer
from tests.conftest import REPO
from tests.live.redis_server import RedisServer, redis_server  # noqa: F401 - a fixture
from tests.live.test_adapter import _until, config
from tests.venue.test_server import CREDS, SYMBOL, client, tape  # noqa: F401 - a fixture

ENV = {**os.environ, "GRINDER_API_KEY": CREDS.api_key, "GRINDER_API_SECRET": CREDS.secret}
LEASE_MS = 2000
GRID = """strategy = "static_grid"
symbol = "BTCUSDT"
step_ms = 200
reconcile_s = 5
dead_man_s = 5
stop_timeout_s = 10
params = { levels = 2, interval = 5.0, half_spread = 10.0, order_qty = 0.002, max_position = 0.01 }
"""
CREATE = ("POST", "/fapi/v1/order")


def leader_gauges(adapter) -> tuple[float, float]:
    """(grinder_is_leader, grinder_fencing_token) as the adapter's /metrics would serve them."""
    got = {}
    for line in exposition(adapter.metrics).decode().splitlines():
        name = line.split("{")[0]
        if name in ("grinder_is_leader", "grinder_fencing_token"):
            got[name] = float(line.rsplit(" ", 1)[1])
    return got["grinder_is_leader"], got["grinder_fencing_token"]


def events(state: Path) -> list[dict]:
    path = state / "audit.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


class Cluster:
    """The emulator (in this process, looping its tape), a redis-server and `grinder live` processes on one account."""

    def __init__(self, tape, tmp_path: Path, redis: RedisServer):  # noqa: F811
        self.tape, self.tmp, self.redis = tape, tmp_path, redis
        self.procs: dict[str, asyncio.subprocess.Process] = {}

    async def __aenter__(self) -> Cluster:
        self.srv = VenueServer(self.tape, CREDS, speed=5.0)
        self.srv.preroll()
        self.port = await self.srv.start()
        self.replay = asyncio.create_task(self.srv.run_tape(loop=True))
        return self

    async def start(self, name: str) -> None:
        state = self.tmp / name
        cfg = self.tmp / f"{name}.toml"
        cfg.write_text(f'{GRID}api_url = "http://127.0.0.1:{self.port}"\nstate_dir = "{state}"\n'
                       f'[ha]\nredis_url = "{self.redis.url}"\nlease_ms = {LEASE_MS}\nacquire_every_ms = 200\n'
                       f'account = "test"\n')  # fmt: skip
        self.procs[name] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "grinder", "live", "--config", str(cfg), env=ENV, cwd=REPO,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)  # fmt: skip

    def audit(self, name: str) -> list[dict]:
        return events(self.tmp / name)

    def token_of(self, name: str) -> set[int]:
        """Every token the instance took the lease with."""
        return {e["fence"] for e in self.audit(name) if e["event"] == "leader"}

    def leading(self) -> list[str]:
        """The instances whose last word on the lease is that they hold it and have taken over."""
        out = []
        for name, proc in self.procs.items():
            if proc.returncode is not None:
                continue  # a process killed while leading says nothing more
            roles = [e["event"] for e in self.audit(name) if e["event"] in ("leader_ready", "leadership_lost")]
            if roles and roles[-1] == "leader_ready":
                out.append(name)
        return out

    def creates(self, since_ns: int = 0) -> list[dict]:
        log = self.srv.order_log.entries
        return [
            e for e in log if (e["method"], e["path"]) == CREATE and e["result"] == "accepted" and e["t_ns"] >= since_ns
        ]

    async def leader(self, timeout_s: float = 60.0, other_than: str | None = None, since_ns: int = 0) -> str:
        """Wait until one instance (not `other_than`) leads and has an order accepted under its token (since
        `since_ns`); its name."""

        def one():
            names = [n for n in self.leading() if n != other_than]
            tokens = {e["token"] for e in self.creates(since_ns)}
            return len(names) == 1 and tokens & self.token_of(names[0])

        await _until(one, timeout_s, "one leader placing orders")
        return next(n for n in self.leading() if n != other_than)

    def first_create_by(self, name: str, since_ns: int) -> int | None:
        tokens = self.token_of(name)
        return next((e["t_ns"] for e in self.creates(since_ns) if e["token"] in tokens), None)

    def check(self) -> dict:
        c = check_fencing(self.srv.order_log.entries)
        assert not c.stale, c.stale[:3]
        assert not c.double, c.double[:3]
        assert c.unfenced == 0  # every venue action of every instance carried a token
        return c.as_dict()

    async def stop(self, name: str) -> int:
        p = self.procs[name]
        if p.returncode is None:
            p.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(p.communicate(), 60)
        return p.returncode, err.decode()

    async def __aexit__(self, *exc) -> None:
        for p in self.procs.values():
            if p.returncode is None:
                with _suppress():
                    p.send_signal(signal.SIGCONT)
                    p.kill()
                await p.wait()
        self.replay.cancel()
        await self.srv.stop()


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is ProcessLookupError


def test_three_instances_one_leader_kill_9_sigstop_and_sigterm_handoffs(tape, tmp_path, redis_server):  # noqa: F811
    figures: dict = {}

    async def main():
        async with Cluster(tape, tmp_path, redis_server) as c:
            for name in ("a", "b", "c"):
                await c.start(name)
            first = await c.leader(90)
            # A few seconds of three instances: every order the venue took is the leader's.
            t0 = time.time_ns()
            await asyncio.sleep(3)
            assert {e["token"] for e in c.creates(t0)} <= c.token_of(first)
            assert c.leading() == [first]
            figures["placing_instances"] = len({e["token"] for e in c.creates()})

            # kill -9 the leader: a follower leads within 30 s.
            killed_ns = time.time_ns()
            c.procs[first].send_signal(signal.SIGKILL)
            await c.procs[first].wait()
            second = await c.leader(30, other_than=first, since_ns=killed_ns)
            led = next(e["ts_ns"] for e in c.audit(second) if e["event"] == "leader" and e["ts_ns"] > killed_ns)
            figures["kill9_lease_taken_s"] = (led - killed_ns) / 1e9
            figures["kill9_first_order_s"] = (c.first_create_by(second, killed_ns) - killed_ns) / 1e9
            assert figures["kill9_first_order_s"] < 30

            # SIGSTOP the leader past its lease, then SIGCONT: the resumed process sends nothing.
            stopped_ns = time.time_ns()
            c.procs[second].send_signal(signal.SIGSTOP)
            third = await c.leader(30, other_than=second, since_ns=stopped_ns)
            figures["sigstop_first_order_s"] = (c.first_create_by(third, stopped_ns) - stopped_ns) / 1e9
            c.procs[second].send_signal(signal.SIGCONT)
            stepped_down = lambda: any(e["event"] == "follower" for e in c.audit(second))  # noqa: E731
            await _until(stepped_down, 30, "the resumed one to step down")
            await asyncio.sleep(2)  # its decisions and countdown timers all came due meanwhile
            old = c.token_of(second)
            # The new leader's token is the highest yet (an instance can have led before, briefly).
            third_first = next(e["seq"] for e in c.srv.order_log.entries if e["token"] == max(c.token_of(third)))
            after = [e for e in c.srv.order_log.entries if e["seq"] > third_first and e["token"] in old]
            # Nothing under its old token reached the venue after the new leader acted.
            assert after == [], (after, old, c.token_of(third), c.srv.order_log.entries[: after[0]["seq"] + 1])
            figures["resumed_fenced"] = sum(1 for e in c.audit(second) if e["event"] == "fenced")
            assert c.leading() == [third]

            # SIGTERM the leader: its orders cancelled, the lease released, a follower leads at once.
            term_ns = time.time_ns()
            code, err = await c.stop(third)
            assert code == 0, err
            fourth = await c.leader(30, other_than=third, since_ns=term_ns)
            led = next(e["ts_ns"] for e in c.audit(fourth) if e["event"] == "leader" and e["ts_ns"] > term_ns)
            figures["sigterm_lease_taken_s"] = (led - term_ns) / 1e9
            figures["sigterm_first_order_s"] = (c.first_create_by(fourth, term_ns) - term_ns) / 1e9
            kinds = [e["event"] for e in c.audit(third)]
            assert kinds.index("stop_clean") < kinds.index("leadership_lost")  # cancelled, then released
            released = next(e for e in c.audit(third) if e["event"] == "leadership_lost")
            assert released["reason"] == "released"
            for name in list(c.procs):
                if c.procs[name].returncode is None:
                    code, err = await c.stop(name)
                    assert code == 0, err
            figures.update(c.check())
            figures["venue_orders_open_at_end"] = len(c.srv.x.open_orders())

    asyncio.run(main())
    print("\nHA figures (3 instances):", json.dumps(figures))
    assert figures["placing_instances"] == 1 and figures["venue_orders_open_at_end"] == 0


def test_redis_killed_and_restarted_nobody_trades_while_it_is_down(tape, tmp_path, redis_server):  # noqa: F811
    figures: dict = {}

    async def main():
        async with Cluster(tape, tmp_path, redis_server) as c:
            for name in ("a", "b"):
                await c.start(name)
            first = await c.leader(90)
            await asyncio.sleep(2)
            assert len({e["token"] for e in c.creates()}) == 1  # two instances: one places orders
            before = max(c.token_of(first))
            down_ns = time.time_ns()
            redis_server.kill()
            await _until(lambda: not c.leading(), 30, "the leader to step down")
            figures["stepped_down_s"] = (time.time_ns() - down_ns) / 1e9
            quiet_ns = time.time_ns()
            await asyncio.sleep(LEASE_MS / 1000 + 1)
            # Nobody holds a lease: nothing changes the venue (the countdown is not re-armed either).
            figures["actions_while_down"] = sum(1 for e in c.srv.order_log.entries if e["t_ns"] >= quiet_ns)
            redis_server.start()
            up_ns = time.time_ns()
            leader = await c.leader(60, since_ns=up_ns)
            token = max(c.token_of(leader))
            figures["restarted_first_order_s"] = (c.first_create_by(leader, up_ns) - up_ns) / 1e9
            assert token > before  # seeded from Redis's clock: higher than any before the restart
            for name in list(c.procs):
                code, err = await c.stop(name)
                assert code == 0, err
            figures.update(c.check())

    asyncio.run(main())
    print("\nHA figures (redis restart):", json.dumps(figures))
    assert figures["actions_while_down"] == 0


class Clock:
    """The monotonic clock moved on by `t` seconds: a process that stood still that long."""

    t = 0.0

    def __call__(self):
        return time.monotonic() + self.t


def test_a_follower_that_calls_the_venue_directly_or_whose_lease_runs_out_mid_request_sends_nothing(
    tape,  # noqa: F811
    tmp_path,
    redis_server,  # noqa: F811
):
    """The fence sits under the port: a follower's port, its client, and a lease lapsing after the port's check."""

    async def main():
        srv = VenueServer(tape, CREDS, speed=5.0)
        srv.preroll()
        port = await srv.start()
        replay = asyncio.create_task(srv.run_tape(loop=True))
        ha = HaConfig(redis_url=redis_server.url, lease_ms=LEASE_MS, acquire_every_ms=100, account="test")
        # The other leader's lease outlasts the follower phase however slow the machine (it is never
        # renewed here); its close() hands it over.
        held = ha.model_copy(update={"lease_ms": 600_000})
        holder = Leadership(held, key_prefix("test", "static_grid", "BTCUSDT"), "holder",
                            AuditLog(tmp_path / "h.jsonl"), time.time_ns)  # fmt: skip
        cfg = config(tmp_path, port, ha=ha, dead_man_s=5.0)
        ex = make_client(cfg, CREDS.api_key, CREDS.secret)
        audit = AuditLog(tmp_path / "audit.jsonl")
        out = {}
        try:
            assert await holder.acquire()  # someone else leads throughout
            adapter = LiveAdapter(cfg, ex, audit)
            task = asyncio.create_task(adapter.run())
            await _until(lambda: adapter.decisions >= 5, 60, "the follower deciding")
            bb, ba = srv.x.best()
            price, cid = (bb - 50) * 0.1, adapter.ids.next()
            for attempt in (
                lambda: adapter.port.create(cid, "buy", price, 0.002),
                lambda: adapter.port.cancel(client_id=str(cid)),
                lambda: ex.create_post_only(adapter.symbol, "buy", 0.002, price, "hostile-1"),
                lambda: ex.cancel_all_orders(adapter.symbol),
                lambda: ex.fapiPrivatePostCountdownCancelAll({"symbol": "BTCUSDT", "countdownTime": 0}),
            ):
                with pytest.raises(Exception) as e:  # noqa: PT011 - each layer refuses in its own words
                    await attempt()
                out.setdefault("refusals", []).append(type(e.value).__name__)
            out["log_while_follower"] = list(srv.order_log.entries)
            out["gauges_follower"] = leader_gauges(adapter)
            # Leading now; the lease lapses locally between the port's check and the HTTP call.
            await holder.close()
            await _until(lambda: adapter.trading(), 30, "the adapter to take over")
            out["gauges_leader"], out["token"] = leader_gauges(adapter), adapter.leader.token
            clock = Clock()
            adapter.leader.monotonic = clock
            n = len(srv.order_log.entries)
            sign = ex.sign

            def sign_then_pause(*a, **kw):  # ccxt signs after the port checked the lease, before fetch
                clock.t = 3600.0  # as if the process stood still for an hour here
                return sign(*a, **kw)

            ex.sign = sign_then_pause
            with pytest.raises(PortFailed, match="fencing"):
                await adapter.port.create(adapter.ids.next(), "buy", price, 0.002)
            ex.sign = sign
            out["log_after_lapse"] = srv.order_log.entries[n:]
            out["fenced_lines"] = [e for e in events(tmp_path) if e["event"] == "fenced"]
            clock.t = 0.0
            adapter.stop()
            await asyncio.wait_for(task, 60)
            out["check"] = check_fencing(srv.order_log.entries).as_dict()
        finally:
            await holder.close()
            await ex.close()
            audit.close()
            replay.cancel()
            await srv.stop()
        return out

    out = asyncio.run(main())
    assert out["refusals"] == ["PortRefused", "PortRefused", "Fenced", "Fenced", "Fenced"]
    assert out["log_while_follower"] == []  # nothing reached the venue
    assert out["gauges_follower"] == (0, 0) and out["gauges_leader"] == (1, out["token"])
    assert out["log_after_lapse"] == []
    assert any(e["reason"] == "lease expired locally" for e in out["fenced_lines"])
    assert out["check"]["stale"] == 0 and out["check"]["double"] == 0
    assert PortRefused and PortFailed  # the port's two ways of not sending


def test_a_new_leader_cancels_former_leaders_orders_before_trading_even_in_detect_only(tape, tmp_path, redis_server):  # noqa: F811
    """In detect_only reconciliation cancels no orphan; a former leader's orders must go all the same, first."""

    async def main():
        srv = VenueServer(tape, CREDS, speed=5.0)
        srv.preroll()
        port = await srv.start()
        replay = asyncio.create_task(srv.run_tape(loop=True))
        former = client(port)
        former.headers = {"X-Grinder-Fence": "1"}  # as a leader of an earlier term sent them
        ha = HaConfig(redis_url=redis_server.url, lease_ms=LEASE_MS, acquire_every_ms=100, account="test")
        cfg = config(tmp_path, port, ha=ha, rollout="detect_only").model_copy(update={"reconcile_s": 60.0})
        ex = make_client(cfg, CREDS.api_key, CREDS.secret)
        audit = AuditLog(tmp_path / "audit.jsonl")
        try:
            await former.load_markets()
            bb, _ = srv.x.best()
            left = [str(ClientOrderId("static_grid", "BTCUSDT", i, "old12")) for i in range(2)]
            for i, cid in enumerate(left):
                await former.create_order(SYMBOL, "limit", "buy", 0.002, (bb - 200 - i) * 0.1,
                                          {"postOnly": True, "clientOrderId": cid})  # fmt: skip
            adapter = LiveAdapter(cfg, ex, audit)
            task = asyncio.create_task(adapter.run())
            await _until(lambda: any(k.status for k in adapter.orders.values()), 60, "the new leader quoting")
            resting = sorted(o.client_id for o in srv.x.open_orders())
            adapter.stop()
            await asyncio.wait_for(task, 60)
            return left, resting, check_fencing(srv.order_log.entries).as_dict()
        finally:
            await former.close()
            await ex.close()
            audit.close()
            replay.cancel()
            await srv.stop()

    left, resting, check = asyncio.run(main())
    assert not set(left) & set(resting)
    assert check["double"] == 0 and check["stale"] == 0  # cancelled before the first create of the new term
    lines = events(tmp_path)
    former = next(e for e in lines if e["event"] == "former_leader_orders")
    assert former["client_ids"] == left and former["mode"] == "detect_only"
    kinds = [e["event"] for e in lines]
    assert kinds.index("former_leader_orders") < kinds.index("leader_ready") < kinds.index("create")
