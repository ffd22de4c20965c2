"""Leader election on a real redis-server: acquire, renew, release, tokens across a restart, the local deadline."""

from __future__ import annotations

import asyncio
import time

import ccxt
import pytest

from grinder.errors import ConfigError
from grinder.live.client import GrinderBinance, client_options
from grinder.live.config import HaConfig, LiveConfig, load_config
from grinder.live.leader import Fenced, Leadership, key_prefix
from tests.live.redis_server import RedisServer, redis_server  # noqa: F401 - a fixture


class Audit:
    """The audit trail's `write`, kept in a list."""

    def __init__(self):
        self.lines: list[dict] = []

    def write(self, ts_ns: int, event: str, **kw) -> None:
        self.lines.append({"event": event, **kw})

    def events(self) -> list[str]:
        return [x["event"] for x in self.lines]


class Clock:
    """A monotonic clock the test moves (seconds)."""

    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def leadership(url: str, name: str, lease_ms: int = 10_000, clock=time.monotonic, prefix: str = "p") -> Leadership:
    cfg = HaConfig(redis_url=url, lease_ms=lease_ms, acquire_every_ms=100)
    return Leadership(cfg, key_prefix("acct", "static_grid", prefix), name, Audit(), time.time_ns, clock)


def test_one_leader_at_a_time_and_a_release_hands_over_with_a_higher_token(redis_server):  # noqa: F811
    async def main():
        a, b = leadership(redis_server.url, "a"), leadership(redis_server.url, "b")
        try:
            assert await a.acquire() and a.valid()
            assert not await b.acquire() and not b.valid()  # held: SET NX refuses
            assert await a.renew() and a.valid()
            assert not await b.renew()  # holds nothing
            first = a.token
            assert await a.release() and not a.valid()
            assert await b.acquire()
            assert not await a.renew() and not a.valid()  # a's value is gone: nothing to extend
            return first, b.token, a.audit.events(), await a.redis.get(a.lease_key)
        finally:
            await a.close()
            await b.close()

    first, second, events, lease = asyncio.run(main())
    assert second == first + 1
    assert events == ["leader", "leadership_lost"]  # the release
    assert lease == f"b:{second}"
    # Seeded from Redis's clock in microseconds: tokens of a fresh Redis start near now.
    assert abs(first - time.time() * 1e6) < 600e6


def test_tokens_keep_increasing_across_a_redis_restart_without_persistence(tmp_path):
    srv = RedisServer(tmp_path / "redis")
    srv.start()
    try:

        async def take() -> int:
            lead = leadership(srv.url, "x")
            try:
                assert await lead.acquire()
                token = lead.token
                await lead.release()
                return token
            finally:
                await lead.close()

        t1 = asyncio.run(take())
        t2 = asyncio.run(take())
        srv.kill()  # everything gone: the counter too
        srv.start()
        t3 = asyncio.run(take())
    finally:
        srv.stop()
    assert t1 < t2 < t3


def test_a_paused_process_finds_its_lease_expired_locally_and_sends_nothing(redis_server):  # noqa: F811
    clock = Clock()

    async def main():
        a = leadership(redis_server.url, "a", lease_ms=10_000, clock=clock)
        try:
            assert await a.acquire()
            clock.t += 7.9  # within the lease less its margin (a fifth: 2 s)
            token = a.fence("POST /fapi/v1/order")
            clock.t += 0.2  # past the local deadline, while Redis still holds the key (no real time passed)
            with pytest.raises(Fenced, match="lease expired locally"):
                a.fence("POST /fapi/v1/order")
            assert await a.redis.get(a.lease_key) == a.value  # Redis's lease is not what the fence trusts
            await a.step()  # the keeper notices and steps down; nothing is renewed
            return token, a.audit.lines, a.valid(), a.fenced
        finally:
            await a.close()

    token, lines, valid, fenced = asyncio.run(main())
    assert token > 0 and not valid and fenced == 1
    fence = next(x for x in lines if x["event"] == "fenced")
    assert fence["request"] == "POST /fapi/v1/order" and fence["reason"] == "lease expired locally"
    lost = next(x for x in lines if x["event"] == "leadership_lost")
    assert "expired locally" in lost["reason"]


