"""Client order ids that carry the strategy and symbol, parse back exactly, and are never reused.

Format: ``grinder_<strategy>:<symbol>:<sequence>``. The colon separates the fields, so names with
underscores round-trip (splitting on "_" is the classic bug: "adaptive_grid" would come back as
"adaptive"). Binance accepts ``[.A-Z:/a-z0-9_-]{1,36}`` as a client order id; a name with other
characters, a colon, or too long to leave room for the sequence is refused when the adapter is
configured, not when its first order goes out.

Sequences are base-62 numbers that only grow, also across restarts: the allocator reserves them
in blocks and records the end of the block on disk *before* handing out the first id of it. After
a crash it resumes from the recorded end, so an id is never used twice (a lost create is looked up
by its id before it is sent again, which is only safe if the id names one order ever).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from grinder.data.errors import DataError
from grinder.io.atomic import write_atomic
from live.lock import ProcessLock

PREFIX = "grinder_"
MAX_LEN = 36  # Binance's limit for newClientOrderId
MIN_SEQ_CHARS = 5  # room left for the sequence: 62**5, about 916 million orders (and restarts x block)
_ALLOWED = re.compile(r"[.A-Z/a-z0-9_-]+")  # the venue's set without ":" (our separator); fullmatch only
_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VALUE = {c: i for i, c in enumerate(_DIGITS)}


def encode_seq(n: int) -> str:
    """A non-negative integer in base 62 (digits, upper case, lower case)."""
    if n < 0:
        raise ValueError(f"sequence must be >= 0, got {n}")
    out = []
    while True:
        n, r = divmod(n, 62)
        out.append(_DIGITS[r])
        if n == 0:
            return "".join(reversed(out))


def decode_seq(s: str) -> int:
    """The integer of a base-62 string; ValueError if it has another character."""
    if not s:
        raise ValueError("empty sequence")
    n = 0
    for c in s:
        if c not in _VALUE:
            raise ValueError(f"not a base-62 digit: {c!r}")
        n = n * 62 + _VALUE[c]
    return n


@dataclass(frozen=True)
class ClientOrderId:
    """The parts of one of our client order ids."""

    strategy: str
    symbol: str
    seq: int

    def __str__(self) -> str:
        return f"{PREFIX}{self.strategy}:{self.symbol}:{encode_seq(self.seq)}"


def check_names(strategy: str, symbol: str) -> None:
    """Refuse a strategy or symbol that cannot be carried in a client order id (DataError naming it)."""
    for what, name in (("strategy", strategy), ("symbol", symbol)):
        if not name or not _ALLOWED.fullmatch(name):
            raise DataError(f"{what} name {name!r} cannot go into a client order id: use letters, digits, . / _ -")
    room = MAX_LEN - len(PREFIX) - len(strategy) - len(symbol) - 2
    if room < MIN_SEQ_CHARS:
        raise DataError(
            f"strategy {strategy!r} with symbol {symbol!r} leaves {room} characters of the venue's {MAX_LEN} "
            f"for the order sequence (need {MIN_SEQ_CHARS}): use a shorter strategy name"
        )


def parse(client_id: str) -> ClientOrderId | None:
    """Our id's parts, or None for an id that is not ours (another tool's or a hand-placed order)."""
    if not isinstance(client_id, str) or not client_id.startswith(PREFIX) or len(client_id) > MAX_LEN:
        return None
    parts = client_id[len(PREFIX) :].split(":")
    if len(parts) != 3:
        return None
    strategy, symbol, seq = parts
    if not strategy or not symbol or not _ALLOWED.fullmatch(strategy) or not _ALLOWED.fullmatch(symbol):
        return None
    try:
        cid = ClientOrderId(strategy, symbol, decode_seq(seq))
    except ValueError:
        return None
    return cid if str(cid) == client_id else None  # one id, one text: "..:01" is not "..:1"


def is_ours(client_id: str | None, strategy: str, symbol: str) -> bool:
    """True for an id this adapter could have made: our prefix, this strategy and this symbol."""
    p = parse(client_id or "")
    return p is not None and p.strategy == strategy and p.symbol == symbol


class IdAllocator:
    """Hands out ever-growing client order ids for one strategy and symbol; the reservation lives in `path`."""

    def __init__(self, path: Path, strategy: str, symbol: str, block: int = 1000, new: bool = False):
        """Open the reservation in `path`; `new=True` (first start only) creates it at once, else it must exist."""
        check_names(strategy, symbol)
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.path, self.strategy, self.symbol, self.block = Path(path), strategy, symbol, block
        if new and self.path.exists():
            raise DataError(f"{self.path} already exists: a new id reservation would reuse its ids")
        if not new and not self.path.exists():
            # A lost or mistyped state folder must not silently restart the sequence at 0.
            raise DataError(f"{self.path}: no client-id reservation; create one on the first start only")
        self._lock = ProcessLock(self.path)  # two processes sharing it would hand out the same ids
        try:
            self._next = self._reserved()
            self._end = self._next  # nothing reserved by this process yet
            if new:
                # On disk at once, reserving nothing: the folder shows it has had its first start.
                self._reserve(self._next)
        except BaseException:
            self._lock.release()
            raise

    def _reserved(self) -> int:
        """Where the last process's reservation ended (0 for a new one); a damaged file stops the adapter."""
        if not self.path.exists():
            return 0
        try:
            data = json.loads(self.path.read_text())
            end = data["reserved_until"]
            if data.get("strategy") != self.strategy or data.get("symbol") != self.symbol:
                raise DataError(
                    f"{self.path}: belongs to {data.get('strategy')}/{data.get('symbol')}, not "
                    f"{self.strategy}/{self.symbol}"
                )
            if not isinstance(end, int) or end < 0:
                raise ValueError(end)
        except DataError:
            raise
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{self.path}: damaged client-id reservation ({e}); refusing to reuse ids") from None
        return end

    def _reserve(self, end: int) -> None:
        record = {"strategy": self.strategy, "symbol": self.symbol, "reserved_until": end}
        write_atomic(self.path, json.dumps(record), durable=True, mode=0o600)
        self._end = end

    def reserve_ahead(self) -> bool:
        """Reserve the next block now if less than half of one is left; True if it wrote the reservation.

        The reservation is a durable write (1-2 ms of fsyncs on the calling thread): the adapter
        calls this at start and in housekeeping, away from decisions, so `next` never has to
        reserve between a decision and its order.
        """
        if self._end - self._next >= (self.block + 1) // 2:
            return False
        self._reserve(max(self._end, self._next) + self.block)
        return True

    def peek(self) -> ClientOrderId:
        """The id `next` will hand out, without taking it."""
        return ClientOrderId(self.strategy, self.symbol, self._next)

    def next(self) -> ClientOrderId:
        """The next id; reserves (durably) a new block first when the current one is used up."""
        if self._next >= self._end:
            self._reserve(self._next + self.block)
        cid = ClientOrderId(self.strategy, self.symbol, self._next)
        self._next += 1
        return cid

    def close(self) -> None:
        """Release the reservation file for another process."""
        self._lock.release()
