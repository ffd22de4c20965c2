"""Client order ids that carry the strategy, symbol and instance, parse back exactly, and are never reused.

Format: ``g_<strategy>:<symbol>:<epoch>:<sequence>``, e.g. ``g_static_grid:BTCUSDT:x7Gq2:1B3``.

- The colon separates the fields, so names with underscores round-trip (splitting on "_" is the
  classic bug: "adaptive_grid" would come back as "adaptive").
- The epoch names the adapter instance: five random base-62 characters drawn at every start, so
  ids are unique on the account across processes, restarts and state folders (two adapters, or a
  fresh state folder on a used account, never hand out the same id: a lost create is looked up by
  its id, which is only safe if the id names one order ever). Random rather than the start time:
  per character it separates instances better, and the start time is in the audit trail.
- The sequence is a base-62 number that only grows within a state folder, also across restarts:
  the allocator reserves it in blocks and records the end of the block on disk *before* handing
  out the first id of it, so an id is never used twice even if two epochs were ever equal.

Binance accepts ``[.A-Z:/a-z0-9_-]{1,36}`` as a client order id. The short prefix leaves the
strategy and symbol the room the earlier format (``grinder_<strategy>:<symbol>:<sequence>``, no
epoch) left them: a name with other characters, a colon, or too long to leave room for the epoch
and sequence is refused when the adapter is configured, not when its first order goes out. Ids of
the earlier format still parse (epoch None): orders an earlier version left are found as ours.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from grinder.errors import ConfigError, LiveError
from grinder.io.atomic import write_atomic
from grinder.live.lock import ProcessLock

PREFIX = "g_"
LEGACY_PREFIX = "grinder_"  # ids of versions before instance epochs: parsed, never made
MAX_LEN = 36  # Binance's limit for newClientOrderId
EPOCH_LEN = 5  # 62**5 (about 916 million) epochs: two instances drawing the same one is negligible
MIN_SEQ_CHARS = 5  # room left for the sequence: 62**5, about 916 million orders (and restarts x block)
EPOCHS_KEPT = 16  # earlier epochs of a state folder remembered in its reservation (all dead: its lock says so)
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


def new_epoch() -> str:
    """A fresh instance epoch: EPOCH_LEN random base-62 characters."""
    return "".join(secrets.choice(_DIGITS) for _ in range(EPOCH_LEN))


def is_epoch(s: str) -> bool:
    """Whether `s` is a well-formed epoch (EPOCH_LEN base-62 characters)."""
    return isinstance(s, str) and len(s) == EPOCH_LEN and all(c in _VALUE for c in s)


@dataclass(frozen=True)
class ClientOrderId:
    """The parts of one of our client order ids; `epoch` None only for ids of the earlier format."""

    strategy: str
    symbol: str
    seq: int
    epoch: str | None = None

    def __str__(self) -> str:
        if self.epoch is None:
            return f"{LEGACY_PREFIX}{self.strategy}:{self.symbol}:{encode_seq(self.seq)}"
        return f"{PREFIX}{self.strategy}:{self.symbol}:{self.epoch}:{encode_seq(self.seq)}"


def seq_room(strategy: str, symbol: str) -> int:
    """Characters of the venue's MAX_LEN an id of `strategy` and `symbol` leaves for its sequence."""
    return MAX_LEN - len(PREFIX) - len(strategy) - len(symbol) - EPOCH_LEN - 3


def check_names(strategy: str, symbol: str) -> None:
    """Refuse a strategy or symbol that cannot be carried in a client order id (ConfigError naming it)."""
    for what, name in (("strategy", strategy), ("symbol", symbol)):
        if not name or not _ALLOWED.fullmatch(name):
            raise ConfigError(f"{what} name {name!r} cannot go into a client order id: use letters, digits, . / _ -")
    room = seq_room(strategy, symbol)
    if room < MIN_SEQ_CHARS:
        raise ConfigError(
            f"strategy {strategy!r} with symbol {symbol!r} leaves {room} characters of the venue's {MAX_LEN} "
            f"for the order sequence (need {MIN_SEQ_CHARS}): use a shorter strategy name"
        )


def parse(client_id: str) -> ClientOrderId | None:
    """Our id's parts, or None for an id that is not ours (another tool's or a hand-placed order)."""
    if not isinstance(client_id, str) or len(client_id) > MAX_LEN:
        return None
    if client_id.startswith(PREFIX):
        parts = client_id[len(PREFIX) :].split(":")
        if len(parts) != 4 or not is_epoch(parts[2]):
            return None
        strategy, symbol, epoch, seq = parts
    elif client_id.startswith(LEGACY_PREFIX):
        parts = client_id[len(LEGACY_PREFIX) :].split(":")
        if len(parts) != 3:
            return None
        (strategy, symbol, seq), epoch = parts, None
    else:
        return None
    if not strategy or not symbol or not _ALLOWED.fullmatch(strategy) or not _ALLOWED.fullmatch(symbol):
        return None
    try:
        cid = ClientOrderId(strategy, symbol, decode_seq(seq), epoch)
    except ValueError:
        return None
    return cid if str(cid) == client_id else None  # one id, one text: "..:01" is not "..:1"


