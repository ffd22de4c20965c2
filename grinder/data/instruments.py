"""Instrument metadata: exchange trading rules and fees, validated once at the edge.

The rules of Binance's USDⓈ-M (`binance-usdm`) and COIN-M (`binance-coinm`) contracts come from
dated snapshots of the venue's `exchangeInfo` (docs/data/instruments.md): the one bundled with
Grinder (`instruments.toml`) and those `grinder data instruments --refresh` writes to a folder
($GRINDER_INSTRUMENTS, else data/instruments). A lookup takes the newest snapshot that lists the
symbol. Fees are the venue's published schedule, by VIP tier (VIP 0 unless asked).

The venue fixes the contract type: every USDⓈ-M contract is linear, every COIN-M one inverse. A
COIN-M symbol (`BTCUSD_PERP`, `ETHUSD_250627`) under binance-usdm, or a USDⓈ-M one under
binance-coinm, is an error, and so is an inverse contract whose contract size nobody stated.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from grinder.errors import ConfigError, DataError, VenueError

# Venue and symbol names become folder names in the lake and the tape cache: one path part each.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_name(what: str, value: str) -> str:
    """`value` if it is a safe venue or symbol name (one path part, no `..`); else a ConfigError naming it."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value) or ".." in value:
        raise ConfigError(
            f"invalid {what} {value!r}: use letters, digits, '_', '.', '-' (not first, no '..'); "
            "it becomes a folder name in the lake"
        )
    return value


class Instrument(BaseModel):
    """Trading rules of one contract: tick and lot in quote/base units, fees as fractions."""

    # No inf or NaN: an infinite tick or minimum notional passes a "> 0" bound and breaks every price after.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    venue: str = Field(min_length=1)
    symbol: str = Field(min_length=1)
    contract: Literal["linear", "inverse"] = "linear"
    base: str = ""
    quote: str = ""
    settle: str = ""
    tick_size: float = Field(gt=0)
    lot_size: float = Field(gt=0)
    min_notional: float = Field(default=0.0, ge=0)
    contract_size: float = Field(default=1.0, gt=0)
    maker_fee: float = Field(default=0.0, ge=-0.01, le=0.01)
    taker_fee: float = Field(default=0.0, ge=-0.01, le=0.01)

    @field_validator("venue", "symbol")
    @classmethod
    def _path_part(cls, value: str, info) -> str:
        # A ConfigError (not ValueError) passes through pydantic unchanged: the CLI prints one line.
        return check_name(info.field_name, value)

    @model_validator(mode="after")
    def _settle_default(self) -> Instrument:
        if not self.settle:
            object.__setattr__(self, "settle", self.quote if self.contract == "linear" else self.base)
        return self


# --- venues ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VenueSpec:
    """A venue whose rules Grinder keeps snapshots of: its contract type and where its exchangeInfo is."""

    contract: Literal["linear", "inverse"]
    endpoint: str  # the REST path of exchangeInfo
    ccxt_class: str  # the ccxt exchange that speaks to it
    ccxt_api: str  # ccxt's urls['api'] key for that path's prefix
    ccxt_method: str  # ccxt's implicit method for exchangeInfo
    prefix: str  # the path prefix ccxt_api stands for
    status_field: str  # the exchangeInfo field that holds a contract's status


VENUES: dict[str, VenueSpec] = {
    "binance-usdm": VenueSpec("linear", "/fapi/v1/exchangeInfo", "binanceusdm", "fapiPublic",
                              "fapiPublicGetExchangeInfo", "/fapi/v1", "status"),
    "binance-coinm": VenueSpec("inverse", "/dapi/v1/exchangeInfo", "binancecoinm", "dapiPublic",
                               "dapiPublicGetExchangeInfo", "/dapi/v1", "contractStatus"),
}  # fmt: skip

# COIN-M symbols: <COIN>USD_PERP and the dated <COIN>USD_<YYMMDD>. USDⓈ-M ones never have `USD_`.
COINM_SYMBOL = re.compile(r"[A-Z0-9]+USD_(?:PERP|\d{6})")
_BARE_USD = re.compile(r"[A-Z0-9]+USD")  # BTCUSD: the pair of a COIN-M contract, not a contract
_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "BTC")  # the quote of an unlisted USDⓈ-M symbol, by suffix


