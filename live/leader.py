"""Leader election on Redis: a lease and a fencing token, so one instance of a strategy and symbol trades.

Decision 041.

Instances of one strategy and symbol on one account (`[ha]` in the config) share two Redis keys
under `grinder:ha:<account>:<strategy>:<symbol>`: `:lease`, held by the leader (`<instance>:<token>`,
`SET NX PX lease_ms`, renewed every third of the lease by a compare-and-PEXPIRE), and `:token`, a
counter every acquisition increments (`INCR`). The token is the leader's *fencing token*: the
client sends it with every request that changes the venue (`X-Grinder-Fence`, `live.client`) and
refuses to send at all (`Fenced`) when this instance does not hold a lease it can trust.

Trusted means: acquired or renewed, and the *local* deadline not passed: the monotonic time the
acquire or renew request was sent, plus the lease, less a safety margin (a fifth of it). Redis
starts its own countdown later (when the request arrives), so the local one ends first; and the
clock (`lease_clock`: CLOCK_BOOTTIME) runs on while a process is stopped (SIGSTOP) or the machine
suspended, so a process that wakes up after its lease ran out sees that before it sends anything.
A VM its hypervisor paused does not see the pause on any clock: that is decision 041's window.

A Redis restarted without persistence has lost the counter: the acquire script then seeds it from
Redis's own clock (`TIME`, in microseconds) before incrementing, so tokens stay increasing across
the restart (a token per microsecond is never reached). While Redis cannot be reached nobody can
renew or acquire: the leader's lease runs out locally and nobody trades; the venue's countdown
cancel-all (`dead_man_s`) then takes the orders that rest.

The kill switch is shared (`:kill`, no TTL): while it is set nobody acquires, and the leader's next
renewal tells it, so `grinder live kill` on any instance stops them all (none takes over).

`Leadership.run` keeps the lease (a task of its own, off the decision path); `changed` is set at
every change of role, which the adapter acts on (`live.adapter`: take over, step down).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import ccxt

from grinder.errors import ConfigError
from grinder.live.config import HaConfig, redis_on_loopback

FENCE_HEADER = "X-Grinder-Fence"
# Redis errors are written at most this often (a Redis that is down fails every attempt).
ERROR_LINE_EVERY_S = 10.0

# KEYS[1] lease, KEYS[2] token counter, KEYS[3] kill; ARGV[1] instance id, ARGV[2] lease ms. The token, nil if
# the lease is held, -1 if the kill switch is pulled (nobody leads until it is cleared).
# Numbers are written with string.format: Lua's own conversion of a 16-digit token is 1.79e+15.
ACQUIRE = """
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
if redis.call('EXISTS', KEYS[2]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[2], t[1] .. string.format('%06d', tonumber(t[2])))
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. string.format('%d', token), 'PX', ARGV[2])
return token
"""
# KEYS[1] lease, KEYS[2] kill; ARGV[1] the value we set, ARGV[2] lease ms. 1 if still ours (and extended), 2 if
# so but the kill switch is pulled (extended all the same: the leader's kill cancels under it), else 0.
RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
return 1
"""
# KEYS[1] lease; ARGV[1] the value we set. 1 if it was ours and is gone, else 0.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)  # None: not Linux


def lease_clock() -> float:
    """Seconds on the clock the lease is timed on: CLOCK_BOOTTIME where there is one (Linux), else the monotonic.

    CLOCK_MONOTONIC stops while the machine is suspended: a leader that slept past its lease would wake
    trusting it. CLOCK_BOOTTIME counts the sleep. Neither sees a VM its hypervisor paused (KVM stops the
    guest's clock with it): that pause is the window decision 041 leaves.
    """
    return time.monotonic() if _BOOTTIME is None else time.clock_gettime(_BOOTTIME)


class Fenced(ccxt.ExchangeError):
    """A request that would change the venue, refused before it was sent: this instance holds no lease it can trust.

    A ccxt error, so every handler of venue errors also keeps a fenced request from taking the
    adapter down; the port, the stop and the dead-man's switch catch it first and never retry it.
    """


def key_prefix(account: str, strategy: str, symbol: str) -> str:
    """The Redis keys' common prefix for one account, strategy and symbol."""
    return f"grinder:ha:{account}:{strategy}:{symbol}"


