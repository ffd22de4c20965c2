"""Other adapter instances of this strategy and symbol on the account: probed at start, watched while running.

Every client id carries the epoch of the instance that made it (`live.client_ids`). At start the
adapter sorts the venue's open orders of its strategy and symbol by epoch:

- the state folder's earlier epochs: their processes are dead (each held the folder's lock while it
  ran), so their orders are orphans, cancelled by reconciliation as before;
- any other epoch with open orders or among the account's most recent orders on the symbol
  (another state folder, or an earlier version's ids): a dead process's or a live one's. The
  adapter reads the order history for `probe_s` before it trades. An order of such an epoch placed
  meanwhile is proof of a live instance (only that instance makes ids of its epoch): the adapter
  refuses to start, one line naming it, nothing cancelled. The history, not the open-order list:
  a grid's order can be placed and filled between two reads, and a live instance between two
  quotes has none open. Cancels and fills are not proof: a dead instance's orders fill, and the
  venue's countdown cancel-all or a person cancels them. Epochs that placed nothing during the
  probe are taken as dead: their open orders are cancelled as orphans.

While running, an event or an open order of an epoch that is neither this instance's nor one found
dead means another instance is live: the adapter writes it to the audit trail and stops (its own
orders cancelled, the other's untouched). Both adapters run this check, so two never trade at once
for longer than an event takes to arrive. A live instance that placed nothing during the probe is
taken for a dead one (decision 028).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from grinder.errors import LiveError
from grinder.live.client_ids import parse

PROBE_POLL_S = 0.5  # how often the probe reads the order history
HISTORY_LIMIT = 1000  # orders per history read (Binance's most)


def label(epoch: str | None) -> str:
    """An epoch as the audit and messages show it."""
    return epoch if epoch is not None else "(earlier id format)"


@dataclass
class Instances:
    """This instance's epoch and the epochs found dead, for one strategy and symbol (venue id)."""

    strategy: str
    symbol: str
    epoch: str
    dead: set[str | None] = field(default_factory=set)
    # Under leader election (live.leader) the lease, not the ids, says who trades: None (no
    # election), "leader" (every other epoch's orders are a former leader's: orphans to cancel) or
    # "follower" (every other epoch's are the leader's: never a reason to stop, never cancelled).
    ha: str | None = None

    def epoch_of(self, client_id: str | None) -> tuple[bool, str | None]:
        """(whether `client_id` is of this strategy and symbol, its epoch)."""
        p = parse(client_id or "")
        if p is None or p.strategy != self.strategy or p.symbol != self.symbol:
            return False, None
        return True, p.epoch

    def is_other(self, client_id: str | None) -> bool:
        """An id of this strategy and symbol made by another instance not found dead: a live one."""
        ours, epoch = self.epoch_of(client_id)
        if self.ha is not None:
            return ours and epoch != self.epoch and self.ha == "follower"
        return ours and epoch != self.epoch and epoch not in self.dead

    def mine_or_dead(self, client_id: str | None) -> bool:
        """An id of this instance, or of one found dead: what this adapter may cancel."""
        ours, epoch = self.epoch_of(client_id)
        if self.ha is not None:
            return ours and (self.ha == "leader" or epoch == self.epoch)
        return ours and (epoch == self.epoch or epoch in self.dead)

    def by_epoch(self, orders: list[dict]) -> dict[str | None, set[str]]:
        """The client ids of other instances' orders among `orders` (ccxt dicts), by epoch."""
        out: dict[str | None, set[str]] = {}
        for o in orders:
            cid = o.get("clientOrderId")
            ours, epoch = self.epoch_of(cid)
            if ours and epoch != self.epoch:
                out.setdefault(epoch, set()).add(cid)
        return out


async def probe(ex, symbol: str, inst: Instances, past_epochs: tuple[str, ...], audit, clock_ns: Callable[[], int],
                probe_s: float, sleep=asyncio.sleep) -> None:  # fmt: skip
    """Sort the other instances of the account into dead ones (added to `inst.dead`) and live ones (LiveError).

    `symbol` is ccxt's unified symbol; `past_epochs` the state folder's earlier epochs, dead
    without a probe. Venue errors (ccxt's) propagate: the start fails closed.
    """
    inst.dead.update(past_epochs)
    listed = await ex.fetch_open_orders(symbol)
    # The account's most recent orders on the symbol, closed ones too: a live instance between two
    # quotes (its orders filled or cancelled, the next not sent yet) has none open at this instant.
    recent = await ex.fetch_orders(symbol, None, HISTORY_LIMIT)
    known = inst.by_epoch(listed + recent)
    unknown = {e for e in known if e not in inst.dead}
    if unknown:
        open_ = inst.by_epoch(listed)
        audit.write(clock_ns(), "instance_probe", seconds=probe_s,
                    orders={label(e): len(open_.get(e, ())) for e in unknown})  # fmt: skip
        after = max((int(o["id"]) for o in listed + recent), default=0) + 1  # orders the venue takes from now on
        polls = max(1, math.ceil(probe_s / PROBE_POLL_S))
        for _ in range(polls):
            await sleep(probe_s / polls)
            # Every order placed since, however short its life: the history, not the open list.
            new = await ex.fetch_orders(symbol, None, HISTORY_LIMIT, {"orderId": after})
            after = max((int(o["id"]) + 1 for o in new), default=after)
            placed = {e: ids - known.get(e, set()) for e, ids in inst.by_epoch(new).items() if e not in inst.dead}
            placed = {e: ids for e, ids in placed.items() if ids}
            if placed:
                epoch, ids = next(iter(placed.items()))
                audit.write(clock_ns(), "other_instance", epoch=label(epoch), placed=sorted(ids), when="start")
                raise LiveError(
                    f"another adapter (instance {label(epoch)}) is trading {inst.strategy} on {inst.symbol} on this "
                    f"account: it placed {len(ids)} order(s) during the {probe_s:g} s probe; refusing to start "
                    "(nothing cancelled)"
                )
    open_ = inst.by_epoch(listed)
    for e in (e for e in known if e in unknown or e in open_):  # open ones: orphans of the reconciliation next
        audit.write(clock_ns(), "instance_dead", epoch=label(e), open_orders=len(open_.get(e, ())),
                    probed=e in unknown)  # fmt: skip
    inst.dead.update(unknown)


def other_instance(inst: Instances, audit, now_ns: int, client_id: str, where: str) -> LiveError:
    """Audit an order of another live instance seen on `where` while running; the error that stops the adapter."""
    _, epoch = inst.epoch_of(client_id)
    audit.write(now_ns, "other_instance", epoch=label(epoch), client_id=client_id, when=where)
    return LiveError(
        f"another adapter (instance {label(epoch)}) is trading {inst.strategy} on {inst.symbol} on this account "
        f"(its order {client_id}, seen on the {where}); stopped, only this instance's orders cancelled"
    )
