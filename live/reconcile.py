"""Reconciliation: what the venue holds against what the adapter believes, and the repairs it may make.

On start, every N seconds and after a user-stream drop the adapter fetches the symbol's open
orders, position and wallet and compares them with its own view (on stop, position and wallet).
Every difference in orders or position is a `Mismatch` written to the audit trail:

- orphan: an open order with this adapter's client-id prefix (same strategy and symbol) that the
  adapter does not know, e.g. left by a process killed with orders resting. It is cancelled in
  the rollout modes that execute (`live.rollout`: execute_cancel_all, the default, and execute_flatten).
  Only this instance's and those of instances found dead are orphans (decision 028); another live
  instance's order is an `other_instance` mismatch, never touched (the adapter stops on it).
- missing: an order the adapter believes open that the venue does not list (filled or cancelled
  while the adapter was not looking). The adapter forgets it once the order's own status query
  says it is not open (a slow open-order list can predate it); fills arrive from the user stream
  or the next position check.
- position_drift: the venue's position differs from the adapter's ledger by half a lot or more.
  The venue is the truth about money: the adapter adopts the venue's position and entry price
  into its ledger (`adopt_position`), at once on start, after a user-stream drop and on stop
  (events were lost, or none come after), otherwise once the next reconciliation still sees a
  drift (a fill whose user-stream event is in flight while the position is fetched makes a drift
  that is gone by then). In every rollout mode; in execute_flatten the adopted drift is then also
  closed with a reduce-only order (`live.rollout`).

Every reconciliation also writes one `ledger_drift` line (`LedgerDrift`): the ledger's position
against the venue's, and the ledger's realized PnL less fees and funding against the change of the
venue's wallet balance since start, in the settle currency. The wallet is the account's: other
symbols traded on it, transfers and funding the user stream did not report show up there.

Orders that are not ours (another strategy's, another tool's, placed by hand) are never touched:
they are counted as foreign and left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from grinder.core.ledger import AVG_ENTRY, CASH, FEES, POSITION, REALIZED, value
from grinder.live.client_ids import is_ours


@dataclass(frozen=True)
class Mismatch:
    """One difference between the venue and the adapter's view."""

    kind: str  # "orphan", "missing", "position_drift", "other_instance"
    client_id: str | None
    detail: str


@dataclass(frozen=True)
class OrderCheck:
    """Venue open orders sorted against the adapter's: ours it does not know, its own the venue lacks, others'."""

    orphans: list[dict]
    missing: list[str]
    foreign: list[dict]
    others: list[dict] = field(default_factory=list)  # another live instance's (live.instance): never touched


def check_orders(expected: set[str], venue_open: list[dict], strategy: str, symbol: str,
                 is_other: Callable[[str], bool] | None = None) -> OrderCheck:  # fmt: skip
    """Sort the venue's open orders (ccxt dicts) against the client ids the adapter believes open.

    `is_other` says which ids of this strategy and symbol are another live instance's (decision 028):
    those are `others`, not orphans.
    """
    orphans, foreign, others, seen = [], [], [], set()
    for o in venue_open:
        cid = o.get("clientOrderId") or ""
        if not is_ours(cid, strategy, symbol):
            foreign.append(o)
        elif cid in expected:
            seen.add(cid)
        elif is_other is not None and is_other(cid):
            others.append(o)
        else:
            orphans.append(o)
    return OrderCheck(orphans, sorted(expected - seen), foreign, others)


def check_position(expected: float, venue: float, lot: float) -> Mismatch | None:
    """A position_drift when the venue's position (base units, + long) differs by half a lot or more."""
    if abs(expected - venue) < 0.5 * lot:
        return None
    return Mismatch("position_drift", None, f"adapter {expected:g}, venue {venue:g}")


@dataclass(frozen=True)
class VenuePosition:
    """The symbol's position at the venue: signed quantity (base units, or contracts) and average entry price."""

    qty: float
    entry: float  # quote per base; 0.0 when flat or not reported


@dataclass(frozen=True)
class LedgerDrift:
    """The venue against the adapter's ledger at one reconciliation."""

    position: float  # the venue's position minus the ledger's (base units, or contracts)
    wallet: float | None  # the venue's wallet change since start minus the ledger's realized - fees - funding
    wallet_now: float | None  # the venue's wallet balance (settle currency); None: not reported


def venue_position(positions: list[dict], symbol: str) -> float:
    """The signed position (base units) of `symbol` in ccxt's fetch_positions output (0 when flat)."""
    total = 0.0
    for p in positions:
        if p.get("symbol") == symbol and p.get("contracts"):
            total += (
                float(p["contracts"]) * (float(p.get("contractSize") or 1.0)) * (-1 if p.get("side") == "short" else 1)
            )
    return total