def check_family(venue: str, symbol: str) -> None:
    """A ConfigError if `symbol` cannot be a contract of `venue` (a COIN-M symbol under binance-usdm, ...)."""
    if venue == "binance-usdm":
        if COINM_SYMBOL.fullmatch(symbol):
            raise ConfigError(
                f"{symbol} is a COIN-M contract (inverse, margined in the coin), not one of binance-usdm: "
                "pass --venue binance-coinm"
            )
        if _BARE_USD.fullmatch(symbol):
            raise ConfigError(
                f"{symbol} is not a binance-usdm contract (those are quoted in USDT, USDC or BTC); the COIN-M "
                f"perpetual is {symbol}_PERP: pass --venue binance-coinm --symbol {symbol}_PERP"
            )
    elif venue == "binance-coinm" and not COINM_SYMBOL.fullmatch(symbol):
        if _BARE_USD.fullmatch(symbol):
            raise ConfigError(f"{symbol} is a COIN-M pair, not a contract: the perpetual is --symbol {symbol}_PERP")
        raise ConfigError(
            f"{symbol} is not a binance-coinm contract (those are <COIN>USD_PERP or <COIN>USD_<YYMMDD>, "
            "inverse); USDⓈ-M contracts are under --venue binance-usdm"
        )


# --- snapshots ---------------------------------------------------------------------------------

FORMAT = 1
COLUMNS = ("status", "type", "base", "quote", "settle", "tick_size", "lot_size", "min_notional", "contract_size")
_DECIMAL = re.compile(r"\d{1,18}(?:\.\d{1,18})?")
_ASSET = re.compile(r"[A-Z0-9]{1,20}")
_WORD = re.compile(r"[A-Z_]{0,40}")
BUNDLED = "instruments.toml"


@dataclass(frozen=True)
class Fees:
    """A venue's fee schedule: [maker, taker] fractions by VIP tier (VIP 0 first), with its source and date."""

    vip: tuple[tuple[float, float], ...]
    schedule: str = ""
    as_of: str = ""
    source: str = ""

    def tier(self, venue: str, n: int) -> tuple[float, float]:
        if not 0 <= n < len(self.vip):
            raise ConfigError(
                f"--fee-tier {n}: the fee schedule of {venue} has VIP 0 .. {len(self.vip) - 1} "
                f"({self.schedule or 'no name'}, as of {self.as_of or '?'}); pass --maker-fee and --taker-fee"
            )
        return self.vip[n]


@dataclass(frozen=True)
class Snapshot:
    """One venue's contracts as of `taken` (the venue's own clock), from `origin` (a file, or the bundle)."""

    venue: str
    taken: str
    server_time_ms: int
    source: str
    endpoint: str
    fees: Fees
    rows: dict[str, tuple[str, ...]] = field(repr=False)
    origin: str = "bundled"

    def instrument(self, symbol: str, fee_tier: int = 0) -> Instrument:
        st, typ, base, quote, settle, tick, lot, min_notional, size = self.rows[symbol]
        maker, taker = self.fees.tier(self.venue, fee_tier)
        contract = VENUES[self.venue].contract
        return Instrument(venue=self.venue, symbol=symbol, contract=contract, base=base, quote=quote, settle=settle,
                          tick_size=float(tick), lot_size=float(lot), min_notional=float(min_notional),
                          contract_size=float(size) if contract == "inverse" else 1.0,
                          maker_fee=maker, taker_fee=taker)  # fmt: skip

    def label(self) -> str:
        return f"{self.venue} snapshot of {self.taken} ({'bundled' if self.origin == 'bundled' else self.origin})"


def _bad(origin: str, what: str) -> ConfigError:
    return ConfigError(f"instrument snapshot: {what}", origin)


def _check_row(venue: str, symbol: str, row: object) -> tuple[str, ...] | str:
    """The row as a tuple of strings, or why it is not a valid row of `venue`."""
    if not isinstance(symbol, str) or not NAME_PATTERN.fullmatch(symbol) or ".." in symbol:
        return "symbol is not a lake-safe name"
    if not isinstance(row, list | tuple) or len(row) != len(COLUMNS) or not all(isinstance(v, str) for v in row):
        return f"not a list of {len(COLUMNS)} strings ({', '.join(COLUMNS)})"
    st, typ, base, quote, settle, tick, lot, min_notional, size = row
    if not (_WORD.fullmatch(st) and _WORD.fullmatch(typ)):
        return f"status {st!r} or type {typ!r} is not an upper-case word"
    if not all(_ASSET.fullmatch(a) for a in (base, quote, settle)):
        return f"asset names {base!r}, {quote!r}, {settle!r} are not upper-case letters and digits"
    for name, v, positive in (("tick size", tick, True), ("lot size", lot, True),
                              ("min notional", min_notional, False), ("contract size", size, True)):  # fmt: skip
        if not _DECIMAL.fullmatch(v) or (positive and Decimal(v) == 0):
            return f"{name} {v!r} is not a {'positive ' if positive else ''}decimal"
    try:
        check_family(venue, symbol)
    except ConfigError as e:
        return str(e)
    return tuple(row)


