"""The online driver: features kept up to date event by event for the live adapter.

`OnlineFeatures` holds the state arrays of `grinder.features.kernel` and calls its one compiled
`update` per book change (after the driver applied a whole exchange message to its L2 book, the
`grinder.book.l2` arrays the emulator and paper mode keep: `grinder.venue.exchange.Exchange`),
per trade and per funding update, and `read` at any time. These are the calls the offline pass
makes in its loop, so both drivers give the same floats. Times are exchange times (int64 ns).
"""

from __future__ import annotations

import numpy as np

from grinder.features.kernel import EV_BOOK, EV_FUNDING, EV_TRADE, new_state, read, update
from grinder.features.spec import FeatureSet

_NO_BOOK_I = np.zeros(12, np.int64)
_NO_BOOK_Q = np.zeros((2, 1))
_NO_BOOK_K = np.zeros((2, 1), np.int64)


class OnlineFeatures:
    """Feature state for one instrument, updated per event; `read(ts)` gives the feature row."""

    def __init__(self, feature_set: FeatureSet) -> None:
        self.feature_set = feature_set
        self.names = feature_set.names
        self.version = feature_set.version
        self._levels, self._vol_tau, self._flow_tau = feature_set.kernel_args()
        self._si, self._sf = new_state(self._vol_tau.shape[0], self._flow_tau.shape[0])
        self._row = np.empty(len(self.names))

    def on_book(self, ts: int, hdr: np.ndarray, wq: np.ndarray, ok: np.ndarray, oq: np.ndarray, synced: bool) -> None:
        """The book (l2 arrays) changed at `ts` ns: a whole message is applied; `synced`: it is whole."""
        update(self._si, self._sf, self._levels, self._vol_tau, self._flow_tau, ts, EV_BOOK, 0, 0.0, 0.0,
               hdr, wq, ok, oq, synced)  # fmt: skip

    def on_trade(self, ts: int, side: int, qty: float) -> None:
        """A trade at `ts` ns: side +1 buyer aggressor, -1 seller; qty base units."""
        update(self._si, self._sf, self._levels, self._vol_tau, self._flow_tau, ts, EV_TRADE, side, qty, 0.0,
               _NO_BOOK_I, _NO_BOOK_Q, _NO_BOOK_K, _NO_BOOK_Q, False)  # fmt: skip

    def on_funding(self, ts: int, rate: float) -> None:
        """A funding rate (per funding interval) published at `ts` ns."""
        update(self._si, self._sf, self._levels, self._vol_tau, self._flow_tau, ts, EV_FUNDING, 0, 0.0, rate,
               _NO_BOOK_I, _NO_BOOK_Q, _NO_BOOK_K, _NO_BOOK_Q, False)  # fmt: skip

    def read(self, ts: int, out: np.ndarray | None = None) -> np.ndarray:
        """The features as of `ts` ns (float64, in `names` order), into `out` if given (else a kept buffer)."""
        row = self._row if out is None else out
        read(self._si, self._sf, self._vol_tau, self._flow_tau, ts, row)
        return row