def test_a_lease_taken_by_another_while_away_is_lost_at_the_next_renewal(redis_server):  # noqa: F811
    async def main():
        a, b = leadership(redis_server.url, "a", lease_ms=300), leadership(redis_server.url, "b", lease_ms=300)
        try:
            assert await a.acquire()
            deadline = time.monotonic() + 30
            while not await b.acquire():  # a renews nothing: its key runs out in Redis (real time)
                assert time.monotonic() < deadline, "the lease never ran out"
                await asyncio.sleep(0.05)
            renewed = await a.renew()
            return renewed, a.token, b.token, a.audit.lines
        finally:
            await a.close()
            await b.close()

    renewed, a_token, b_token, lines = asyncio.run(main())
    assert not renewed and a_token is None and b_token is not None
    assert lines[-1]["event"] == "leadership_lost" and lines[-1]["reason"] == "the lease is no longer ours"


def test_with_redis_down_the_leader_steps_down_at_its_deadline_and_nobody_acquires(tmp_path):
    srv = RedisServer(tmp_path / "redis")
    srv.start()
    clock = Clock()

    async def main():
        a, b = leadership(srv.url, "a", lease_ms=2000, clock=clock), leadership(srv.url, "b", lease_ms=2000)
        try:
            assert await a.acquire()
            srv.kill()
            wait = await a.step()  # the renewal fails: still leading until the deadline, tried again soon
            still = a.valid()
            clock.t += 1.7  # past lease less margin (1.6 s)
            await a.step()
            await b.step()  # the follower cannot acquire either
            return wait, still, a.valid(), b.valid(), a.audit.events(), b.audit.events()
        finally:
            await a.close()
            await b.close()

    try:
        wait, still, a_valid, b_valid, a_events, b_events = asyncio.run(main())
    finally:
        srv.stop()
    assert 0 < wait <= 0.2 and still
    assert not a_valid and not b_valid
    assert a_events[:3] == ["leader", "ha_redis_error", "leadership_lost"]
    assert b_events == ["ha_redis_error"]


def test_the_client_fences_venue_changing_requests_and_lets_reads_through():
    class NotLeading:
        token = None

        def __init__(self):
            self.asked = []

        def valid(self):
            return False

        def fence(self, what):
            self.asked.append(what)
            raise Fenced(f"{what}: not sent, not the leader (fencing)")

    async def main():
        ex = GrinderBinance(client_options("http://127.0.0.1:9", "k", "s"))
        ex.fence = NotLeading()
        try:
            changing = [("POST", "/fapi/v1/order"), ("DELETE", "/fapi/v1/order"), ("DELETE", "/fapi/v1/allOpenOrders"),
                        ("POST", "/fapi/v1/countdownCancelAll")]  # fmt: skip
            for method, path in changing:
                with pytest.raises(Fenced):
                    await ex.fetch(f"http://127.0.0.1:9{path}?symbol=BTCUSDT&signature=x", method, {}, "")
            # Reads and the user stream's key are not venue actions: they go (and fail: nothing listens).
            for method, path in [("GET", "/fapi/v1/openOrders"), ("POST", "/fapi/v1/listenKey")]:
                with pytest.raises(ccxt.NetworkError):
                    await ex.fetch(f"http://127.0.0.1:9{path}", method, {}, "")
            return ex.fence.asked, ex.first_request_ns
        finally:
            await ex.close()

    asked, first = asyncio.run(main())
    assert asked == ["POST /fapi/v1/order", "DELETE /fapi/v1/order", "DELETE /fapi/v1/allOpenOrders",
                     "POST /fapi/v1/countdownCancelAll"]  # fmt: skip  # the query (signature) never in the audit
    assert first  # a read was marked as sent; no fenced request was


def test_the_ha_table_is_checked_when_the_config_is_read(tmp_path):
    base = {"strategy": "static_grid", "params": {}, "symbol": "BTCUSDT"}
    cfg = LiveConfig(**base, ha={"redis_url": "redis://127.0.0.1:6390/2", "lease_ms": 3000})
    assert cfg.ha.lease_ms == 3000 and cfg.ha.acquire_every_ms == 1000 and LiveConfig(**base).ha is None
    bad = tmp_path / "bad.toml"
    for table, why in [('redis_url = "redis://u:pw@127.0.0.1"', "no credentials in the URL"),
                       ('redis_url = "http://127.0.0.1:6379"', "expected redis://host"),
                       ('redis_url = "rediss://h"\nlease_ms = 100', "lease_ms"),
                       ('redis_url = "rediss://h"\nleader = true', "leader")]:  # fmt: skip
        bad.write_text(f'strategy = "static_grid"\nsymbol = "BTCUSDT"\nparams = {{}}\n[ha]\n{table}\n')
        with pytest.raises(ConfigError, match=why):
            load_config(bad)
    with pytest.raises(ValueError, match="paper mode"):
        LiveConfig(**base, mode="paper", ha={"redis_url": "redis://127.0.0.1"})