def _parse_fees(origin: str, venue: str, t: object) -> Fees:
    if not isinstance(t, dict) or not isinstance(t.get("vip"), list) or not t["vip"]:
        raise _bad(origin, f"[{venue}.fees] needs vip = [[maker, taker], ...] (VIP 0 first)")
    vip = []
    for i, pair in enumerate(t["vip"]):
        ok = isinstance(pair, list) and len(pair) == 2 and all(type(v) in (int, float) for v in pair)
        if not ok or not all(-0.01 <= v <= 0.01 for v in pair):
            raise _bad(origin, f"[{venue}.fees] vip[{i}] = {pair!r}: expected [maker, taker], each in -0.01 .. 0.01")
        vip.append((float(pair[0]), float(pair[1])))
    return Fees(tuple(vip), str(t.get("schedule", "")), str(t.get("as_of", "")), str(t.get("source", "")))


def parse_snapshots(text: str, origin: str) -> list[Snapshot]:
    """The venue sections of a snapshot file; a ConfigError naming `origin` if anything in it is off."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _bad(origin, f"not TOML ({e})") from None
    if doc.get("format") != FORMAT:
        raise _bad(origin, f"format = {doc.get('format')!r}, expected {FORMAT}")
    out = []
    for venue, sec in doc.items():
        if venue == "format":
            continue
        if venue not in VENUES:
            raise _bad(origin, f"[{venue}]: not a venue Grinder keeps snapshots of ({', '.join(VENUES)})")
        if not isinstance(sec, dict):
            raise _bad(origin, f"{venue} is not a table")
        if tuple(sec.get("columns", ())) != COLUMNS:
            raise _bad(origin, f"[{venue}] columns = {sec.get('columns')!r}, expected {list(COLUMNS)}")
        ms, taken = sec.get("server_time_ms"), sec.get("taken")
        if type(ms) is not int or ms < 0 or not isinstance(taken, str) or not taken:
            raise _bad(origin, f"[{venue}] needs taken (text) and server_time_ms (an integer >= 0)")
        symbols = sec.get("symbols")
        if not isinstance(symbols, dict) or not symbols:
            raise _bad(origin, f"[{venue}.symbols] is missing or empty")
        rows = {}
        for symbol, row in symbols.items():
            checked = _check_row(venue, symbol, row)
            if isinstance(checked, str):
                raise _bad(origin, f"[{venue}.symbols] {symbol}: {checked}")
            rows[symbol] = checked
        fees = _parse_fees(origin, venue, sec.get("fees"))
        out.append(Snapshot(venue, taken, ms, str(sec.get("source", "")), str(sec.get("endpoint", "")), fees, rows,
                            origin))  # fmt: skip
    if not out:
        raise _bad(origin, "holds no venue section")
    return out


@functools.lru_cache(maxsize=64)
def _read(path: str, mtime_ns: int, size: int) -> tuple[Snapshot, ...]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"instrument snapshot: cannot read it ({e})", path) from None
    return tuple(parse_snapshots(text, path))


@functools.lru_cache(maxsize=1)
def bundled() -> tuple[Snapshot, ...]:
    """The snapshots that ship with Grinder (`grinder/data/instruments.toml`)."""
    text = resources.files("grinder.data").joinpath(BUNDLED).read_text(encoding="utf-8")
    return tuple(parse_snapshots(text, "bundled"))


def snapshot_dir(directory: str | Path | None = None) -> Path:
    """Where refreshed snapshots live: `directory`, else $GRINDER_INSTRUMENTS, else data/instruments."""
    return Path(directory) if directory is not None else Path(os.environ.get("GRINDER_INSTRUMENTS", "data/instruments"))


def snapshots(directory: str | Path | None = None) -> dict[str, list[Snapshot]]:
    """Every snapshot by venue, newest first: the bundled ones and the `*.toml` files of `snapshot_dir`."""
    found = list(bundled())
    d = snapshot_dir(directory)
    if d.exists() and not d.is_dir():
        raise ConfigError("the instrument snapshot folder is not a folder", str(d))
    if d.is_dir():
        for p in sorted(d.glob("*.toml")):
            st = p.stat()
            found.extend(_read(str(p), st.st_mtime_ns, st.st_size))
    by: dict[str, list[Snapshot]] = {v: [] for v in VENUES}
    for s in found:
        by[s.venue].append(s)
    for v in by:
        by[v].sort(key=lambda s: (s.server_time_ms, s.origin != "bundled"), reverse=True)
    return by


def find(venue: str, symbol: str, directory: str | Path | None = None) -> Snapshot | None:
    """The newest snapshot that lists `symbol` of `venue` (None if none does)."""
    for s in snapshots(directory).get(venue, []):
        if symbol in s.rows:
            return s
    return None


def known_instruments(directory: str | Path | None = None) -> dict[tuple[str, str], Instrument]:
    """Every contract Grinder has rules for, keyed by (venue, symbol), from the newest snapshot listing it."""
    out: dict[tuple[str, str], Instrument] = {}
    for venue, snaps in snapshots(directory).items():
        for s in reversed(snaps):  # older first: newer ones overwrite
            for symbol in s.rows:
                out[(venue, symbol)] = s.instrument(symbol)
    return out


def _assets_of(venue: str, symbol: str) -> dict:
    """Base, quote and settle asset of a symbol no snapshot lists, from its shape."""
    if venue == "binance-coinm":
        base = symbol.split("_")[0].removesuffix("USD")
        return {"base": base, "quote": "USD", "settle": base}
    if venue == "binance-usdm":
        pair = symbol.split("_")[0]
        for q in _QUOTES:
            if pair.endswith(q) and len(pair) > len(q):
                return {"base": pair[: -len(q)], "quote": q, "settle": q}
    return {}


def resolve_instrument(
    venue: str,
    symbol: str,
    overrides: dict | None = None,
    *,
    fee_tier: int = 0,
    directory: str | Path | None = None,
) -> Instrument:
    """The rules for (venue, symbol) with `overrides` applied (None values ignored).

    Known contracts come from the newest snapshot listing them, fees from the venue's schedule at
    VIP `fee_tier`. A contract no snapshot lists needs tick_size and lot_size, and an inverse one
    its contract_size. A venue's contracts all have its type: `contract` may not say otherwise.
    """
    check_name("venue", venue)
    check_name("symbol", symbol)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    spec = VENUES.get(venue)
    if spec is not None:
        check_family(venue, symbol)
        if overrides.get("contract", spec.contract) != spec.contract:
            raise ConfigError(f"every {venue} contract is {spec.contract}: --contract {overrides['contract']} "
                              f"does not apply to {symbol}")  # fmt: skip
    snap = find(venue, symbol, directory) if spec is not None else None
    if snap is not None:
        base = snap.instrument(symbol, fee_tier).model_dump()
    else:
        missing = [k for k in ("tick_size", "lot_size") if k not in overrides]
        inverse = overrides.get("contract", spec.contract if spec else "linear") == "inverse"
        if inverse and "contract_size" not in overrides:
            missing.append("contract_size")
        if missing:
            flags = " and ".join("--" + m.replace("_", "-") for m in missing)
            if spec is None:
                raise ConfigError(f"no built-in rules for {venue}/{symbol}: pass {flags}")
            newest = snapshots(directory)[venue]
            when = newest[0].taken if newest else "none"
            raise ConfigError(
                f"no built-in rules for {venue}/{symbol}: no snapshot lists it (newest: {when}); refresh them "
                f"with `grinder data instruments --refresh --venue {venue}`, or pass {flags}"
            )
        base = {"venue": venue, "symbol": symbol, **_assets_of(venue, symbol)}
        if spec is not None:
            base["contract"] = spec.contract
            maker, taker = fees_of(venue, directory).tier(venue, fee_tier)
            base.update(maker_fee=maker, taker_fee=taker)
    if "contract_size" in overrides and overrides.get("contract", base.get("contract", "linear")) != "inverse":
        raise ConfigError(f"{venue}/{symbol} is linear: --contract-size applies to inverse contracts only")
    # Rebuilt, not model_copy: overrides are validated like everything else.
    return Instrument(**{**base, **overrides})


def fees_of(venue: str, directory: str | Path | None = None) -> Fees:
    """The fee schedule of `venue`'s newest snapshot."""
    snaps = snapshots(directory).get(venue)
    if not snaps:
        raise ConfigError(f"no instrument snapshot of {venue}")
    return snaps[0].fees