def venue_entry(positions: list[dict], symbol: str) -> float:
    """The average entry price of `symbol`'s open position in ccxt's fetch_positions output (0.0 when flat)."""
    for p in positions:
        if p.get("symbol") == symbol and p.get("contracts"):
            return float(p.get("entryPrice") or 0.0)
    return 0.0


def venue_wallet(balance: dict, settle_id: str) -> float | None:
    """The wallet balance of the settle asset in ccxt's fetch_balance output, or None if the venue did not list it.

    Binance's walletBalance: deposits plus realized PnL less fees and funding, unrealized PnL not in
    it (ccxt's `total` is the margin balance, which has it).
    """
    for a in (balance.get("info") or {}).get("assets") or []:
        if a.get("asset") == settle_id and a.get("walletBalance") is not None:
            return float(a["walletBalance"])
    return None


def ledger_drift(led: np.ndarray, funding_paid: float, venue_qty: float, wallet_start: float | None,
                 wallet_now: float | None) -> LedgerDrift:  # fmt: skip
    """The venue's position and wallet change against the ledger's position and realized - fees - funding."""
    wallet = None
    if wallet_start is not None and wallet_now is not None:
        wallet = (wallet_now - wallet_start) - (float(led[REALIZED]) - float(led[FEES]) - funding_paid)
    return LedgerDrift(venue_qty - float(led[POSITION]), wallet, wallet_now)


def adopt_position(led: np.ndarray, qty: float, entry: float, inverse: bool, contract_size: float) -> None:
    """Set the ledger's position and average entry to the venue's, realized PnL and fees kept.

    Cash is set so that cash + value(position, mark) stays realized + unrealized PnL at every mark
    (`grinder.core.ledger`): equity is then the venue's view of the position, marked the same way.
    """
    if qty != 0.0 and not entry > 0.0:
        raise ValueError(f"a position of {qty:g} needs an entry price above 0, got {entry:g}")
    led[POSITION] = qty
    led[AVG_ENTRY] = entry if qty != 0.0 else 0.0
    led[CASH] = led[REALIZED] - (value(qty, entry, inverse, contract_size) if qty != 0.0 else 0.0)


async def reconcile(ex, port, audit, now_ns: int, symbol: str, strategy: str, symbol_id: str, lot: float,
                    expected_orders: set[str], expected_position: float,
                    is_other: Callable[[str], bool] | None = None, cancel_orphans: bool = True
                    ) -> tuple[list[Mismatch], VenuePosition]:  # fmt: skip
    """Fetch, compare, log every mismatch, cancel our orphans; returns the mismatches and the venue's position.

    `cancel_orphans=False` leaves them to the caller (the adapter's rollout mode, `live.rollout`).

    Another live instance's orders (`is_other`, see `check_orders`) are `other_instance` mismatches, never cancelled.
    """
    open_orders = await ex.fetch_open_orders(symbol)
    positions = await ex.fetch_positions([symbol])
    position = venue_position(positions, symbol)
    check = check_orders(expected_orders, open_orders, strategy, symbol_id, is_other)
    found = [Mismatch("orphan", o["clientOrderId"], f"{o['side']} {o['amount']} @ {o['price']}") for o in check.orphans]
    found += [Mismatch("other_instance", o["clientOrderId"], "another live instance's") for o in check.others]
    found += [Mismatch("missing", cid, "not open at the venue") for cid in check.missing]
    drift = check_position(expected_position, position, lot)
    if drift is not None:
        found.append(drift)
    audit.write(now_ns, "reconcile", open_orders=len(open_orders), foreign=len(check.foreign), position=position,
                mismatches=len(found))  # fmt: skip
    for m in found:
        audit.write(now_ns, "mismatch", kind=m.kind, client_id=m.client_id, detail=m.detail)
    for o in check.orphans if cancel_orphans else ():
        await port.cancel(client_id=o["clientOrderId"])
    return found, VenuePosition(position, venue_entry(positions, symbol))


async def reconcile_ledger(ex, audit, now_ns: int, settle_id: str, led: np.ndarray, funding_paid: float,
                           venue: VenuePosition, wallet_start: float | None) -> LedgerDrift:  # fmt: skip
    """Fetch the wallet, compare the ledger with it and with the venue's position, write `ledger_drift`; return it."""
    drift = ledger_drift(led, funding_paid, venue.qty, wallet_start, venue_wallet(await ex.fetch_balance(), settle_id))
    audit.write(now_ns, "ledger_drift", position=float(led[POSITION]), venue_position=venue.qty,
                position_drift=drift.position, wallet_drift=drift.wallet, wallet=drift.wallet_now,
                settle=settle_id)  # fmt: skip
    return drift
