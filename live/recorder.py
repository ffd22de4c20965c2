"""`grinder record`: a venue's live market feed for one symbol, written as a raw capture the lake ingests.

`Recorder` puts a tap on a `GrinderBinance` client and keeps `watch_order_book` and `watch_trades`
running; the tap writes every depth diff, trade and REST depth snapshot the client sees, in the
format of the real captures (docs/data/binance-raw.md): ``<local ns> <compact JSON>`` per line,
stream messages in the combined-stream envelope, snapshots bare. ccxt fetches a new snapshot after
a sequence gap or a reconnect, and the tap records that one too, so the ingest resyncs the book
where ccxt did. The file is written under a hidden temporary name and renamed into place only on
a clean finish (time up or `stop()`, which SIGTERM and Ctrl-C call), after an fsync: a file with
the final name is always complete. `ingest_recording` then puts it into a lake with the ordinary
binance parser (docs/data/recording.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import ccxt
import orjson

from grinder.data.ingest.binance import parse_binance
from grinder.data.instruments import Instrument
from grinder.data.lake import Lake
from grinder.errors import ConfigError, DataError, VenueError
from grinder.io.atomic import fsync_path
from grinder.live.client import GrinderBinance


@dataclass
class Recording:
    """What a finished recording holds and where it is."""

    path: Path
    symbol: str
    market: dict  # ccxt's market of the symbol (the venue's trading rules)
    depth: int  # depth diff messages
    trades: int
    snapshots: int
    reconnects: int  # watch loops restarted after a dropped socket or a sequence gap
    seconds: float
    min_lag_ns: int | None  # smallest local receive time - exchange time T seen (None: no message had T)

    @property
    def lines(self) -> int:
        """Lines in the file (one message each)."""
        return self.depth + self.trades + self.snapshots


def venue_host(ex: GrinderBinance) -> str:
    """scheme://host[:port] the client talks to, for messages."""
    u = urlsplit(str(ex.urls["api"]["fapiPublic"]))
    return f"{u.scheme}://{u.netloc}"


def find_market(markets: dict, symbol: str) -> dict | None:
    """ccxt's market whose venue id is `symbol` (BTCUSDT), or None."""
    return next((m for m in markets.values() if m["id"] == symbol), None)