def off_grid(values: np.ndarray, step: float) -> np.ndarray:
    """Indices of values that are not an integer multiple of `step` (tolerates float rounding)."""
    q = values / step
    # Decimal prices parsed to binary floats are off the grid by ~1e-10 steps at most.
    return np.flatnonzero(np.abs(q - np.rint(q)) > 1e-6)


# --- refresh -----------------------------------------------------------------------------------


def _filters(row: dict) -> dict[str, dict]:
    fs = row.get("filters")
    return {f.get("filterType"): f for f in fs if isinstance(f, dict)} if isinstance(fs, list) else {}


def _text(v: object) -> str:
    """A decimal field as the venue wrote it (Binance sends strings; COIN-M's contractSize is a number)."""
    if type(v) is int:
        return str(v)
    return v.strip() if isinstance(v, str) else ""


def compact_exchange_info(venue: str, info: object) -> tuple[dict[str, tuple[str, ...]], int, dict[str, int]]:
    """(rows by symbol, the venue's serverTime in ms, skipped rows by reason) of an exchangeInfo answer.

    A DataError if it is not an exchangeInfo answer, lists another venue family's contracts, or
    no valid contract.
    """
    spec = VENUES[venue]
    if not isinstance(info, dict) or not isinstance(info.get("symbols"), list):
        raise DataError(f"the answer to {spec.endpoint} is not an exchangeInfo object with a symbols list")
    ms = info.get("serverTime")
    if type(ms) is not int or not 0 <= ms < 2**53:
        raise DataError(f"the answer to {spec.endpoint} has no serverTime in ms ({ms!r})")
    rows: dict[str, tuple[str, ...]] = {}
    skipped: dict[str, int] = {}
    for r in info["symbols"]:
        symbol = r.get("symbol") if isinstance(r, dict) else None
        if not isinstance(symbol, str):
            skipped["entry without a symbol"] = skipped.get("entry without a symbol", 0) + 1
            continue
        other = "binance-usdm" if venue == "binance-coinm" else "binance-coinm"
        coinm = COINM_SYMBOL.fullmatch(symbol) is not None
        if NAME_PATTERN.fullmatch(symbol) and coinm != (venue == "binance-coinm"):
            raise DataError(
                f"the exchangeInfo answer lists {symbol}, a contract of {other}, not of {venue}: "
                f"is --venue {other} meant? (nothing written)"
            )
        f = _filters(r)
        size = _text(r.get("contractSize")) if venue == "binance-coinm" else "1"
        min_notional = _text(f.get("MIN_NOTIONAL", {}).get("notional", "0")) if venue == "binance-usdm" else "0"
        tick, lot = _text(f.get("PRICE_FILTER", {}).get("tickSize")), _text(f.get("LOT_SIZE", {}).get("stepSize"))
        row = [_text(r.get(spec.status_field)), _text(r.get("contractType")), _text(r.get("baseAsset")),
               _text(r.get("quoteAsset")), _text(r.get("marginAsset")), tick, lot, min_notional, size]  # fmt: skip
        checked = _check_row(venue, symbol, row)
        if isinstance(checked, str):
            why = f"{symbol}: {checked}"
            skipped[why] = skipped.get(why, 0) + 1
        elif symbol in rows:
            skipped[f"{symbol}: listed twice"] = skipped.get(f"{symbol}: listed twice", 0) + 1
        else:
            rows[symbol] = checked
    if not rows:
        raise DataError(f"the answer to {spec.endpoint} lists no valid contract (nothing written)")
    return rows, ms, skipped


