"""Reconciliation: what the venue holds against what the adapter believes, and the repairs it may make.

On start and every N seconds the adapter fetches the symbol's open orders and position and
compares them with its own view. Every difference is a `Mismatch` written to the audit trail:

- orphan: an open order with this adapter's client-id prefix (same strategy and symbol) that the
  adapter does not know, e.g. left by a process killed with orders resting. It is cancelled.
- missing: an order the adapter believes open that the venue does not list (filled or cancelled
  while the adapter was not looking). The adapter forgets it once the order's own status query
  says it is not open (a slow open-order list can predate it); fills arrive from the user stream
  or the next position check.
- position_drift: the venue's position differs from the adapter's by more than half a lot.
  Logged; the adapter adopts the venue's figure (the venue is the truth about money).

Orders that are not ours (another strategy's, another tool's, placed by hand) are never touched:
they are counted as foreign and left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from live.client_ids import is_ours


@dataclass(frozen=True)
class Mismatch:
    """One difference between the venue and the adapter's view."""

    kind: str  # "orphan", "missing", "position_drift"
    client_id: str | None
    detail: str


@dataclass(frozen=True)
class OrderCheck:
    """Venue open orders sorted against the adapter's: ours it does not know, its own the venue lacks, others'."""

    orphans: list[dict]
    missing: list[str]
    foreign: list[dict]


def check_orders(expected: set[str], venue_open: list[dict], strategy: str, symbol: str) -> OrderCheck:
    """Sort the venue's open orders (ccxt dicts) against the client ids the adapter believes open."""
    orphans, foreign, seen = [], [], set()
    for o in venue_open:
        cid = o.get("clientOrderId") or ""
        if not is_ours(cid, strategy, symbol):
            foreign.append(o)
        elif cid in expected:
            seen.add(cid)
        else:
            orphans.append(o)
    return OrderCheck(orphans, sorted(expected - seen), foreign)


def check_position(expected: float, venue: float, lot: float) -> Mismatch | None:
    """A position_drift when the venue's position (base units, + long) differs by half a lot or more."""
    if abs(expected - venue) < 0.5 * lot:
        return None
    return Mismatch("position_drift", None, f"adapter {expected:g}, venue {venue:g}")


def venue_position(positions: list[dict], symbol: str) -> float:
    """The signed position (base units) of `symbol` in ccxt's fetch_positions output (0 when flat)."""
    total = 0.0
    for p in positions:
        if p.get("symbol") == symbol and p.get("contracts"):
            total += (
                float(p["contracts"]) * (float(p.get("contractSize") or 1.0)) * (-1 if p.get("side") == "short" else 1)
            )
    return total


async def reconcile(ex, port, audit, now_ns: int, symbol: str, strategy: str, symbol_id: str, lot: float,
                    expected_orders: set[str], expected_position: float) -> tuple[list[Mismatch], float]:  # fmt: skip
    """Fetch, compare, log every mismatch, cancel our orphans; returns the mismatches and the venue's position."""
    open_orders = await ex.fetch_open_orders(symbol)
    position = venue_position(await ex.fetch_positions([symbol]), symbol)
    check = check_orders(expected_orders, open_orders, strategy, symbol_id)
    found = [Mismatch("orphan", o["clientOrderId"], f"{o['side']} {o['amount']} @ {o['price']}") for o in check.orphans]
    found += [Mismatch("missing", cid, "not open at the venue") for cid in check.missing]
    drift = check_position(expected_position, position, lot)
    if drift is not None:
        found.append(drift)
    audit.write(now_ns, "reconcile", open_orders=len(open_orders), foreign=len(check.foreign), position=position,
                mismatches=len(found))  # fmt: skip
    for m in found:
        audit.write(now_ns, "mismatch", kind=m.kind, client_id=m.client_id, detail=m.detail)
    for o in check.orphans:
        await port.cancel(client_id=o["clientOrderId"])
    return found, position