class Recorder:
    """Records `symbol` (the venue's id, e.g. BTCUSDT) from `ex` into a gzip file in `out_dir`; one run each."""

    def __init__(self, ex: GrinderBinance, symbol: str, out_dir: Path):
        self.ex = ex
        self.symbol = symbol
        self.out_dir = Path(out_dir)
        self.counts = {"depth": 0, "trade": 0, "snapshot": 0}
        self.reconnects = 0
        self._stop = asyncio.Event()
        self._gz: gzip.GzipFile | None = None
        self._last_ns = 0
        self._failed: OSError | None = None
        self._min_lag: int | None = None
        self._streams: dict[str, str] = {}

    def stop(self) -> None:
        """Finish the recording cleanly (safe from a signal handler)."""
        self._stop.set()

    async def run(self, seconds: float | None = None) -> Recording:
        """Record until `stop()` or for `seconds`; returns the finished recording (the file is complete)."""
        if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
            raise ConfigError(f"seconds must be a positive number, got {seconds}")
        market = await self._market()
        # ccxt subscribes to <id>@depth@<rate>ms; the envelope names the stream as Binance would.
        rate = self.ex.handle_option_string_and_params({}, "watchOrderBookForSymbols", "watchOrderBookRate", "100")[0]
        sym = self.symbol.lower()
        self._streams = {"depthUpdate": f"{sym}@depth@{rate}ms", "trade": f"{sym}@trade"}
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.out_dir, prefix=f".{sym}_", suffix=".gz.partial")
        except OSError as e:
            raise DataError(f"cannot write the recording here: {e.strerror}", str(self.out_dir)) from None
        raw = os.fdopen(fd, "wb")
        self._gz = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6)
        started_ns, t0 = time.time_ns(), time.monotonic()
        self.ex.taps.append(self._tap)
        try:
            await self._follow_until_stopped(market["symbol"], seconds)
            if self._failed is not None:
                raise DataError(f"cannot write the recording: {self._failed.strerror}", str(self.out_dir))
            if not any(self.counts.values()):
                raise VenueError(
                    f"no market data for {self.symbol} arrived from {venue_host(self.ex)} "
                    f"in {time.monotonic() - t0:.1f} s (nothing written)"
                )
            self.ex.taps.remove(self._tap)
            self._gz.close()  # the gzip trailer; `raw` stays open for the fsync
            raw.flush()
            os.fsync(raw.fileno())
            raw.close()
            os.chmod(tmp, 0o644)  # mkstemp makes it private; the final file is an ordinary data file
            path = self._final_path(started_ns)
            os.replace(tmp, path)
            fsync_path(self.out_dir)
        except BaseException:
            # Anything but a clean finish (an error, a cancellation) leaves no file behind.
            if self._tap in self.ex.taps:
                self.ex.taps.remove(self._tap)
            with contextlib.suppress(OSError):
                self._gz.close()
            with contextlib.suppress(OSError):
                raw.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return Recording(path, self.symbol, market, self.counts["depth"], self.counts["trade"],
                         self.counts["snapshot"], self.reconnects, time.monotonic() - t0, self._min_lag)  # fmt: skip

    async def _market(self) -> dict:
        host = venue_host(self.ex)
        try:
            await self.ex.load_markets()
        except ccxt.NetworkError as e:
            raise VenueError(f"cannot reach the venue at {host} ({type(e).__name__})") from None
        except ccxt.BaseError as e:
            raise VenueError(f"{host} does not answer like a Binance USDT-M venue ({type(e).__name__})") from None
        market = find_market(self.ex.markets, self.symbol)
        if market is None:
            raise ConfigError(f"the venue at {host} lists no market {self.symbol}")
        return market

    async def _follow_until_stopped(self, ccxt_symbol: str, seconds: float | None) -> None:
        loops = [asyncio.create_task(self._follow(w, ccxt_symbol)) for w in (self.ex.watch_order_book,
                                                                            self.ex.watch_trades)]  # fmt: skip
        stop = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait({stop, *loops}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._stop.set()  # the loops check it too: a library that swallows a cancellation cannot hold us
            for t in (*loops, stop):
                t.cancel()
            await asyncio.wait({*loops, stop}, timeout=5.0)
        for t in done:
            if t is not stop and not t.cancelled() and t.exception() is not None:
                raise t.exception()  # a failure that is not a dropped socket or a gap (e.g. the market went away)

    async def _follow(self, watch, ccxt_symbol: str) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                await watch(ccxt_symbol)
                failures = 0
            except (ccxt.NetworkError, ccxt.ChecksumError):
                # A dropped socket or a sequence gap: ccxt resubscribes (and refetches the snapshot,
                # which the tap records) on the next watch. The pause grows so a venue that keeps
                # failing is not hammered.
                self.reconnects += 1
                failures += 1
                await asyncio.sleep(min(2.0, 0.05 * 2 ** min(failures, 6)))

    def _tap(self, local_ns: int, msg: dict) -> None:
        if self._gz is None or self._failed is not None:
            return
        if "lastUpdateId" in msg:
            # A REST snapshot carries no symbol: this client syncs only this symbol's book.
            kind, line = "snapshot", msg
        else:
            stream = self._streams.get(msg.get("e", ""))
            if stream is None or msg.get("s") != self.symbol:
                return
            kind, line = ("depth" if msg["e"] == "depthUpdate" else "trade"), {"stream": stream, "data": msg}
        # The ingest refuses local times that go backwards; a wall clock stepped back by NTP must not
        # make the file unreadable, so such times are held at the last one written.
        self._last_ns = max(self._last_ns, local_ns)
        try:
            self._gz.write(b"%d %s\n" % (self._last_ns, orjson.dumps(line)))
        except OSError as e:
            self._failed = e  # raised from run(); the tap must not break ccxt's message handling
            self._stop.set()
            return
        self.counts[kind] += 1
        if isinstance(msg.get("T"), int):
            lag = self._last_ns - msg["T"] * 1_000_000
            self._min_lag = lag if self._min_lag is None else min(self._min_lag, lag)

    def _final_path(self, started_ns: int) -> Path:
        """<symbol>_<UTC start>.gz (the ingest reads the symbol from it); never over an existing file."""
        stamp = dt.datetime.fromtimestamp(started_ns / 1e9, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        path = self.out_dir / f"{self.symbol.lower()}_{stamp}.gz"
        n = 2
        while path.exists():
            path = self.out_dir / f"{self.symbol.lower()}_{stamp}-{n}.gz"
            n += 1
        return path


def ingest_recording(path: Path, lake_root: Path, inst: Instrument) -> dict:
    """Ingest a finished recording into the lake with the binance parser; returns the lake's manifest."""
    return Lake(lake_root).write(parse_binance([Path(path)], inst), [Path(path)])
