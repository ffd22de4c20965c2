"""Settings as the commands and the library calls take them: a TOML file's tables, then overrides on top.

A backtest, sweep or portfolio reads `[strategy]`, `[venue]`, `[gates]` (and its own tables) from a
TOML file, then strategy parameters and venue options given one by one replace the file's values.
Each table is validated once here, into the model shared by backtest and live, with errors that
name the table and field.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from grinder.errors import ConfigError


def read_toml(path: Path) -> dict:
    """A TOML file's content; ConfigError names the file when it is missing, binary or not TOML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("no such file", str(path))
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        # A gzip or other binary file: TOML is UTF-8 text.
        raise ConfigError("not a TOML text file (not UTF-8: binary or compressed?)", str(path)) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", str(path)) from None


def pairs(items: Iterable[str] | None, option: str, value: str = "VALUE") -> dict[str, str]:
    """`NAME=VALUE` strings (repeated command-line options) as a dict; ConfigError names the bad one."""
    out: dict[str, str] = {}
    for item in items or []:
        name, eq, value_ = item.partition("=")
        if not eq or not name.strip():
            raise ConfigError(f"{option} {item!r}: expected NAME={value}")
        out[name.strip()] = value_.strip()
    return out


def default_lake() -> Path:
    """The lake folder when none is given: $GRINDER_LAKE, else data/lake."""
    return Path(os.environ.get("GRINDER_LAKE", "data/lake"))


def read_settings(
    config: Path | None,
    tables: tuple[str, ...],
    strategy: Mapping[str, Any] | None = None,
    venue: Mapping[str, Any] | None = None,
) -> dict[str, dict]:
    """Each of `tables` from the TOML file `config` (if any), then `strategy` parameters and `venue`
    settings (VenueConfig's fields and units; None: not given) on top."""
    cfg: dict[str, dict] = {t: {} for t in tables}
    if config is not None:
        loaded = read_toml(config)
        unknown = sorted(set(loaded) - set(tables))
        if unknown:
            expected = ", ".join(f"[{t}]" for t in tables)
            raise ConfigError(f"unknown table(s) {', '.join(unknown)}; expected {expected}", str(config))
        for k, v in loaded.items():
            if not isinstance(v, dict):
                raise ConfigError(f"[{k}] must be a table", str(config))
            cfg[k] = dict(v)
    cfg["strategy"].update(strategy or {})
    for key, value in (venue or {}).items():
        if value is not None:
            cfg["venue"][key] = str(value) if isinstance(value, Path) else value
    return cfg


def validated(table: str, model: type[BaseModel], values: Mapping[str, Any]):
    """`model` built from a table's values; ConfigError names the table and the first bad field."""
    try:
        return model(**values)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"{table}: {where}: {first['msg']}") from None


def venue_and_gates(cfg: Mapping[str, Mapping[str, Any]]):
    """The `[venue]` and `[gates]` tables as VenueConfig and GateConfig."""
    from grinder.core.gates import GateConfig
    from grinder.sim.backtest import VenueConfig

    return validated("venue", VenueConfig, cfg["venue"]), validated("gates", GateConfig, cfg["gates"])


def parse_time(s: str | int | None) -> int | None:
    """A time as exchange ns: an int, digits, or ISO 8601 UTC (2024-08-08T23:55); None stays None."""
    if s is None or isinstance(s, int):
        return s
    if s.isdigit():
        return int(s)
    import numpy as np

    try:
        return int(np.datetime64(s.replace("Z", ""), "ns").astype("int64"))
    except ValueError:
        raise ConfigError(f"cannot read time {s!r}: use ISO 8601 (2024-08-08T23:55) or nanoseconds") from None
