"""Ingest: parse vendor files into validated lake tables (one module per input format)."""

from __future__ import annotations

from pathlib import Path

from grinder.data.instruments import Instrument
from grinder.data.lake import IngestBatch

FORMATS = ("binance", "tardis", "hftbacktest")


def parse(fmt: str, paths: list[Path], inst: Instrument) -> IngestBatch:
    """Parse `paths` in format `fmt` for instrument `inst`."""
    if fmt == "binance":
        from grinder.data.ingest.binance import parse_binance

        return parse_binance(paths, inst)
    if fmt == "tardis":
        from grinder.data.ingest.tardis import parse_tardis

        return parse_tardis(paths, inst)
    if fmt == "hftbacktest":
        from grinder.data.ingest.hftbacktest import parse_hftbacktest_npz

        return parse_hftbacktest_npz(paths, inst)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
