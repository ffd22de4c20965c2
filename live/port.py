"""The exchange port: every order the adapter creates or cancels goes through here, once.

A create is charged to the daily budget and written to the audit trail before it leaves. It is
retried only on errors that may be temporary, with backoff and jitter, never sooner than a
Retry-After the venue sent. After an *ambiguous* failure (a timeout, a dropped connection, a 5xx:
the venue may have accepted the order) the port looks the order up by its client order id before
sending it again, so a retried create never makes two orders. Errors that will not go away (a
post-only order that would take, bad credentials, a filter) are not retried. Repeated failures
open the circuit breaker: no new orders until a trial request succeeds after the cool-down; only
a create that is sent is the trial (`prewarm` and `refusal` only ask). A create that is refused
(breaker, budget) is counted, not written one by one: one "creates_refused" line per interval.
Cancels are still sent while the breaker is open (they only reduce risk).

The clock, the sleep and the random generator are the caller's (the live process passes the real
ones; tests pass fakes), so the same code is tested without waiting.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import ccxt

from grinder.live.audit import AuditLog
from grinder.live.budget import DailyBudget
from grinder.live.client_ids import ClientOrderId
from grinder.live.leader import Fenced, Leadership
from grinder.live.retry import Backoff, CircuitBreaker

# Rejections that will not change by trying again.
PERMANENT = (ccxt.InvalidOrder, ccxt.AuthenticationError, ccxt.PermissionDenied, ccxt.InsufficientFunds,
             ccxt.BadSymbol, ccxt.BadRequest, ccxt.AccountSuspended)  # fmt: skip
RATE_LIMITED = (ccxt.DDoSProtection, ccxt.RateLimitExceeded)  # refused before execution: safe to resend
# Refused creates are written to the audit trail as counts, at most one line per this long.
REFUSED_EVERY_NS = 10_000_000_000
NOT_LEADER = "not the leader"  # a refusal's reason under leader election (live.leader)


def refusal_kind(reason: str) -> str:
    """A refusal's reason (`ExchangePort.refusal`, with its figures) as one of a few fixed names (a metric's label)."""
    if reason.startswith("circuit breaker"):
        return "breaker_open"
    if reason.startswith("daily order actions"):
        return "budget_actions"
    if reason.startswith("daily notional"):
        return "budget_notional"
    if reason.startswith("state not recorded"):
        return "state_not_recorded"
    if reason.startswith(NOT_LEADER):
        return "not_leader"
    return "other"


class PortRefused(Exception):
    """The port did not send the request (breaker open, budget used up); the reason is the message."""


class PortFailed(Exception):
    """The request failed for good; `unknown` is True when the venue may still hold the order."""

    def __init__(self, msg: str, unknown: bool = False):
        super().__init__(msg)
        self.unknown = unknown


@dataclass
class ExchangePort:
    """Creates and cancels one symbol's orders through a ccxt (pro) binanceusdm client."""

    ex: ccxt.Exchange  # async ccxt client
    symbol: str  # ccxt symbol, e.g. "BTC/USDT:USDT"
    audit: AuditLog
    budget: DailyBudget
    now_ns: Callable[[], int]
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    backoff: Backoff = Backoff()
    breaker: CircuitBreaker | None = None
    rng: random.Random | None = None
    timeout_s: float = 5.0
    # Leader election (live.leader): only while this instance leads is anything sent (None: no election).
    leadership: Leadership | None = None

    def __post_init__(self) -> None:
        self.breaker = self.breaker or CircuitBreaker()
        self.rng = self.rng or random.Random()
        self._breaker_seen = self.breaker.state  # the last state the audit trail was told of
        self._refused: dict[str, int] = {}  # refused creates per reason, not yet in the audit trail
        self._refused_since_ns = 0  # time of the first of them
        self._refused_line_ns = -REFUSED_EVERY_NS  # time of the last "creates_refused" line
        # Refused creates since start by `refusal_kind`, those already written out (live.metrics adds `_refused`).
        self.refused_total: dict[str, int] = {}

    def refusal(self, now_ns: int, notional: float) -> str | None:
        """Why a create of this notional would not be sent now (breaker, budget, state files), or None.

        Asks only: nothing is taken (not the breaker's trial), charged or written.
        """
        if self.leadership is not None and not self.leadership.valid():
            return NOT_LEADER
        if not self.breaker.allows(now_ns / 1e9):
            return "circuit breaker open"
        reason = self.budget.allows(now_ns, notional)
        if self.budget.error or self.audit.error:
            reason = f"state not recorded ({self.budget.error or self.audit.error}): no new orders"
        return reason

    def refuse(self, now_ns: int, reason: str) -> PortRefused:
        """Count a create not sent for `reason` (no client id taken) and return the exception to raise.

        The audit trail gets one "creates_refused" line per REFUSED_EVERY_NS with the counts by
        reason, not one line per refusal: a breaker open for minutes refuses every decision.
        """
        if not self._refused:
            self._refused_since_ns = now_ns
        self._refused[reason] = self._refused.get(reason, 0) + 1
        self.flush_refused(now_ns)
        return PortRefused(reason)

    def flush_refused(self, now_ns: int, force: bool = False) -> None:
        """Write the refused creates counted so far if an interval has passed since the last such line (or `force`)."""
        if self._refused and (force or now_ns - self._refused_line_ns >= REFUSED_EVERY_NS):
            self.audit.write(now_ns, "creates_refused", counts=self._refused, since_ns=self._refused_since_ns,
                             breaker=self.breaker.state)  # fmt: skip
            for reason, n in self._refused.items():
                kind = refusal_kind(reason)
                self.refused_total[kind] = self.refused_total.get(kind, 0) + n
            self._refused, self._refused_line_ns = {}, now_ns

    def _breaker_news(self) -> None:
        """One audit line whenever the breaker has changed state (open, half open, closed)."""
        b = self.breaker
        if b.state != self._breaker_seen:
            self._breaker_seen = b.state
            self.audit.write(self.now_ns(), "breaker", state=b.state, failures=b.failures)

    def _retry_after_s(self) -> float | None:
        headers = getattr(self.ex, "last_response_headers", None) or {}
        for k, v in headers.items():
            if k.lower() == "retry-after":
                try:
                    return float(v)
                except ValueError:
                    return None
        return None

    def prewarm(self, price: float, qty: float) -> None:
        """Run a create's and a cancel's checks and records without sending or writing anything.

        Called just before a decision's tick, so the path a request takes is in the CPU's caches.
        """
        now = self.now_ns()
        self.refusal(now, price * qty)  # asks only: the half-open trial is for a real create
        self.audit.render(now, "create", client_id="w", side="buy", price=price, qty=qty)
        self.audit.render(now, "cancel", order_id=None, client_id="w")
        self.budget.prewarm()
        self.audit.prewarm()

    async def _call(self, coro_fn: Callable[[], Awaitable[dict]]) -> dict:
        # Runs in the caller's task (wait_for would schedule a new one: a trip round the event loop
        # between the decision and its request).
        async with asyncio.timeout(self.timeout_s):
            return await coro_fn()

    async def _lookup(self, cid: str) -> dict | None:
        """The order with this client id, None if the venue has none; raises on a failed lookup."""
        try:
            return await self._call(lambda: self.ex.fetch_order(None, self.symbol, {"clientOrderId": cid}))
        except ccxt.OrderNotFound:
            return None

    async def create(self, cid: ClientOrderId, side: str, price: float, qty: float) -> dict:
        """Place a post-only limit order; returns ccxt's order. PortRefused if not sent, PortFailed if it failed."""
        now = self.now_ns()
        reason = self.refusal(now, price * qty)
        if reason is not None:
            raise self.refuse(now, reason)
        self.breaker.acquire(now / 1e9)  # half open: this create is the trial
        self._breaker_news()
        self.budget.charge(now, price * qty)
        self.audit.write(now, "create", client_id=str(cid), side=side, price=price, qty=qty)
        attempt = 0
        ambiguous = False  # a previous try may have reached the venue
        while True:
            attempt += 1
            try:
                if ambiguous:
                    found = await self._lookup(str(cid))
                    if found is not None:
                        self.breaker.success()
                        self._breaker_news()
                        self.audit.write(self.now_ns(), "created", client_id=str(cid), order_id=found["id"],
                                         found_by_lookup=True)  # fmt: skip
                        return found
                order = await self._call(lambda: self.ex.create_post_only(self.symbol, side, qty, price, str(cid)))
                self.breaker.success()
                self._breaker_news()
                self.audit.write(self.now_ns(), "created", client_id=str(cid), order_id=order["id"])
                return order
            except Fenced as e:
                # The lease ran out after the check above (the fence wrote why): never retried, and
                # not the venue's failure (the breaker is left as it was). Sent before only if ambiguous.
                raise PortFailed(f"{cid}: {e}", unknown=ambiguous) from e
            except PERMANENT as e:
                # The venue answered: for the breaker that is a success (a half-open trial rejected as
                # post-only-would-take must close it, or it waits out another cool-down).
                self.breaker.success()
                self._breaker_news()
                self.audit.write(self.now_ns(), "create_rejected", client_id=str(cid), error=str(e))
                raise PortFailed(f"{cid}: rejected: {e}") from e
            except RATE_LIMITED as e:
                wait = self.backoff.delay(attempt, self.rng, self._retry_after_s())
                self._failed(cid, e, attempt, wait)
            except (TimeoutError, ccxt.NetworkError, ccxt.ExchangeError) as e:
                # Timeouts, dropped connections, 5xx: the venue may hold the order now.
                ambiguous = True
                wait = self.backoff.delay(attempt, self.rng, self._retry_after_s())
                self._failed(cid, e, attempt, wait)
            if self.backoff.gives_up(attempt) or not self.breaker.allows(self.now_ns() / 1e9):
                self.audit.write(
                    self.now_ns(), "create_failed", client_id=str(cid), attempts=attempt, unknown=ambiguous
                )
                raise PortFailed(f"{cid}: gave up after {attempt} tries", unknown=ambiguous)
            await self.sleep(wait)

    def _failed(self, cid: ClientOrderId, e: Exception, attempt: int, wait: float) -> None:
        self.breaker.failure(self.now_ns() / 1e9)
        self._breaker_news()
        self.audit.write(self.now_ns(), "create_error", client_id=str(cid), attempt=attempt,
                         error=type(e).__name__, detail=str(e)[:300], retry_in_s=round(wait, 3))  # fmt: skip

    async def cancel(self, order_id: str | None = None, client_id: str | None = None) -> dict | None:
        """Cancel an order (by venue id or client id); None if the venue no longer has it open.

        Sent even with the breaker open, today's actions used up or the state files unwritable: a
        cancel only lowers risk.
        """
        now = self.now_ns()
        if self.leadership is not None and not self.leadership.valid():
            # A cancel is a venue action too: only the leader's (the fence refuses it and writes why).
            raise PortRefused(str(_fenced(self.leadership, f"cancel {order_id or client_id}")))
        self.budget.charge(now, always=True)  # counted, never held back: a cancel only lowers risk
        self.audit.write(now, "cancel", order_id=order_id, client_id=client_id)
        for attempt in range(1, self.backoff.max_attempts + 1):
            try:
                out = await self._call(
                    lambda: (
                        self.ex.cancel_order(order_id, self.symbol)
                        if client_id is None
                        else self.ex.cancel_by_client_id(self.symbol, client_id)
                    )
                )
                self.audit.write(self.now_ns(), "cancelled", order_id=order_id, client_id=client_id)
                return out
            except ccxt.OrderNotFound:
                self.audit.write(self.now_ns(), "cancel_not_open", order_id=order_id, client_id=client_id)
                return None
            except Fenced as e:  # the lease ran out since the check above: not retried
                raise PortRefused(str(e)) from e
            except PERMANENT as e:
                raise PortFailed(f"cancel {order_id or client_id}: rejected: {e}") from e
            except (TimeoutError, ccxt.NetworkError, ccxt.ExchangeError) as e:
                wait = self.backoff.delay(attempt, self.rng, self._retry_after_s())
                self.audit.write(self.now_ns(), "cancel_error", order_id=order_id, client_id=client_id,
                                 attempt=attempt, error=type(e).__name__, retry_in_s=round(wait, 3))  # fmt: skip
                if attempt < self.backoff.max_attempts:
                    await self.sleep(wait)
        raise PortFailed(f"cancel {order_id or client_id}: gave up after {self.backoff.max_attempts} tries")


def _fenced(leadership: Leadership, what: str) -> Fenced:
    """The fence's refusal of `what` (audited by it), as an exception to raise."""
    try:
        leadership.fence(what)
    except Fenced as e:
        return e
    return Fenced(f"{what}: not sent, the lease lapsed while it was checked")
