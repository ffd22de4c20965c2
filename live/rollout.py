"""Reconciliation rollout modes: what a reconciliation may do about what it found (decision 029).

The seed roadmap's staged rollout (LC-18), from looking only to acting:

- detect_only: the findings (orphans, missing orders, position drift) in the audit trail; no actions planned.
- plan_only: the plan too (the actions execute_flatten would take), none taken.
- blocked: the plan, every action refused and counted (`plan_blocked`).
- execute_cancel_all: orphans are cancelled (the default: what the adapter always did).
- execute_flatten: also a confirmed position drift is closed with a reduce-only IOC limit order at a
  price at most `flatten_slippage_bps` through the best price, at most `max_flatten_qty`, within
  the daily budget.

Every cycle writes one `reconcile_plan` line: its id (the instance epoch and a count: unique on the
account), the mode, the findings and each planned action with what this mode does with it
("execute", "plan_only", "blocked", or "not_in_mode" for a flatten under execute_cancel_all). Each
executed action writes `plan_action` with the plan id and its result.

Position drift is handled as `live.reconcile` says in every mode: the venue's position is adopted
into the ledger (the venue is the truth about money) at once on start and after a user-stream drop,
otherwise once the next reconciliation still sees it. Only an adopted (confirmed) drift is planned
for a flatten; its fills come back on the user stream under one of our client ids and are booked
into the ledger, which then holds the position the strategy had before the drift.

The kill switch (`live.kill`) plans a flatten of the whole venue position the same way.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import ccxt

from grinder.book.l2 import EMPTY
from grinder.live.port import PortFailed
from grinder.live.reconcile import Mismatch, venue_position

MODES = ("detect_only", "plan_only", "blocked", "execute_cancel_all", "execute_flatten")
# What each mode does with a planned action of each kind.
_THEN = {
    "plan_only": {"cancel_orphan": "plan_only", "flatten": "plan_only"},
    "blocked": {"cancel_orphan": "blocked", "flatten": "blocked"},
    "execute_cancel_all": {"cancel_orphan": "execute", "flatten": "not_in_mode"},
    "execute_flatten": {"cancel_orphan": "execute", "flatten": "execute"},
}


@dataclass(frozen=True)
class Action:
    """One repair a plan holds: cancel an orphan (`client_id`), or flatten `qty` base units by a `side` order."""

    kind: str  # "cancel_orphan" or "flatten"
    then: str  # what this mode does with it: execute, plan_only, blocked, not_in_mode
    client_id: str | None = None
    side: str | None = None  # flatten: "buy" or "sell"
    qty: float = 0.0  # flatten: base units, already bounded by max_flatten_qty and whole lots
    wanted: float = 0.0  # flatten: what would close the drift (base units), before the bound

    def as_dict(self) -> dict:
        """The action as the audit trail holds it."""
        if self.kind == "cancel_orphan":
            return {"kind": self.kind, "client_id": self.client_id, "then": self.then}
        return {"kind": self.kind, "side": self.side, "qty": self.qty, "wanted": self.wanted, "then": self.then}


@dataclass(frozen=True)
class Plan:
    """What one reconciliation found and what it does about it."""

    plan_id: str
    mode: str
    findings: tuple[Mismatch, ...]
    actions: tuple[Action, ...]


def flattenable(drift: float, venue: float) -> float:
    """The part of a position `drift` (venue less ledger, base units) a reduce-only order can close.

    Only while the venue's position `venue` leans the same way as the drift: a reduce-only order
    brings a position towards zero and never past it. A drift the other way (something closed part
    of the strategy's position) is adopted only: restoring it would mean opening a position.
    """
    if drift * venue <= 0.0:
        return 0.0
    return math.copysign(min(abs(drift), abs(venue)), drift)


def flatten_qty(close: float, max_qty: float, lot: float) -> float:
    """Base units a flatten sends to close `close` (its size): at most `max_qty`, whole lots, rounded down."""
    q = min(abs(close), max_qty)
    return math.floor(q / lot + 1e-9) * lot if lot > 0 else 0.0


def make_plan(plan_id: str, mode: str, found: list[Mismatch], close: float, max_flatten_qty: float,
              lot: float) -> Plan:  # fmt: skip
    """The plan for `found` in `mode`; `close` is the signed position to close (base units, + long; 0: none).

    detect_only plans nothing. The other modes plan the same actions (those execute_flatten
    would take) and differ only in what they then do with them.
    """
    if mode not in MODES:
        raise ValueError(f"unknown rollout mode {mode!r}")
    if mode == "detect_only":
        return Plan(plan_id, mode, tuple(found), ())
    then = _THEN[mode]
    actions = [Action("cancel_orphan", then["cancel_orphan"], client_id=m.client_id)
               for m in found if m.kind == "orphan"]  # fmt: skip
    if abs(close) >= 0.5 * lot:
        actions.append(Action("flatten", then["flatten"], side="sell" if close > 0 else "buy",
                              qty=flatten_qty(close, max_flatten_qty, lot), wanted=abs(close)))  # fmt: skip
    return Plan(plan_id, mode, tuple(found), tuple(actions))


def write_plan(audit, now_ns: int, plan: Plan, event: str = "reconcile_plan", **extra) -> None:
    """The plan as one audit line (`event`): id, mode, findings and actions."""
    audit.write(now_ns, event, plan_id=plan.plan_id, mode=plan.mode,
                findings=[{"kind": m.kind, "client_id": m.client_id, "detail": m.detail} for m in plan.findings],
                actions=[a.as_dict() for a in plan.actions], **extra)  # fmt: skip


def flatten_price(side: str, best_bid: float, best_ask: float, tick: float, slippage_bps: float) -> float:
    """The IOC limit of a flatten: `slippage_bps` through the best price on the side it takes, on the tick grid.

    A sell takes bids: at least best bid x (1 - bps); a buy takes asks: at most best ask x (1 + bps).
    Rounded towards the book (never further through than the bound).
    """
    if side == "sell":
        return math.ceil(best_bid * (1 - slippage_bps / 1e4) / tick - 1e-9) * tick
    return math.floor(best_ask * (1 + slippage_bps / 1e4) / tick + 1e-9) * tick


class Rollout:
    """Runs a plan's actions for one adapter (`grinder.live.adapter.LiveAdapter`) as its mode says."""

    def __init__(self, adapter):
        self.a = adapter
        self.configured = adapter.cfg.rollout
        self.plans = 0
        self.blocked_total: dict[str, int] = {}  # actions refused in blocked mode since start, per kind

    @property
    def mode(self) -> str:
        """The mode in force: the configured one, but a follower under leader election plans at most (live.leader)."""
        if self.configured != "detect_only" and not self.a.may_act():
            return "plan_only"
        return self.configured

    def next_id(self) -> str:
        """A plan id unique on the account: this instance's epoch and a count."""
        self.plans += 1
        return f"{self.a.ids.epoch}-{self.plans}"

    async def cycle(self, found: list[Mismatch], close: float) -> Plan:
        """Plan this reconciliation's repairs, write the plan, then do what the mode allows; returns the plan."""
        a = self.a
        # An order whose create reply is still on its way can be listed by the venue before the
        # adapter marks it open (reconcile compares with the acknowledged ones): known, so no orphan.
        found = [m for m in found if m.kind != "orphan" or m.client_id not in a.orders]
        plan = make_plan(self.next_id(), self.mode, found, close, a.cfg.max_flatten_qty, a.lot)
        write_plan(a.audit, a.clock_ns(), plan)
        await self.execute(plan)
        return plan

    async def execute(self, plan: Plan) -> None:
        """Take the plan's actions its mode allows (orphan cancels first), count the blocked ones."""
        a = self.a
        blocked: dict[str, int] = {}
        for act in plan.actions:
            if act.then == "blocked":
                blocked[act.kind] = blocked.get(act.kind, 0) + 1
            elif act.then == "execute" and act.kind == "cancel_orphan":
                await self._cancel(plan.plan_id, act.client_id)
        for act in plan.actions:
            if act.then == "execute" and act.kind == "flatten":
                await self.flatten(plan.plan_id, act)
        if blocked:
            for k, n in blocked.items():
                self.blocked_total[k] = self.blocked_total.get(k, 0) + n
            a.audit.write(a.clock_ns(), "plan_blocked", plan_id=plan.plan_id, counts=blocked,
                          total=dict(self.blocked_total))  # fmt: skip

    async def _cancel(self, plan_id: str, client_id: str) -> None:
        a = self.a
        try:
            out = await a.port.cancel(client_id=client_id)
            result = "cancelled" if out is not None else "not_open"
        except (PortFailed, ccxt.NetworkError, ccxt.ExchangeError) as e:
            result = f"failed: {str(e)[:200]}"
        a.audit.write(a.clock_ns(), "plan_action", plan_id=plan_id, kind="cancel_orphan", client_id=client_id,
                      result=result)  # fmt: skip

    async def _best(self) -> tuple[float, float]:
        """Best bid and ask (quote per base): the adapter's book if fresh, else the venue's REST snapshot."""
        a = self.a
        bb, ba = a.top[0], a.top[1]
        if a._book_fresh() and bb != EMPTY and ba != EMPTY:
            return bb * a.tick, ba * a.tick
        ob = await a.ex.fetch_order_book(a.symbol, 5)
        if not ob["bids"] or not ob["asks"]:
            raise ValueError("the venue's book has an empty side")
        return float(ob["bids"][0][0]), float(ob["asks"][0][0])

    async def flatten(self, plan_id: str, act: Action) -> dict:
        """Send one reduce-only IOC limit order for `act`, within the daily budget; its result (also audited).

        Sent with the breaker open (it lowers risk, as cancels do), never beyond the budget, once:
        what it left is the next plan's. Its fills come on the user stream under our client id.
        """
        a = self.a

        def done(result: str, **kw) -> dict:
            a.audit.write(a.clock_ns(), "plan_action", plan_id=plan_id, kind="flatten", side=act.side, qty=act.qty,
                          result=result, **kw)  # fmt: skip
            return {"result": result, **kw}

        if act.qty < 0.5 * a.lot:
            return done("refused", reason=f"max_flatten_qty {a.cfg.max_flatten_qty:g} is below one lot ({a.lot:g})")
        try:
            bid, ask = await self._best()
        except (ccxt.NetworkError, ccxt.ExchangeError, ValueError) as e:
            return done("refused", reason=f"no price to bound it: {str(e)[:200]}")
        price = flatten_price(act.side, bid, ask, a.tick, a.cfg.flatten_slippage_bps)
        now = a.clock_ns()
        reason = a.budget.allows(now, price * act.qty)
        if reason is not None:
            return done("refused", reason=reason)
        cid = str(a.ids.next())
        a.flatten_ids.add(cid)  # before it leaves: its user-stream events may come before the reply
        a.budget.charge(now, price * act.qty)
        a.qrules.placed(cid, now, "IOC", act.qty, price * act.qty)
        a.audit.write(now, "flatten", plan_id=plan_id, client_id=cid, side=act.side, qty=act.qty, price=price,
                      reduce_only=True, time_in_force="IOC")  # fmt: skip
        try:
            params = {"timeInForce": "IOC", "reduceOnly": True, "newClientOrderId": cid}
            o = await a.ex.create_order(a.symbol, "limit", act.side, act.qty, price, params)
        except (ccxt.NetworkError, ccxt.ExchangeError) as e:
            # A lost reply may hide a fill: the next reconciliation sees the venue's position either way.
            a.qrules.ended(cid, a.clock_ns(), "REJECTED")
            return done("failed", client_id=cid, error=f"{type(e).__name__}: {str(e)[:200]}")
        # Booked from the reply, the order's end state (Binance's RESULT), not from the user stream: at
        # start the stream is not up yet. Its commission is not in the reply: the wallet drift has it.
        filled = float(o.get("filled") or 0.0)
        average = float(o.get("average") or price)
        if filled > 0.0:
            a._book_fill(cid, 1 if act.side == "buy" else -1, average, filled, 0.0, None, None)
        a.qrules.ended(cid, a.clock_ns(), "FILLED" if o.get("status") == "closed" else "EXPIRED")
        return done("sent", client_id=cid, status=o.get("status"), filled=filled, average=average, price=price)

    async def kill(self, by: str) -> dict:
        """The kill switch's last step, once the shutdown cancelled our orders: the flatten, then `kill`.

        The whole venue position is planned for a flatten (`kill_plan`, bounded by
        max_flatten_qty); it is sent only with `kill_flatten = true` in execute_flatten mode, else
        planned and marked "not_in_mode" or "kill_flatten_off". The `kill` line says who asked,
        the orders of ours still open, the position before and after and the flatten's result.
        """
        a, cfg = self.a, self.a.cfg
        left: list[str] | None = None
        position: float | None = None
        try:
            left = a._ours(await a.ex.fetch_open_orders(a.symbol))
            position = venue_position(await a.ex.fetch_positions([a.symbol]), a.symbol)
        except (ccxt.NetworkError, ccxt.ExchangeError) as e:
            a.audit.write(a.clock_ns(), "kill_check_failed", error=type(e).__name__, detail=str(e)[:300])
        # A follower's kill plans the flatten and leaves it to the leader, which sees the kill too (live.leader).
        then = ("not_leader" if not a.may_act() else "not_in_mode" if cfg.rollout != "execute_flatten"
                else "execute" if cfg.kill_flatten else "kill_flatten_off")  # fmt: skip
        actions = []
        if position is not None and abs(position) >= 0.5 * a.lot:
            qty = flatten_qty(position, cfg.max_flatten_qty, a.lot)
            actions.append(
                Action("flatten", then, side="sell" if position > 0 else "buy", qty=qty, wanted=abs(position))
            )
        plan = Plan(self.next_id(), cfg.rollout, (), tuple(actions))
        write_plan(a.audit, a.clock_ns(), plan, event="kill_plan", by=by)
        flatten = {"result": then} if actions else {"result": "flat"}
        for act in actions:
            if act.then == "execute":
                flatten = await self.flatten(plan.plan_id, act)
        after = position
        if flatten.get("filled"):
            with contextlib.suppress(ccxt.NetworkError, ccxt.ExchangeError):
                after = venue_position(await a.ex.fetch_positions([a.symbol]), a.symbol)
        out = {"by": by, "plan_id": plan.plan_id, "orders_left": left, "position_before": position,
               "position_after": after, "flatten": flatten}  # fmt: skip
        a.audit.write(a.clock_ns(), "kill", **out)
        return out