def iso_ms(ms: int) -> str:
    """Milliseconds since 1970 as ISO 8601 UTC to the millisecond."""
    t = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def render_snapshots(sections: list[Snapshot], header: str = "") -> str:
    """The text of a snapshot file holding `sections` (what `parse_snapshots` reads back)."""

    def q(v: str) -> str:  # a TOML basic string is a JSON string
        return json.dumps(v, ensure_ascii=False)

    def num(v: float) -> str:  # plain decimals: 8e-05 reads back, 0.00008 reads better
        return repr(v) if "e" not in repr(v) else f"{v:.12f}".rstrip("0")

    lines = [f"# {h}".rstrip() for h in header.splitlines()] + ([""] if header else []) + [f"format = {FORMAT}"]
    for s in sections:
        f = s.fees
        lines += ["", f"[{s.venue}]", f"taken = {q(s.taken)}", f"server_time_ms = {s.server_time_ms}",
                  f"endpoint = {q(s.endpoint)}", f"source = {q(s.source)}",
                  "columns = [" + ", ".join(q(c) for c in COLUMNS) + "]", "",
                  f"[{s.venue}.fees]", f"schedule = {q(f.schedule)}", f"as_of = {q(f.as_of)}",
                  f"source = {q(f.source)}",
                  "# [maker, taker] as fractions of the notional, VIP 0 first", "vip = ["]  # fmt: skip
        lines += [f"  [{num(m)}, {num(t)}],  # VIP {i}" for i, (m, t) in enumerate(f.vip)]
        lines += ["]", "", f"[{s.venue}.symbols]", "# " + ", ".join(COLUMNS)]
        lines += [f"{q(sym)} = [" + ", ".join(q(v) for v in row) + "]" for sym, row in sorted(s.rows.items())]
    return "\n".join(lines) + "\n"


