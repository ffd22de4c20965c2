"""One set of a sweep as the files that run it: a backtest TOML and a live (or paper) config.

`grinder sweep export SWEEP_FOLDER [--rank N | --set N]` reads the folder's summary.json (strategy,
fixed params, venue, gates, selection) and ranking.parquet (the swept values of each set), builds
the full parameter set, validates it with the strategy's model, and writes:

- `<name>.backtest.toml`: [strategy], [venue], [gates], what `grinder backtest STRATEGY --config`
  takes; over the same window it gives the digest the sweep recorded for the set.
- `<name>.live.toml`: what `grinder live --config` takes (`grinder.live.config.LiveConfig`): the same
  strategy, params and `[gates]`, the sweep's symbol, the venue's decision step as `step_ms` and its
  partial fill setting for paper mode.

Both files are checked (parsed back and validated) before either is written; each is written
atomically, and an existing file is only replaced with `force`.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from grinder.errors import ConfigError, DataError
from grinder.io.atomic import write_atomic
from grinder.settings import validated


@dataclass(frozen=True)
class Chosen:
    """The exported set: its number and rank in the sweep, strategy name and full validated params."""

    set: int
    rank: int
    strategy: str
    params: dict


def read_sweep(folder: Path) -> tuple[dict, pd.DataFrame]:
    """summary.json and ranking.parquet of a sweep folder; DataError names the missing or broken file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("no such sweep folder", str(folder))
    path = folder / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError("not a sweep folder: no summary.json", str(folder)) from None
    except (OSError, ValueError) as e:
        raise DataError(f"not readable JSON: {e}", str(path)) from None
    missing = [k for k in ("strategy", "fixed", "venue", "gates", "selection") if k not in summary]
    if missing:
        raise DataError(f"not a sweep summary: no {', '.join(missing)}", str(path))
    path = folder / "ranking.parquet"
    try:
        ranking = pd.read_parquet(path)
    except FileNotFoundError:
        raise DataError("not a sweep folder: no ranking.parquet", str(folder)) from None
    except Exception as e:  # pyarrow's errors on a damaged file
        raise DataError(f"not a readable Parquet file: {type(e).__name__}: {e}", str(path)) from None
    return summary, ranking


def choose(summary: dict, ranking: pd.DataFrame, rank: int | None = None, set_no: int | None = None) -> Chosen:
    """The set at `rank` (default 1) or with number `set_no`, its params validated by the strategy."""
    from grinder.core.strategy import get

    if rank is not None and set_no is not None:
        raise ConfigError("give --rank or --set, not both")
    if set_no is not None:
        rows = ranking[ranking["set"] == set_no]
        if rows.empty:
            raise ConfigError(f"no set {set_no} in this sweep (sets {ranking['set'].min()}-{ranking['set'].max()})")
    else:
        rank = 1 if rank is None else rank
        rows = ranking[ranking["rank"] == rank]
        if rows.empty:
            raise ConfigError(f"no rank {rank} in this sweep (ranks 1-{len(ranking)})")
    row = rows.iloc[0]
    strat = get(summary["strategy"])
    swept = {a: _native(row[a]) for a in summary.get("axes", []) if a in row}
    params = strat.validate({**summary["fixed"], **swept}).model_dump()
    return Chosen(int(row["set"]), int(row["rank"]), strat.name, params)


def backtest_config(summary: dict, chosen: Chosen) -> dict:
    """The [strategy], [venue], [gates] tables `grinder backtest --config` reads (unset settings left out)."""
    return {
        "strategy": _plain(chosen.params),
        "venue": _plain(summary["venue"]),
        "gates": _plain(summary["gates"]),
    }


def live_config(summary: dict, chosen: Chosen, mode: str = "paper", api_url: str | None = None,
                state_dir: Path | None = None) -> dict:  # fmt: skip
    """A `grinder live --config` file's content for the chosen set, validated by grinder.live.config.LiveConfig."""
    from grinder.live.config import LiveConfig

    step_ns = int(summary["venue"].get("step_ns") or 100_000_000)
    if step_ns % 1_000_000:
        raise ConfigError(f"the sweep's decision step {step_ns} ns is not a whole number of ms (live step_ms)")
    symbol = summary["selection"]["symbol"]
    cfg = {
        "strategy": chosen.strategy,
        "symbol": symbol,
        "mode": mode,
        **({"api_url": api_url} if api_url else {}),
        "state_dir": str(state_dir or Path("live_state") / f"{chosen.strategy}-{symbol}-set{chosen.set}"),
        "step_ms": step_ns // 1_000_000,
        "paper_partial_fills": bool(summary["venue"].get("partial_fills", False)),
        "params": _plain(chosen.params),
        "gates": _plain(summary["gates"]),  # the same [gates] table as the backtest's: the sweep's gates, live
    }
    validated("live config", LiveConfig, cfg)
    return cfg


def export_set(folder: Path, out: Path | None = None, rank: int | None = None, set_no: int | None = None,
               force: bool = False, mode: str = "paper", api_url: str | None = None,
               state_dir: Path | None = None) -> tuple[Chosen, Path, Path]:  # fmt: skip
    """Write `<out>/rank<R>-set<S>.backtest.toml` and `.live.toml` (out: the sweep folder); returns both paths."""
    from grinder.core.gates import GateConfig
    from grinder.sim.backtest import VenueConfig

    summary, ranking = read_sweep(folder)
    chosen = choose(summary, ranking, rank, set_no)
    back = backtest_config(summary, chosen)
    validated("venue", VenueConfig, back["venue"])
    validated("gates", GateConfig, back["gates"])
    live = live_config(summary, chosen, mode, api_url, state_dir)
    out = Path(out) if out is not None else Path(folder)
    name = f"rank{chosen.rank}-set{chosen.set}"
    paths = (out / f"{name}.backtest.toml", out / f"{name}.live.toml")
    texts = (to_toml(back), to_toml(live))
    for p, text, want in zip(paths, texts, (back, live), strict=True):
        if tomllib.loads(text) != want:  # the writer below is small: never write what does not read back
            raise ConfigError("the exported TOML does not read back as written", str(p))
        if p.exists() and not force:
            raise ConfigError("exists: pass --force to replace it", str(p))
    out.mkdir(parents=True, exist_ok=True)
    for p, text in zip(paths, texts, strict=True):
        write_atomic(p, text)
    return chosen, *paths


def to_toml(cfg: dict) -> str:
    """TOML text of a dict of scalars, lists of scalars and tables of those (tables after the scalars)."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in cfg.items() if not isinstance(v, dict)]
    for k, v in cfg.items():
        if isinstance(v, dict):
            lines += ["", f"[{_key(k)}]", *(f"{_key(a)} = {_value(b)}" for a, b in v.items())]
    return "\n".join(lines).lstrip("\n") + "\n"


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)  # shortest text that reads back as the same float
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise ConfigError(f"cannot write {type(v).__name__} value {v!r} to TOML")


def _string(v: str) -> str:
    """A TOML basic string: quote and backslash escaped, control characters (DEL too) as \\uXXXX."""
    body = "".join("\\" + c if c in '"\\' else f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in v)
    return f'"{body}"'


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() and k.isascii() else _string(k)


def _plain(d: dict) -> dict:
    """Settings without unset (None) values, paths as text: TOML has no null."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in d.items() if v is not None}


def _native(v):
    """numpy scalars as Python values."""
    return v.item() if hasattr(v, "item") else v
