"""Read a backtest run folder (summary.json and the steps, fills and funding tables) into arrays.

Every problem is a `DataError` naming the file, raised before anything is written.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from grinder.errors import DataError

# column -> kind: "int", "float" or "bool"; only what the report reads.
STEP_COLUMNS = {
    "ts": "int",
    "mid": "float",
    "position": "float",
    "mode": "int",
    "quote_bid": "float",
    "quote_ask": "float",
    "equity": "float",
}
FILL_COLUMNS = {"ts_exch": "int", "side": "int", "price": "float", "qty": "float", "maker": "bool", "fee": "float"}
FUNDING_COLUMNS = {"ts": "int", "amount": "float"}
# qrules.parquet, when the engine tracked Binance's quantitative rules (grinder.core.qrules.OUT).
QRULES_COLUMNS = {"ts": "int", "ufr": "float", "gtc_cancel": "float", "expire": "float", "dust": "float",
                  "orders_10s": "float", "orders_1m": "float", "orders_1d": "float"}  # fmt: skip

_KIND_OK = {
    "int": pa.types.is_integer,
    "float": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t),
    "bool": pa.types.is_boolean,
}
_KIND_DTYPE = {"int": np.int64, "float": np.float64, "bool": np.bool_}


@dataclass(frozen=True)
class Run:
    """One run folder in memory: its summary and the columns the report reads, as numpy arrays."""

    path: Path
    summary: dict
    steps: dict[str, np.ndarray]
    fills: dict[str, np.ndarray]
    funding: dict[str, np.ndarray]
    qrules: dict[str, np.ndarray] | None = None  # the quantitative rules per decision, if tracked

    @property
    def settle(self) -> str:
        """Currency of PnL and equity ("quote" when the summary does not say)."""
        return str(self.summary.get("settle") or "quote")

    @property
    def explicit_capital(self) -> float | None:
        """The capital the summary states, if any (validated positive and finite on load)."""
        cap = self.summary.get("capital")
        return None if cap is None else float(cap)

    @property
    def inverse(self) -> bool:
        """Whether the contract is inverse (COIN-M): position in contracts, money in the base asset."""
        return self.summary.get("contract") == "inverse" or self.summary.get("inverse") is True

    @property
    def assets(self) -> tuple[str, str]:
        """(base, quote) of the instrument (see `assets_of`)."""
        return assets_of(self.summary)

    @property
    def position_unit(self) -> str:
        """What the position counts: the base asset (linear), contracts (inverse)."""
        if self.inverse:
            size = self.summary.get("contract_size")
            return f"contracts of {size:g} {self.assets[1]}" if isinstance(size, int | float) else "contracts"
        return self.assets[0]

    def mode_name(self, code: int) -> str:
        """Name of a controller mode code, from the summary's mode_names when it has one."""
        names = self.summary.get("mode_names") or []
        return str(names[code]) if 0 <= code < len(names) else f"mode {code}"


def assets_of(summary: dict) -> tuple[str, str]:
    """(base, quote) of a run's or sweep's instrument: from the summary when it says, else from the instrument
    registry's snapshots for the selection's venue and symbol; "base" and "quote" when neither knows."""
    base, quote = summary.get("base"), summary.get("quote")
    if not (base and quote):
        sel = summary.get("selection") or {}
        try:
            from grinder.data.instruments import find

            snap = find(str(sel.get("venue")), str(sel.get("symbol")))
            if snap is not None:
                inst = snap.instrument(str(sel.get("symbol")))
                base, quote = base or inst.base, quote or inst.quote
        except Exception:  # a registry that cannot be read must not stop a report: units fall back below
            pass
    inverse = summary.get("contract") == "inverse" or summary.get("inverse") is True
    if not quote and not inverse and summary.get("settle"):
        quote = summary["settle"]  # a linear contract settles in its quote asset
    return str(base or "base"), str(quote or "quote")


def load_run(run_dir: Path) -> Run:
    """Read and check a run folder; raises DataError naming the first bad file."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError("no such run folder", str(run_dir))
    summary = read_summary(run_dir / "summary.json")
    steps = read_columns(run_dir / "steps.parquet", STEP_COLUMNS)
    path = run_dir / "steps.parquet"
    if len(steps["ts"]) == 0:
        raise DataError("no rows: the run made no decisions, nothing to report", str(path))
    if np.any(np.diff(steps["ts"]) < 0):
        raise DataError("ts is not in time order", str(path))
    fills = read_columns(run_dir / "fills.parquet", FILL_COLUMNS)
    order = np.argsort(fills["ts_exch"], kind="stable")
    fills = {k: v[order] for k, v in fills.items()}
    funding = read_columns(run_dir / "funding.parquet", FUNDING_COLUMNS)
    qr_path = run_dir / "qrules.parquet"
    qrules = read_columns(qr_path, QRULES_COLUMNS) if qr_path.exists() else None
    return Run(run_dir, summary, steps, fills, funding, qrules)


def read_summary(path: Path) -> dict:
    """summary.json as a dict, with the optional keys the report reads checked."""
    if not path.is_file():
        raise DataError("missing", str(path))
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"not readable JSON: {e}", str(path)) from None
    if not isinstance(summary, dict):
        raise DataError("expected a JSON object", str(path))
    cap = summary.get("capital")
    ok = isinstance(cap, int | float) and not isinstance(cap, bool) and math.isfinite(cap) and cap > 0
    if cap is not None and not ok:
        raise DataError(f"capital must be a positive number, got {cap!r}", str(path))
    names = summary.get("mode_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise DataError("mode_names must be a list of strings", str(path))
    for key in ("params", "venue", "gates", "selection", "counters", "quant_rules"):
        if key in summary and not isinstance(summary[key], dict):
            raise DataError(f"{key} must be a JSON object", str(path))
    return summary


def read_columns(path: Path, columns: dict[str, str]) -> dict[str, np.ndarray]:
    """The named columns of a Parquet file as numpy arrays of the expected kind."""
    if not path.is_file():
        raise DataError("missing", str(path))
    try:
        schema = pq.read_schema(path)
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise DataError(f"missing column(s) {', '.join(missing)}", str(path))
        table = pq.read_table(path, columns=list(columns))
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"not a readable Parquet file: {e}", str(path)) from None
    out = {}
    for name, kind in columns.items():
        col = table.column(name)
        if not _KIND_OK[kind](col.type):
            raise DataError(f"column {name} is {col.type}, expected {kind}", str(path))
        if kind != "float" and col.null_count:
            raise DataError(f"column {name} has {col.null_count} null(s)", str(path))
        # Nulls in float columns become NaN, which the report treats as "no value".
        out[name] = np.asarray(col.to_numpy(), dtype=_KIND_DTYPE[kind])
    return out