def fetch_exchange_info(venue: str, url: str | None = None, timeout_s: float = 30.0) -> dict:
    """The venue's exchangeInfo answer, through ccxt (at `url`, a Binance-compatible server, if given)."""
    import ccxt

    spec = VENUES[venue]
    opts: dict = {"options": {"fetchCurrencies": False}, "timeout": int(timeout_s * 1000), "enableRateLimit": False}
    if url is not None:
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url):
            raise ConfigError(f"--url {url!r}: expected http(s)://host[:port][/path]")
        opts["urls"] = {"api": {spec.ccxt_api: url.rstrip("/") + spec.prefix}}
    ex = getattr(ccxt, spec.ccxt_class)(opts)
    try:
        return getattr(ex, spec.ccxt_method)()
    except ccxt.BaseError as e:
        why = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}" if str(e) else type(e).__name__
        raise VenueError(f"cannot fetch {spec.endpoint} from {url or 'Binance'}: {why} (nothing written)") from None


@dataclass
class RefreshReport:
    path: Path
    snapshot: Snapshot
    previous: Snapshot | None
    skipped: dict[str, int]
    new: list[str]
    changed: list[str]
    gone: list[str]


def refresh(venue: str, url: str | None = None, directory: str | Path | None = None, info: dict | None = None
            ) -> RefreshReport:  # fmt: skip
    """Fetch `venue`'s exchangeInfo (or take `info`) and write it as a new dated snapshot, atomically.

    The fee schedule is carried over from the venue's newest snapshot (exchangeInfo holds no fees).
    Nothing is written unless the whole answer is a valid exchangeInfo of `venue`.
    """
    if venue not in VENUES:
        raise ConfigError(f"--venue {venue}: snapshots are kept for {', '.join(VENUES)}")
    d = snapshot_dir(directory)
    prev = snapshots(directory)[venue]
    prev = prev[0] if prev else None
    if info is None:
        info = fetch_exchange_info(venue, url)
    rows, ms, skipped = compact_exchange_info(venue, info)
    spec = VENUES[venue]
    taken = iso_ms(ms)
    where = url or "Binance"
    snap = Snapshot(venue, taken, ms, f"GET {spec.endpoint} from {where} through ccxt (grinder data instruments "
                    f"--refresh)", f"GET {spec.endpoint}", prev.fees if prev else fees_of(venue), rows, "")  # fmt: skip
    text = render_snapshots(
        [snap],
        f"Grinder instrument snapshot of {venue}, taken {taken} from {where}.\n"
        "Written by `grinder data instruments --refresh`; see docs/data/instruments.md.",
    )
    path = d / f"{venue}-{taken.replace('-', '').replace(':', '').replace('.', '')}.toml"
    parse_snapshots(text, str(path))  # never write what would not read back
    _write_atomic(path, text)
    snap = dataclasses.replace(snap, origin=str(path))
    old = prev.rows if prev else {}
    changed = sorted(s for s in rows if s in old and not _same(old[s], rows[s]))
    return RefreshReport(path, snap, prev, skipped, sorted(set(rows) - set(old)), changed, sorted(set(old) - set(rows)))


def _same(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Whether two rows state the same rules ("0.10" and "0.1" are one tick)."""
    return a[:5] == b[:5] and all(Decimal(x) == Decimal(y) for x, y in zip(a[5:], b[5:], strict=True))


def _write_atomic(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise ConfigError(f"cannot write the snapshot ({e.strerror or e})", str(path)) from None