async def set_kill(cfg: HaConfig, prefix: str, by: str | None) -> bool:
    """`grinder live kill`: pull (`by`) or, with None, clear the kill switch every instance sees; True if it changed."""
    client = redis_client(cfg.redis_url, 2.0)
    try:
        if by is None:
            return await client.delete(f"{prefix}:kill") == 1
        return bool(await client.set(f"{prefix}:kill", by, nx=True))  # kept as it is when already pulled
    finally:
        await client.aclose()


def redis_client(url: str, timeout_s: float):
    """A redis.asyncio client for `url`: no retries of its own (a lease is time), `timeout_s` per call and connect."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    password = os.environ.get("GRINDER_REDIS_PASSWORD") or None
    if password is None and not redis_on_loopback(url):  # the config asked for TLS already (live.config)
        raise ConfigError(f"[ha] redis_url {url}: a Redis off this machine needs GRINDER_REDIS_PASSWORD")
    return aioredis.Redis.from_url(url, password=password,
                                   socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                   retry=Retry(NoBackoff(), 0), decode_responses=True)  # fmt: skip


class Leadership:
    """This instance's side of the election: acquire, renew, release, and the fence checked before every venue action.

    `instance` names this process in the lease (the adapter's epoch); `monotonic` (seconds) is the
    clock the local deadline is kept on (tests pass one they step); `client` a redis.asyncio client
    (default: one for `cfg.redis_url`).
    """

    def __init__(self, cfg: HaConfig, prefix: str, instance: str, audit, clock_ns: Callable[[], int],
                 monotonic: Callable[[], float] = lease_clock, client=None):  # fmt: skip
        self.cfg, self.instance, self.audit, self.clock_ns, self.monotonic = cfg, instance, audit, clock_ns, monotonic
        self.lease_key, self.token_key = f"{prefix}:lease", f"{prefix}:token"
        # The kill switch shared by every instance (decision 041): pulled on one, no instance leads any more.
        self.kill_key = f"{prefix}:kill"
        self.killed: str | None = None  # who pulled it, once seen in Redis (the adapter then runs its own kill)
        self.lease_s = cfg.lease_ms / 1000
        self.margin_s = self.lease_s / 5  # the local deadline ends this long before Redis's would
        self.timeout_s = min(1.0, self.lease_s / 4)  # one Redis call; a hung one must not eat the lease
        self.redis = client if client is not None else redis_client(cfg.redis_url, self.timeout_s)
        self.token: int | None = None  # the token of the lease held (None: a follower)
        self.value = ""  # what the lease key holds while ours: "<instance>:<token>"
        self.valid_until = -float("inf")  # monotonic s: the lease is trusted before this
        self.acquired_at = 0.0  # monotonic s of the last acquisition
        self.lost_reason = ""
        self.changed = asyncio.Event()  # set at every change of role
        self.fenced = 0  # venue requests refused by the fence
        self.terms = 0  # acquisitions
        self._error_line = -float("inf")
        self._stopping = False

    # ---- the fence (called on the request path: no await, no I/O) ----
    def valid(self) -> bool:
        """This instance holds the lease and its local deadline has not passed."""
        return self.token is not None and self.monotonic() < self.valid_until

    def fence(self, what: str) -> int:
        """The token to send `what` (a venue-changing request) with; Fenced, and nothing sent, unless `valid()`."""
        if self.valid():
            return self.token
        self.fenced += 1
        why = "not the leader" if self.token is None else "lease expired locally"
        self.audit.write(self.clock_ns(), "fenced", request=what, reason=why, fence=self.token)
        raise Fenced(f"{what}: not sent, {why} (fencing)")

    def recheck(self, token: str, what: str) -> None:
        """Once the request holding `token` has its connection, just before it is written: Fenced unless that lease
        still holds (a new connection can take seconds: DNS, TCP, TLS; a lease lost, or lost and won again, meanwhile
        must not let it out)."""
        if self.valid() and str(self.token) == token:
            return
        self.fenced += 1
        why = "lease lost while connecting" if self.valid() or self.token is None else "lease expired while connecting"
        self.audit.write(self.clock_ns(), "fenced", request=what, reason=why, fence=int(token))
        raise Fenced(f"{what}: not sent, {why} (fencing)")

    # ---- the lease ----
    async def _call(self, script: str, keys: list[str], args: list):
        async with asyncio.timeout(self.timeout_s * 2):
            return await self.redis.eval(script, len(keys), *keys, *args)

    def _redis_error(self, what: str, e: BaseException) -> None:
        now = self.monotonic()
        if now - self._error_line >= ERROR_LINE_EVERY_S:
            self._error_line = now
            self.audit.write(self.clock_ns(), "ha_redis_error", during=what, error=type(e).__name__,
                             detail=str(e)[:200])  # fmt: skip

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it (a new token); True if this instance leads now."""
        sent = self.monotonic()
        keys = [self.lease_key, self.token_key, self.kill_key]
        token = await self._call(ACQUIRE, keys, [self.instance, self.cfg.lease_ms])
        if token is None:
            return False
        if int(token) == -1:
            await self._seen_kill()
            return False
        self.token, self.value = int(token), f"{self.instance}:{int(token)}"
        self.valid_until = sent + self.lease_s - self.margin_s
        self.acquired_at, self.terms = sent, self.terms + 1
        self.audit.write(self.clock_ns(), "leader", fence=self.token, lease_ms=self.cfg.lease_ms, key=self.lease_key)
        self._changed()
        return True

    async def renew(self) -> bool:
        """Extend the lease if it is still ours; False (and a follower) if it is not."""
        if self.token is None:
            return False
        sent = self.monotonic()
        got = await self._call(RENEW, [self.lease_key, self.kill_key], [self.value, self.cfg.lease_ms])
        if got in (1, 2):
            if self.token is not None:  # not given up meanwhile
                self.valid_until = sent + self.lease_s - self.margin_s
            if got == 2:
                await self._seen_kill()
            return True
        self.lose("the lease is no longer ours")
        return False

    async def release(self) -> bool:
        """Give the lease up (a graceful handoff: a follower takes it at its next try); True if it was ours."""
        if self.token is None:
            return False
        value = self.value
        self.lose("released")
        try:
            return await self._call(RELEASE, [self.lease_key], [value]) == 1
        except Exception as e:  # noqa: BLE001 - Redis down: the lease runs out by itself
            self._redis_error("release", e)
            return False

    async def kill(self, by: str) -> bool:
        """Pull the kill switch for every instance (the key stays until `grinder live kill --clear`); False if Redis did
        not take it.

        Written before this instance releases its lease, so no follower can take it in between.
        """
        try:
            async with asyncio.timeout(self.timeout_s * 2):
                await self.redis.set(self.kill_key, by)
        except Exception as e:  # noqa: BLE001 - Redis down: this instance's own kill file still holds it
            self._redis_error("kill", e)
            return False
        self.killed = self.killed or by
        return True

    async def _seen_kill(self) -> None:
        if self.killed is None:
            try:
                async with asyncio.timeout(self.timeout_s * 2):
                    self.killed = await self.redis.get(self.kill_key) or "kill switch"
            except Exception:  # noqa: BLE001 - who pulled it is only for the audit line
                self.killed = "kill switch"
            self.audit.write(self.clock_ns(), "ha_killed", by=self.killed, key=self.kill_key)
            self._changed()

    def lose(self, reason: str) -> None:
        """Stop leading now (the fence refuses from here on) and say why; nothing is sent to the venue."""
        if self.token is None:
            return
        held = self.monotonic() - self.acquired_at
        self.audit.write(self.clock_ns(), "leadership_lost", fence=self.token, reason=reason, held_s=round(held, 3))
        self.token, self.value, self.valid_until = None, "", -float("inf")
        self.lost_reason = reason
        self._changed()

    def _changed(self) -> None:
        self.changed.set()

    async def step(self) -> float:
        """One round: renew (leader) or try to acquire (follower); the seconds to wait before the next."""
        if self.token is not None:
            if not self.valid():
                self.lose("lease expired locally (no renewal in time)")
                return 0.0
            try:
                if await self.renew():
                    return self.lease_s / 3
            except Exception as e:  # noqa: BLE001 - Redis unreachable or slow: try again soon, the deadline holds
                self._redis_error("renew", e)
                return max(0.0, min(self.lease_s / 10, self.valid_until - self.monotonic()))
            return 0.0
        try:
            if await self.acquire():
                return self.lease_s / 3
        except Exception as e:  # noqa: BLE001 - no Redis, no leader: nobody trades
            self._redis_error("acquire", e)
        return self.cfg.acquire_every_ms / 1000

    async def run(self, sleep=asyncio.sleep) -> None:
        """Keep the lease, or try for it, until cancelled."""
        while not self._stopping:
            await sleep(await self.step())

    async def close(self) -> None:
        """Release the lease if held, then close the Redis connection."""
        self._stopping = True
        await self.release()
        try:
            await self.redis.aclose()
        except Exception:  # noqa: BLE001 - closing a client to a Redis that is gone
            pass