def is_ours(client_id: str | None, strategy: str, symbol: str) -> bool:
    """True for an id an adapter of this strategy and symbol could have made, whatever its instance."""
    p = parse(client_id or "")
    return p is not None and p.strategy == strategy and p.symbol == symbol


def is_instance(client_id: str | None, strategy: str, symbol: str, epoch: str) -> bool:
    """True for an id of this strategy and symbol made by the instance whose epoch is `epoch`."""
    p = parse(client_id or "")
    return p is not None and p.strategy == strategy and p.symbol == symbol and p.epoch == epoch


class IdAllocator:
    """Hands out ever-growing client order ids for one strategy, symbol and instance; the reservation lives in `path`.

    `epoch` is this instance's (drawn afresh when None, never one the folder used before);
    `past_epochs` are the folder's earlier ones, newest last: their processes are dead, since
    each held the folder's lock while it ran.
    """

    def __init__(self, path: Path, strategy: str, symbol: str, block: int = 1000, new: bool = False,
                 epoch: str | None = None):  # fmt: skip
        """Open the reservation in `path`; `new=True` (first start only) creates it at once, else it must exist."""
        check_names(strategy, symbol)
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        if epoch is not None and not is_epoch(epoch):
            raise ValueError(f"epoch must be {EPOCH_LEN} base-62 characters, got {epoch!r}")
        self.path, self.strategy, self.symbol, self.block = Path(path), strategy, symbol, block
        if new and self.path.exists():
            raise LiveError(f"{self.path} already exists: a new id reservation would reuse its ids")
        if not new and not self.path.exists():
            # A lost or mistyped state folder must not silently restart the sequence at 0.
            raise LiveError(f"{self.path}: no client-id reservation; create one on the first start only")
        self._lock = ProcessLock(self.path)  # two processes sharing it would hand out the same ids
        try:
            self._next, self.past_epochs = self._reserved()
            self.epoch = epoch or new_epoch()
            while self.epoch in self.past_epochs:  # a restart never takes its predecessor's epoch
                self.epoch = new_epoch()
            self._room = seq_room(strategy, symbol)
            self._end = self._next  # nothing reserved by this process yet
            if new:
                # On disk at once, reserving nothing: the folder shows it has had its first start.
                self._reserve(self._next)
        except BaseException:
            self._lock.release()
            raise

    def _reserved(self) -> tuple[int, tuple[str, ...]]:
        """Where the last reservation ended (0 if none) and the folder's epochs; a damaged file stops the adapter."""
        if not self.path.exists():
            return 0, ()
        try:
            data = json.loads(self.path.read_text())
            end = data["reserved_until"]
            if data.get("strategy") != self.strategy or data.get("symbol") != self.symbol:
                raise LiveError(
                    f"{self.path}: belongs to {data.get('strategy')}/{data.get('symbol')}, not "
                    f"{self.strategy}/{self.symbol}"
                )
            if not isinstance(end, int) or end < 0:
                raise ValueError(end)
            epochs = data.get("epochs", [])  # absent in reservations of the earlier format
            if not isinstance(epochs, list) or not all(is_epoch(e) for e in epochs):
                raise ValueError(f"epochs {epochs!r}")
        except LiveError:
            raise
        except (ValueError, KeyError, TypeError) as e:
            raise LiveError(f"{self.path}: damaged client-id reservation ({e}); refusing to reuse ids") from None
        return end, tuple(epochs)

    def _reserve(self, end: int) -> None:
        # This instance's epoch is on disk before its first id is handed out: the next start of the
        # folder knows the orders of this epoch are a dead process's.
        epochs = [*self.past_epochs[-(EPOCHS_KEPT - 1) :], self.epoch]
        record = {"strategy": self.strategy, "symbol": self.symbol, "reserved_until": end, "epochs": epochs}
        write_atomic(self.path, json.dumps(record), durable=True, mode=0o600)
        self._end = end

    def reserve_ahead(self) -> bool:
        """Reserve the next block now if less than half of one is left; True if it wrote the reservation.

        The reservation is a durable write (fsyncs on the calling thread; decision 012): the adapter
        calls this at start and in housekeeping, away from decisions, so `next` never has to
        reserve between a decision and its order.
        """
        if self._end - self._next >= (self.block + 1) // 2:
            return False
        self._reserve(max(self._end, self._next) + self.block)
        return True

    def peek(self) -> ClientOrderId:
        """The id `next` will hand out, without taking it."""
        return ClientOrderId(self.strategy, self.symbol, self._next, self.epoch)

    def next(self) -> ClientOrderId:
        """The next id; reserves (durably) a new block first when the current one is used up."""
        if len(encode_seq(self._next)) > self._room:
            raise LiveError(
                f"{self.path}: the client-id sequence is used up ({self._next} ids); a fresh state folder "
                "starts it again (ids carry the instance epoch, so none is reused)"
            )
        if self._next >= self._end:
            self._reserve(self._next + self.block)
        cid = ClientOrderId(self.strategy, self.symbol, self._next, self.epoch)
        self._next += 1
        return cid

    def is_mine(self, client_id: str | None) -> bool:
        """Whether `client_id` is one of this instance's ids (this strategy, symbol and epoch)."""
        return is_instance(client_id, self.strategy, self.symbol, self.epoch)

    def close(self) -> None:
        """Release the reservation file for another process."""
        self._lock.release()
