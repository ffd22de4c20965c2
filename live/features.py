"""The live side of `grinder.features`: a book and the feature state kept from a client's raw market messages.

`LiveFeatures` is a tap on a `GrinderBinance` client (`ex.taps`): it sees every raw depth diff,
REST depth snapshot and trade the client receives, keeps a `grinder.book.l2` book with the venue's
sync rules (those of the ingest, the emulator and paper mode: diffs older than the snapshot
skipped, the first one bridging it, every later one continuing the previous through `pu`; on a
break the book is unsynced until ccxt fetches the next snapshot) and feeds
`grinder.features.online.OnlineFeatures`: `on_book` after each whole message at its exchange time
(Binance's `T`), `on_trade` per market trade. Depth and trades come over two sockets, so they can
arrive out of exchange-time order; the tape the offline pass reads is in exchange-time order
(`grinder.data.tape`), and the features' decayed sums depend on the order. Events are therefore
applied in exchange-time order: one stream's event as soon as the other stream has shown an event
at or after its time, and every event still held when the features are read (`flush`, at each
decision: by then the decision knows nothing later). Equal times may go in either order: a book
update and a trade touch different sums, and the second of them decays nothing.

`read()` gives the features at the exchange time of the last event received, after every event
received, as `grinder.ml.signals` computes a backtest decision's features. Times are exchange times,
int64 ns (the venue's milliseconds). Funding is not fed (the client taps no mark-price stream):
`funding_rate` stays NaN live.
"""

from __future__ import annotations

from collections import deque
from itertools import chain

import numpy as np
from numba import njit

from grinder.book.l2 import apply_row, new_book
from grinder.data.schema import BOOK_DIFF, BOOK_RESET, BOOK_SNAPSHOT, SIDE_ASK, SIDE_BID, SIDE_BOTH
from grinder.features.online import OnlineFeatures
from grinder.features.spec import FeatureSet

MS = 1_000_000
NONE_NS = np.iinfo(np.int64).min  # no event yet
MAX_HELD = 1000  # diffs kept while there is no snapshot to sync from (a venue that never answers one)
# Events held for the other stream to catch up beyond this are applied anyway (oldest first): a stream
# that went quiet must not hold the other one's events, nor their memory, for ever.
MAX_PENDING = 2000


