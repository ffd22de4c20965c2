"""A stop that leaves nothing of ours resting, and the venue's dead-man's switch.

`cancel_everything` is the one way the adapter takes its orders off the venue when it stops
(SIGTERM, a failed task, the kill switch). Within a budget of wall time it goes round: list the
symbol's open orders; if none is ours, done. If every one listed is ours, the venue's cancel-all
endpoint (`DELETE /fapi/v1/allOpenOrders`) goes first: one request however many orders rest. It
also takes orders that are not ours, so with any foreign order listed (an operator's, another
instance's) it is not used, and ours are cancelled one by one by client id (through the port: in
the audit trail and the budget). When the list cannot be had, the orders the adapter knows are
cancelled by id all the same, and the list is asked for again. Each round that met a failure
waits a backoff. What is still ours when the budget is spent is the outcome's `left`; a stop that
could not list the venue's orders after its last cancel is not `verified`, and not clean either.

`DeadMan` keeps Binance's countdown cancel-all (`POST /fapi/v1/countdownCancelAll`) armed while
the adapter runs: re-armed every third of the countdown, so if the process dies (kill -9, the
machine, the network) the venue cancels every open order of the symbol once the countdown runs
out. If it cannot be armed for a whole countdown, the switch may be gone: `DeadManLost` is raised
and the adapter stops (its orders cancelled). A clean stop disarms it (countdown 0); a stop that
left orders keeps it armed, so the venue takes them when it runs out.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import ccxt

from grinder.errors import VenueError
from grinder.live.audit import AuditLog
from grinder.live.leader import Fenced
from grinder.live.port import ExchangePort, PortFailed, PortRefused
from grinder.live.retry import Backoff
from grinder.live.venue_watch import EXIT_VENUE_DOWN

# `grinder live`'s exit code when the stop may have left orders of ours on the venue (1: a crash, 2:
# an operator's error, 3: a session the venue ended, live.venue_watch).
EXIT_ORDERS_LEFT = 4
# Waits between the stop's rounds after a failure: short (the budget is seconds), growing, jittered.
STOP_BACKOFF = Backoff(base_s=0.1, cap_s=2.0, max_attempts=1_000_000)
# Errors of a request the venue may answer differently if asked again (a 5xx, a timeout, a reset).
RETRYABLE = (TimeoutError, ccxt.NetworkError, ccxt.ExchangeError)


@dataclass(frozen=True)
class StopOutcome:
    """What a stop's cancels left: `left` ids of ours maybe still open; `verified`: the venue's list said so."""

    left: tuple[str, ...]
    verified: bool
    rounds: int = 0

    @property
    def clean(self) -> bool:
        """Nothing of ours is left, and the venue's own list said so."""
        return self.verified and not self.left

    def message(self) -> str:
        """One line for an operator: what may be left on the venue, or that nothing is."""
        if self.clean:
            return "stopped clean: no order of ours is open on the venue"
        if self.left:
            return (f"orders of ours may still be open on the venue: {', '.join(self.left)} "
                    f"(audit: orders_left; cancel them by hand or let the dead-man's switch take them)")  # fmt: skip
        return "the venue's open orders could not be listed after the cancels: none of ours is known left, unverified"


async def cancel_everything(
    ex: ccxt.Exchange,
    port: ExchangePort,
    audit: AuditLog,
    now_ns: Callable[[], int],
    symbol: str,
    ours: Callable[[list[dict]], list[str]],
    known: Iterable[str],
    budget_s: float,
    *,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    backoff: Backoff = STOP_BACKOFF,
    rng: random.Random | None = None,
    leading: Callable[[], bool] | None = None,
) -> StopOutcome:
    """Cancel every open order of ours on `symbol` (ccxt's) within `budget_s` seconds of `monotonic` time.

    `ours` picks the client ids of ours out of the venue's open orders (ccxt's order dicts);
    `known` are the ids the adapter holds open or in flight (what is cancelled while the venue
    cannot list). Writes `stop_cancels` first and `stop_clean` or `orders_left` last.

    `leading` (leader election, live.leader): while it says False nothing is cancelled (a cancel
    is the leader's to send): the venue's list is asked once, and what of ours it shows is left.
    """
    rng = rng or random.Random()
    deadline = monotonic() + budget_s
    suspects = set(known)  # ours and maybe open: the venue's last list of ours, less those cancelled since
    audit.write(now_ns(), "stop_cancels", known=len(suspects), budget_s=budget_s)
    cancelled: set[str] = set()  # ids the venue said it cancelled (or had no longer open)
    listed_last = False  # the last thing asked of the venue was its list, and it answered
    failures, rounds, tried_all, foreign_seen = 0, 0, False, -1
    while deadline - monotonic() > 0:
        rounds += 1
        failed = False
        try:
            async with asyncio.timeout(max(deadline - monotonic(), 0.0)):
                listed = await ex.fetch_open_orders(symbol)
        except RETRYABLE as e:
            failed, listed, listed_last = True, None, False
            audit.write(now_ns(), "open_orders_failed", round=rounds, error=type(e).__name__, detail=str(e)[:200])
        if listed is not None:
            mine = ours(listed)
            suspects, listed_last = set(mine), True
            if not mine:
                audit.write(now_ns(), "stop_clean", rounds=rounds)
                return StopOutcome((), True, rounds)
            if deadline - monotonic() <= 0:
                break
        if leading is not None and not leading():
            if listed is not None:  # what of ours rests is the leader's (or the countdown's) to cancel
                audit.write(now_ns(), "stop_not_leader", ours=sorted(suspects))
                break
            failures += 1  # the list failed: ask again, never cancel
            wait = min(backoff.delay(failures, rng), deadline - monotonic())
            if wait > 0:
                await sleep(wait)
            continue
        if listed is not None:
            foreign = len(listed) - len(mine)
            if foreign and foreign != foreign_seen:
                audit.write(now_ns(), "cancel_all_skipped", foreign=foreign, ours=len(mine))
            foreign_seen = foreign
            if not foreign and not tried_all:
                # Ours only: one request for all. Listed again at once; what it left goes one by one.
                tried_all, listed_last = True, False
                try:
                    async with asyncio.timeout(max(deadline - monotonic(), 0.0)):
                        await ex.cancel_all_orders(symbol)
                    audit.write(now_ns(), "cancel_all_sent", ours=len(mine))
                    continue
                except Fenced:
                    continue  # the lease ran out (the fence wrote it): the next round stops
                except RETRYABLE as e:
                    failed = True
                    audit.write(now_ns(), "cancel_all_failed", error=type(e).__name__, detail=str(e)[:200])
            else:
                tried_all = False
        targets = sorted(suspects)
        listed_last = False
        try:
            async with asyncio.timeout(max(deadline - monotonic(), 0.0)):
                done = await asyncio.gather(*(_cancel_one(port, cid) for cid in targets))
        except TimeoutError:
            done = [False] * len(targets)
        gone = {cid for cid, ok in zip(targets, done, strict=True) if ok}
        # One the venue said it cancelled and listed again is not gone: wait before asking again.
        failed = failed or len(gone) < len(targets) or bool(gone & cancelled)
        suspects -= gone
        cancelled |= gone
        if failed:
            failures += 1
            wait = min(backoff.delay(failures, rng), deadline - monotonic())
            if wait > 0:
                await sleep(wait)
    left = tuple(sorted(suspects))
    audit.write(now_ns(), "orders_left", client_ids=list(left), listed=listed_last, rounds=rounds)
    return StopOutcome(left, listed_last and not left, rounds)


