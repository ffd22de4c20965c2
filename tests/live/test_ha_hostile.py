"""Leader election, attacked: what got around the single-leader guarantee once, each kept fixed by a test.

The kill switch was one state folder's: killing the leader released its lease and a follower took over
and traded a fraction of a second later; killing a follower left the leader trading.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from grinder.live.adapter import LiveAdapter
from grinder.live.audit import AuditLog
from grinder.live.client import make_client
from grinder.live.config import HaConfig
from grinder.live.leader import Fenced, Leadership, key_prefix, set_kill
from grinder.venue.order_log import check_fencing
from grinder.venue.server import VenueServer
from tests.live.redis_server import redis_server  # noqa: F401 - a fixture
from tests.live.test_adapter import _until, config
from tests.live.test_ha import LEASE_MS, Clock
from tests.live.test_leader import leadership
from tests.venue.test_server import CREDS, tape  # noqa: F401 - a fixture

PREFIX = key_prefix("test", "static_grid", "BTCUSDT")


def test_a_kill_key_stops_every_instance_from_leading_until_cleared(redis_server):  # noqa: F811
    async def main():
        a, b = leadership(redis_server.url, "a"), leadership(redis_server.url, "b")
        try:
            assert await a.acquire()
            assert await b.kill("operator")  # pulled on a follower
            assert await a.renew() and a.valid()  # the leader keeps its lease to cancel under it...
            assert a.killed == "operator"  # ...and is told
            assert "ha_killed" in a.audit.events()
            await a.release()
            assert not await b.acquire() and not await a.acquire()  # nobody leads while it is pulled
            d = leadership(redis_server.url, "d")  # a follower that never saw it: told by its next try
            try:
                assert not await d.acquire() and d.killed == "operator" and "ha_killed" in d.audit.events()
            finally:
                await d.close()
            assert await set_kill(a.cfg, a.lease_key.removesuffix(":lease"), None)
            c = leadership(redis_server.url, "c")
            try:
                assert await c.acquire() and c.killed is None
            finally:
                await c.close()
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


def test_killing_the_leader_hands_over_to_nobody_and_a_kill_on_another_instance_stops_the_leader(
    tape,  # noqa: F811
    tmp_path,
    redis_server,  # noqa: F811
):
    async def main():
        srv = VenueServer(tape, CREDS, speed=5.0)
        srv.preroll()
        port = await srv.start()
        replay = asyncio.create_task(srv.run_tape(loop=True))
        ha = HaConfig(redis_url=redis_server.url, lease_ms=LEASE_MS, acquire_every_ms=100, account="test")
        follower = Leadership(ha, PREFIX, "follower", AuditLog(tmp_path / "f.jsonl"), time.time_ns)
        out = {}
        try:
            # 1. `grinder live kill` on the leader: nobody may take the lease over afterwards.
            cfg = config(tmp_path / "one", port, ha=ha, dead_man_s=5.0)
            ex = make_client(cfg, CREDS.api_key, CREDS.secret)
            audit = AuditLog(tmp_path / "one.jsonl")
            adapter = LiveAdapter(cfg, ex, audit)
            task = asyncio.create_task(adapter.run())
            await _until(lambda: adapter.trading() and adapter.orders, 60, "the adapter leading and quoting")
            adapter.request_kill("test")
            await asyncio.wait_for(task, 60)
            await ex.close()
            audit.close()
            out["took_over_after_kill"] = await follower.acquire()
            out["follower_saw"] = follower.killed
            out["open_after_kill"] = len(srv.x.open_orders())
            await follower.close()
            out["cleared"] = await set_kill(ha, PREFIX, None)

            # 2. The kill pulled elsewhere (another instance, or `grinder live kill` on another machine)
            # reaches the leader at its next renewal: it cancels, and stays killed.
            cfg = config(tmp_path / "two", port, ha=ha, dead_man_s=5.0)
            ex = make_client(cfg, CREDS.api_key, CREDS.secret)
            audit = AuditLog(tmp_path / "two.jsonl")
            adapter = LiveAdapter(cfg, ex, audit)
            task = asyncio.create_task(adapter.run())
            await _until(lambda: adapter.trading() and adapter.orders, 60, "the second adapter leading")
            assert await set_kill(ha, PREFIX, "elsewhere")
            await asyncio.wait_for(task, 30)  # it stops by itself
            await ex.close()
            audit.close()
            out["second_kill"] = adapter.kill_requested
            out["second_open"] = len(srv.x.open_orders())
            out["check"] = check_fencing(srv.order_log.entries).as_dict()
        finally:
            await follower.close()
            replay.cancel()
            await srv.stop()
        return out

    out = asyncio.run(main())
    assert out["took_over_after_kill"] is False, "a follower took the killed leader's lease over"
    assert out["follower_saw"] == "test" and out["cleared"]
    assert out["open_after_kill"] == 0
    assert out["second_kill"] == "kill switch in Redis (elsewhere)"
    assert out["second_open"] == 0
    assert (tmp_path / "two" / "state" / "KILL").exists()  # its restart refuses too
    assert out["check"]["stale"] == 0 and out["check"]["double"] == 0
    kinds = [json.loads(x)["event"] for x in (tmp_path / "two.jsonl").read_text().splitlines()]
    assert kinds.index("ha_killed") < kinds.index("kill_requested") < kinds.index("stop_clean")


def test_a_followers_kill_plans_no_flatten_of_its_own_and_charges_nothing():
    """`grinder live kill` on a follower in execute_flatten with kill_flatten: its flatten is the leader's.

    It used to be planned `execute`: a client id taken, the budget charged and a `flatten` line written
    for an order the fence then refused (the leader, which sees the kill too, flattens).
    """
    from types import SimpleNamespace

    from grinder.live.config import LiveConfig
    from grinder.live.rollout import Rollout

    class Ex:
        sent: list = []

        async def fetch_open_orders(self, symbol):
            return []

        async def fetch_positions(self, symbols):
            return [{"symbol": "BTC/USDT:USDT", "contracts": 0.01, "contractSize": 1.0, "side": "long"}]

        async def create_order(self, *a):
            self.sent.append(a)
            raise AssertionError("a follower's kill sent a flatten")

    class Audit:
        lines: list = []

        def write(self, ts, event, **kw):
            self.lines.append({"event": event, **kw})

    charged = []
    cfg = LiveConfig(strategy="static_grid", params={}, symbol="BTCUSDT", rollout="execute_flatten",
                     kill_flatten=True, max_flatten_qty=1.0)  # fmt: skip
    a = SimpleNamespace(cfg=cfg, ex=Ex(), audit=Audit(), clock_ns=time.time_ns, symbol="BTC/USDT:USDT", lot=0.001,
                        ids=SimpleNamespace(epoch="e1", next=lambda: "cid"), _ours=lambda orders: [],
                        may_act=lambda: False, budget=SimpleNamespace(charge=lambda *x: charged.append(x)))  # fmt: skip
    out = asyncio.run(Rollout(a).kill("grinder live kill"))
    (plan,) = [e for e in a.audit.lines if e["event"] == "kill_plan"]
    assert [x["then"] for x in plan["actions"]] == ["not_leader"]
    assert out["flatten"] == {"result": "not_leader"} and not Ex.sent and not charged
    assert "flatten" not in [e["event"] for e in a.audit.lines]


def test_a_lease_that_runs_out_while_the_request_waits_for_a_new_connection_sends_nothing(
    tape,  # noqa: F811
    tmp_path,
    redis_server,  # noqa: F811
):
    """The fence's check passed, then aiohttp needed a new connection (DNS, TCP, TLS: up to ccxt's 10 s timeout,
    SYN retries on a bad network). The lease ran out meanwhile: the request must not leave with its token."""

    async def main():
        srv = VenueServer(tape, CREDS, speed=5.0)
        srv.preroll()
        port = await srv.start()
        ha = HaConfig(redis_url=redis_server.url, lease_ms=LEASE_MS, acquire_every_ms=100, account="test")
        clock = Clock()
        audit = AuditLog(tmp_path / "audit.jsonl")
        lead = Leadership(ha, PREFIX, "slow", audit, time.time_ns, clock)
        cfg = config(tmp_path, port, ha=ha)
        ex, warm = make_client(cfg, CREDS.api_key, CREDS.secret), make_client(cfg, CREDS.api_key, CREDS.secret)
        try:
            await warm.load_markets()
            ex.set_markets(warm.markets, warm.currencies)  # no request yet: the create needs a new connection
            ex.fence = lead
            assert await lead.acquire()
            ex.open()
            create = ex.tcp_connector._create_connection

            async def slow_connect(*a, **kw):
                clock.t = 3600.0  # the connect took as long as it takes on a bad network
                return await create(*a, **kw)

            ex.tcp_connector._create_connection = slow_connect
            bb, _ = srv.x.best()
            with pytest.raises(Fenced, match="while connecting"):
                await ex.create_post_only("BTC/USDT:USDT", "buy", 0.002, (bb - 100) * 0.1, "slow-connect-1")
            lines = (tmp_path / "audit.jsonl").read_text().splitlines()
            return list(srv.order_log.entries), [json.loads(x) for x in lines]
        finally:
            await lead.close()
            await ex.close()
            await warm.close()
            audit.close()
            await srv.stop()

    sent, lines = asyncio.run(main())
    assert sent == [], "a request left with the token of a lease that ran out while it connected"
    assert [e["reason"] for e in lines if e["event"] == "fenced"] == ["lease expired while connecting"]


def test_a_follower_may_take_and_keep_the_user_stream_key_but_not_close_it(tape, tmp_path, redis_server):  # noqa: F811
    """The listenKey is the account's: a DELETE from a follower would close the leader's user stream too."""

    async def main():
        srv = VenueServer(tape, CREDS, speed=5.0)
        srv.preroll()
        port = await srv.start()
        ha = HaConfig(redis_url=redis_server.url, lease_ms=LEASE_MS, acquire_every_ms=100, account="test")
        audit = AuditLog(tmp_path / "audit.jsonl")
        ex = make_client(config(tmp_path, port, ha=ha), CREDS.api_key, CREDS.secret)
        ex.fence = Leadership(ha, PREFIX, "follower", audit, time.time_ns)  # never acquires: a follower
        try:
            await ex.load_markets()
            key = (await ex.fapiPrivatePostListenKey())["listenKey"]
            await ex.fapiPrivatePutListenKey({"listenKey": key})
            with pytest.raises(Fenced):
                await ex.fapiPrivateDeleteListenKey({"listenKey": key})
            return [r for r in srv.faults.requests if "listenKey" in str(r)]
        finally:
            await ex.fence.close()
            await ex.close()
            audit.close()
            await srv.stop()

    sent = asyncio.run(main())
    assert [r[0] for r in sent] == ["POST", "PUT"], sent


def test_a_redis_off_this_machine_needs_tls_and_a_password(monkeypatch):
    """Whoever can write the lease decides who trades: plain redis:// is for this machine only."""
    from grinder.errors import ConfigError
    from grinder.live.leader import redis_client

    for url in ("redis://10.0.0.5:6379/0", "redis://redis.internal", "redis://127.0.0.1.nip.io"):
        with pytest.raises(ValueError, match=r"off this machine needs rediss:// \(TLS\)"):
            HaConfig(redis_url=url)
    for url in ("redis://127.0.0.1:6379/0", "redis://localhost", "redis://[::1]:6379", "rediss://10.0.0.5"):
        HaConfig(redis_url=url)
    monkeypatch.delenv("GRINDER_REDIS_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="needs GRINDER_REDIS_PASSWORD"):
        redis_client("rediss://10.0.0.5:6380/0", 1.0)
    redis_client("redis://127.0.0.1:6379/0", 1.0)  # this machine's: a password if set, else none
    monkeypatch.setenv("GRINDER_REDIS_PASSWORD", "pw")
    redis_client("rediss://10.0.0.5:6380/0", 1.0)


def test_the_lease_is_timed_on_a_clock_that_counts_a_suspended_machine():
    """CLOCK_MONOTONIC stops while the machine sleeps (suspend, hibernation): a lease timed on it would still
    look valid on waking, long after Redis let it go. CLOCK_BOOTTIME counts the sleep (Linux)."""
    from grinder.live.leader import lease_clock

    lead = leadership("redis://127.0.0.1:1/0", "x", clock=lease_clock)
    if hasattr(time, "CLOCK_BOOTTIME"):
        assert abs(lead.monotonic() - time.clock_gettime(time.CLOCK_BOOTTIME)) < 1.0
    assert Leadership.__init__.__defaults__[0] is lease_clock  # what the adapter gets


def test_grinder_live_kill_with_ha_sets_the_shared_key_and_clear_removes_it(tmp_path, redis_server):  # noqa: F811
    import subprocess
    import sys

    from grinder.live.leader import redis_client
    from tests.conftest import REPO

    cfg = tmp_path / "live.toml"
    state = tmp_path / "state"
    state.mkdir()
    cfg.write_text(f'strategy = "static_grid"\nsymbol = "BTCUSDT"\nstate_dir = "{state}"\nparams = {{}}\n'
                   f'[ha]\nredis_url = "{redis_server.url}"\naccount = "test"\n')  # fmt: skip

    def grinder(*args):
        return subprocess.run([sys.executable, "-m", "grinder", "live", "kill", "--config", str(cfg), *args],
                              capture_output=True, text=True, cwd=REPO, timeout=60)  # fmt: skip

    async def key():
        r = redis_client(redis_server.url, 2.0)
        try:
            return await r.get(f"{PREFIX}:kill")
        finally:
            await r.aclose()

    r = grinder()
    assert r.returncode == 0, r.stderr
    assert asyncio.run(key()) == "grinder live kill" and (state / "KILL").exists()
    r = grinder("--clear")
    assert r.returncode == 0, r.stderr
    assert asyncio.run(key()) is None and not (state / "KILL").exists()
    redis_server.kill()  # Redis unreachable: said, one line, exit 1; the local file written all the same
    r = grinder()
    assert r.returncode == 1 and "kill every instance by hand" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert (state / "KILL").exists()