@njit(cache=True)
def apply_message(hdr, wq, ok, oq, kind, levels, n_bids, tick):
    """Apply one message's levels as rows of `kind` (a snapshot clears the book first); returns (ok, oq), grown.

    `levels` holds price, qty, price, qty, ... (float64, as the venue wrote them), the first `n_bids`
    pairs bids, the rest asks; a price becomes ticks as the emulator's and paper mode's books round it
    (round half to even, like Python's round); qty 0 removes the level.
    """
    if kind == BOOK_SNAPSHOT:
        ok, oq = apply_row(hdr, wq, ok, oq, BOOK_RESET, SIDE_BOTH, 0, 0.0)
    for i in range(levels.shape[0] // 2):
        side = SIDE_BID if i < n_bids else SIDE_ASK
        ok, oq = apply_row(hdr, wq, ok, oq, kind, side, np.int64(np.rint(levels[2 * i] / tick)), levels[2 * i + 1])
    return ok, oq


class LiveFeatures:
    """One symbol's live book and features; `tap` is the client's tap, `flush` + `read` what a decision reads."""

    def __init__(self, feature_set: FeatureSet, symbol_id: str, tick: float):
        self.online = OnlineFeatures(feature_set)
        self.symbol_id = symbol_id  # the venue's id (BTCUSDT): trades and diffs name it
        self.tick = float(tick)
        self.hdr, self.wq, self.ok, self.oq = new_book()
        self.book_u: int | None = None  # u of the last diff applied (the snapshot's id right after it); None: unsynced
        self.bridging = False  # a snapshot was applied; the first diff must bridge it
        self.held: list[tuple] = []  # diffs received while unsynced, replayed after the next snapshot
        # (exchange ns, message, its levels parsed, how many are bids) not applied yet, in arrival order
        self._depth: deque = deque()
        self._trades: deque = deque()  # (exchange ns, side, qty) not applied yet
        self.depth_ns = NONE_NS  # latest exchange time received on each stream
        self.trade_ns = NONE_NS
        self.last_ns = NONE_NS  # latest exchange time of any event received: where `read` reads
        self.received = 0  # events received (a decision taken on the features holds while it is unchanged)
        self.trades = 0  # market trades received
        self.synced_ns: int | None = None  # exchange time of the first synced book (warm-up counts from it)
        self.gaps = 0  # sequence breaks (book unsynced until the next snapshot)

    # ---- what the client hands over ----
    def tap(self, _local_ns: int, msg: dict) -> None:
        """The client's tap: a raw depth diff, REST depth snapshot or trade (others ignored)."""
        # A message's levels are parsed as it arrives: what is left for a decision's read is compiled.
        if "lastUpdateId" in msg:  # a REST snapshot: the client syncs only this symbol's book
            ts = _exchange_ns(msg)
            self._depth.append((ts, msg, *_levels(msg["bids"], msg["asks"])))
            self.depth_ns = max(self.depth_ns, ts)
        elif msg.get("s") != self.symbol_id:
            return
        elif msg.get("e") == "depthUpdate":
            ts = _exchange_ns(msg)
            self._depth.append((ts, msg, *_levels(msg["b"], msg["a"])))
            self.depth_ns = max(self.depth_ns, ts)
        elif msg.get("e") == "trade" and msg.get("X", "MARKET") == "MARKET":  # not insurance-fund or ADL prints
            ts = int(msg["T"]) * MS
            self._trades.append((ts, SIDE_ASK if msg["m"] else SIDE_BID, float(msg["q"])))  # buyer maker: a sell
            self.trade_ns = max(self.trade_ns, ts)
            self.trades += 1
        else:
            return
        self.received += 1
        self.last_ns = max(self.last_ns, ts)
        self._drain(min(self.depth_ns, self.trade_ns))
        if len(self._depth) + len(self._trades) > MAX_PENDING:
            self._drain(min(self._head_ns(self._depth), self._head_ns(self._trades)))

    def flush(self) -> None:
        """Apply every event received (a decision reads now: nothing later is known to it)."""
        if self._depth or self._trades:
            self._drain(self.last_ns)

    def read(self, out: np.ndarray) -> int:
        """Flush, then write the features as of the last event received into `out`; returns that exchange time (ns)."""
        self.flush()
        self.online.read(self.last_ns, out)
        return self.last_ns

    # ---- applying, in exchange-time order ----
    @staticmethod
    def _head_ns(q: deque) -> int:
        return q[0][0] if q else np.iinfo(np.int64).max

    def _drain(self, upto: int) -> None:
        depth, trades = self._depth, self._trades
        while depth or trades:
            td, tt = self._head_ns(depth), self._head_ns(trades)
            if min(td, tt) > upto:
                return
            if td <= tt:
                self._on_depth(*depth.popleft())
            else:
                self.online.on_trade(*trades.popleft())

    def _on_depth(self, ts: int, msg: dict, levels: np.ndarray, n_bids: int) -> None:
        if "lastUpdateId" in msg:
            self._apply(BOOK_SNAPSHOT, levels, n_bids)
            self.book_u, self.bridging = int(msg["lastUpdateId"]), True
            self._book(ts, True)
            held, self.held = self.held, []
            for h in held:  # diffs that came before the snapshot's reply, as ccxt replays them
                self._on_depth(*h)
            return
        if self.book_u is None:
            self.held.append((ts, msg, levels, n_bids))  # no snapshot to sync from yet
            del self.held[:-MAX_HELD]
            return
        first, last, prev = int(msg["U"]), int(msg["u"]), int(msg["pu"])
        if last < self.book_u:
            return  # older than the snapshot: it holds these levels already
        # The first diff covers the snapshot's id or continues it exactly; every later one continues the previous.
        bridges = first <= self.book_u or prev == self.book_u
        if (self.bridging and not bridges) or (not self.bridging and prev != self.book_u):
            self.gaps += 1  # the book is wrong from here: none until the next snapshot (no return spans the gap)
            self.book_u = None
            self._apply(BOOK_SNAPSHOT, _NO_LEVELS, 0)  # a snapshot of nothing: the book cleared
            self._book(ts, False)
            return
        self.bridging, self.book_u = False, last
        self._apply(BOOK_DIFF, levels, n_bids)
        self._book(ts, True)

    def _book(self, ts: int, synced: bool) -> None:
        """The features' update after a whole message (synced: the book is whole)."""
        self.online.on_book(ts, self.hdr, self.wq, self.ok, self.oq, synced)
        if synced and self.synced_ns is None:
            self.synced_ns = ts

    def _apply(self, kind: int, levels: np.ndarray, n_bids: int) -> None:
        """Apply a message's parsed levels (`_levels`) to the book: one compiled call."""
        self.ok, self.oq = apply_message(self.hdr, self.wq, self.ok, self.oq, kind, levels, n_bids, self.tick)


_NO_LEVELS = np.empty(0)


def _levels(bids: list, asks: list) -> tuple[np.ndarray, int]:
    """A message's [[price, qty], ...] of each side (text, as the venue sends them) as price, qty, ... (float64), bids
    first; and how many levels are bids."""
    text = chain(chain.from_iterable(bids), chain.from_iterable(asks))
    return np.fromiter(map(float, text), np.float64, 2 * (len(bids) + len(asks))), len(bids)


def _exchange_ns(msg: dict) -> int:
    """A depth message's or snapshot's exchange time (its transaction time T, else E), ns."""
    return int(msg.get("T") or msg.get("E") or 0) * MS
