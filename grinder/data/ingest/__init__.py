"""Ingest: parse vendor files into validated lake tables (one module per input format)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from grinder.data.instruments import Instrument
from grinder.data.lake import IngestBatch

FORMATS = ("binance", "tardis", "hftbacktest")


def parse(
    fmt: str, paths: list[Path], inst: Instrument, progress: Callable[[int, int], None] | None = None
) -> IngestBatch:
    """Parse `paths` in format `fmt` for instrument `inst`.

    Binance and Tardis files come back unparsed, as a `StreamedBatch`: `Lake.write` reads and writes
    them a chunk at a time in bounded memory; reading its `tables` or `report` first parses them whole.

    `progress(done, total)`, when given, is told the bytes of the files read so far out of their
    total size on disk (compressed bytes for gzip), a few times a second at most and always at the
    end of the reading: while `Lake.write` streams a Binance or Tardis batch, or here for hftbacktest
    files (read whole).
    """
    if fmt == "binance":
        from grinder.data.ingest.binance import binance_batch

        return binance_batch(paths, inst, progress=progress)
    if fmt == "tardis":
        from grinder.data.ingest.tardis import tardis_batch

        return tardis_batch(paths, inst, progress=progress)
    if fmt == "hftbacktest":
        from grinder.data.ingest.hftbacktest import parse_hftbacktest_npz
        from grinder.data.ingest.source import byte_progress

        batch = parse_hftbacktest_npz(paths, inst)
        reads = byte_progress(paths, progress)
        if reads is not None:
            reads.finish()
        return batch
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