async def _cancel_one(port: ExchangePort, client_id: str) -> bool:
    """Cancel one order by client id through the port; True if the venue has it no longer open."""
    try:
        await port.cancel(client_id=client_id)
    except (PortFailed, PortRefused, *RETRYABLE):
        return False  # the port wrote why
    return True


class DeadManLost(VenueError):
    """The venue's countdown cancel-all could not be armed for a whole countdown: no trading without it."""

    exit_code = EXIT_VENUE_DOWN  # the venue ended the session, as when it stays down


@dataclass
class DeadMan:
    """Keeps Binance's countdown cancel-all armed for one symbol (`symbol_id` as the venue spells it).

    `countdown_s` is the countdown the venue runs (wall time); it is re-armed every third of it.
    Arming is a signed private request through the client (ccxt's implicit endpoint).
    """

    ex: ccxt.Exchange
    audit: AuditLog
    now_ns: Callable[[], int]
    symbol_id: str
    countdown_s: float
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    backoff: Backoff = STOP_BACKOFF
    rng: random.Random | None = None
    armed: bool = False  # the last request to arm it was answered
    arms: int = 0  # answered arming requests

    async def _send(self, countdown_ms: int) -> None:
        async with asyncio.timeout(max(1.0, self.countdown_s / 3)):
            await self.ex.fapiPrivatePostCountdownCancelAll({"symbol": self.symbol_id, "countdownTime": countdown_ms})

    async def arm(self) -> bool:
        """Arm (or re-arm) the countdown; False if the venue did not answer it (written to the audit trail)."""
        try:
            await self._send(round(self.countdown_s * 1000))
        except Fenced:
            raise  # no lease, no countdown: the leader's to keep (live.leader)
        except RETRYABLE as e:
            self.armed = False
            self.audit.write(self.now_ns(), "dead_man_arm_failed", error=type(e).__name__, detail=str(e)[:200])
            return False
        if not self.armed:  # the first arm and each recovery, not every re-arm
            self.audit.write(self.now_ns(), "dead_man_armed", countdown_s=self.countdown_s)
        self.armed, self.arms = True, self.arms + 1
        return True

    async def disarm(self) -> bool:
        """Cancel the countdown (countdownTime 0); False if the venue did not answer (it stays armed there)."""
        try:
            await self._send(0)
        except Fenced:
            return False  # not the leader any more: the new leader keeps the countdown
        except RETRYABLE as e:
            self.audit.write(self.now_ns(), "dead_man_disarm_failed", error=type(e).__name__, detail=str(e)[:200])
            return False
        self.armed = False
        self.audit.write(self.now_ns(), "dead_man_disarmed")
        return True

    async def keep(self) -> None:
        """Arm now and every third of the countdown; retry a failed arm; DeadManLost once a countdown passed unarmed."""
        rng = self.rng or random.Random()
        since = self.monotonic()  # when it was last known armed (or this began: no order rests before)
        failures = 0
        while True:
            if await self.arm():
                since, failures = self.monotonic(), 0
                await self.sleep(self.countdown_s / 3)
                continue
            failures += 1
            if self.monotonic() - since >= self.countdown_s:
                raise DeadManLost(f"the venue's countdown cancel-all (dead_man_s = {self.countdown_s:g}) could not be "
                                  f"armed for {self.monotonic() - since:.0f} s: stopped trading")  # fmt: skip
            await self.sleep(min(self.backoff.delay(failures, rng), self.countdown_s / 6))
