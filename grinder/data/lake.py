"""The Parquet lake: tables hive-partitioned by venue/symbol/date, written atomically.

Each ingest writes one part file per (table, partition), named after the ingest's *group id*:
a hash of the format, venue, symbol and the content hashes of its source files. Re-ingesting
the same files therefore replaces the same part files (no duplicate rows), and an ingest whose
sources overlap an earlier ingest supersedes it. Files are staged first and moved into place
only once everything is written, so a failed ingest leaves the lake untouched.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from grinder.data import tape_cache
from grinder.data.errors import DataError
from grinder.data.instruments import Instrument
from grinder.data.schema import INSTRUMENTS, MARKET_TABLES

NS_PER_DAY = 86_400 * 1_000_000_000
# lz4 decodes about twice as fast as zstd on these tables (bench/data_layer.py) for ~1.7x the
# size; zstd suits archives and the committed sample.
COMPRESSIONS = ("lz4", "zstd", "snappy", "none")


def column_encodings(schema: pa.Schema) -> dict:
    """Parquet writer options for a market table: int64 columns delta-encoded, the rest dictionary-encoded.

    Times, `seq` and ids rise through a file in small steps, which delta encoding packs into a few
    bits a row; in Arrow's default dictionary encoding `seq` falls back to plain 8-byte values
    (decision 017: the lakes take 2.3x less disk, and their tables read 1.4-1.9x faster).
    """
    delta = [f.name for f in schema if f.type == pa.int64()]
    return {
        "use_dictionary": [f.name for f in schema if f.name not in delta],
        "column_encoding": dict.fromkeys(delta, "DELTA_BINARY_PACKED"),
    }


@dataclass
class IngestReport:
    """What an ingest did: rows written per table, rows skipped per reason, problems found."""

    rows: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    gaps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str, n: int = 1) -> None:
        """Count `n` input rows left out of the lake for `reason`."""
        if n:
            self.skipped[reason] = self.skipped.get(reason, 0) + n

    def to_dict(self) -> dict:
        """Plain-dict form for the manifest and the CLI."""
        return {"rows": self.rows, "skipped": self.skipped, "gaps": self.gaps, "notes": self.notes}


@dataclass
class IngestBatch:
    """Parsed, validated rows of one ingest, ready to be written to the lake."""

    fmt: str
    instrument: Instrument
    tables: dict[str, pa.Table]
    report: IngestReport


def file_sha256(path: Path) -> str:
    """Content hash of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def partition_dir(table: str, venue: str, symbol: str, date: str) -> Path:
    """Relative folder of one hive partition."""
    return Path(table) / f"venue={venue}" / f"symbol={symbol}" / f"date={date}"


def _order_by_exchange_time(batch: IngestBatch) -> None:
    """Make every table but the book non-decreasing in exchange time; report what was reordered.

    Trades, BBO and funding rows are independent, so a stable sort is safe. Book rows are kept in
    the order they must be applied (sorting them could apply a diff before its snapshot).
    """
    for name, table in list(batch.tables.items()):
        ts = table.column("ts_exch").to_numpy()
        back = np.flatnonzero(ts[1:] < ts[:-1])
        if not back.size:
            continue
        worst_ms = float((ts[back] - ts[back + 1]).max()) / 1e6
        if name == "book":
            batch.report.notes.append(
                f"book: exchange time goes backwards {back.size} times (by up to {worst_ms:g} ms); "
                "rows kept in apply order"
            )
            continue
        order = np.lexsort((table.column("seq").to_numpy(), ts))
        batch.tables[name] = table.take(pa.array(order))
        batch.report.notes.append(
            f"{name}: {back.size} rows arrived out of exchange-time order (by up to {worst_ms:g} ms); sorted"
        )


def _day_str(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=int(day))).isoformat()


class Lake:
    """A Parquet lake rooted at `root` (created on first write)."""

    def __init__(self, root: str | os.PathLike, compression: str = "lz4"):
        if compression not in COMPRESSIONS:
            raise DataError(f"unknown compression {compression!r}; expected one of {', '.join(COMPRESSIONS)}")
        self.root = Path(root)
        self.compression = compression

    @property
    def manifests_dir(self) -> Path:
        return self.root / "_ingest"

    def manifests(self) -> list[dict]:
        """Every ingest recorded in this lake."""
        if not self.manifests_dir.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(self.manifests_dir.glob("*.json"))]

    @contextmanager
    def _locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def write(self, batch: IngestBatch, sources: list[Path], key: str = "") -> dict:
        """Write `batch` atomically; returns the manifest recorded for it.

        `sources` are the input files (their content hashes identify the ingest); generated data
        without files passes its parameters as `key` instead.
        """
        inst = batch.instrument
        _order_by_exchange_time(batch)
        hashes = [file_sha256(p) for p in sources]
        key = "|".join([batch.fmt, inst.venue, inst.symbol, key, *hashes])
        group = hashlib.sha256(key.encode()).hexdigest()[:16]
        with self._locked():
            stage = self.root / ".staging" / f"{group}-{os.getpid()}"
            shutil.rmtree(stage, ignore_errors=True)
            try:
                parts = self._stage(batch, group, stage)
                manifest = {
                    "group": group,
                    "format": batch.fmt,
                    "venue": inst.venue,
                    "symbol": inst.symbol,
                    "key": key,
                    "sources": [
                        {"path": str(p), "sha256": h, "bytes": p.stat().st_size}
                        for p, h in zip(sources, hashes, strict=True)
                    ],
                    "parts": parts,
                    "report": batch.report.to_dict(),
                    "ingested_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                }
                self._commit(stage, parts, manifest, set(hashes))
                tape_cache.drop(self.root, inst.venue, inst.symbol)
            finally:
                shutil.rmtree(stage, ignore_errors=True)
                try:
                    (self.root / ".staging").rmdir()
                except OSError:
                    pass
        return manifest

    def _stage(self, batch: IngestBatch, group: str, stage: Path) -> list[str]:
        inst = batch.instrument
        parts: list[str] = []
        for table, data in batch.tables.items():
            if table not in MARKET_TABLES:
                raise DataError(f"unknown table {table!r}")
            if data.num_rows == 0:
                continue
            data = data.cast(MARKET_TABLES[table])
            day = data.column("ts_exch").to_numpy() // NS_PER_DAY
            days = np.unique(day)
            for d in days:
                rel = partition_dir(table, inst.venue, inst.symbol, _day_str(d)) / f"part-{group}.parquet"
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                part = data if len(days) == 1 else data.filter(pa.array(day == d))
                pq.write_table(part, stage / rel, compression=self.compression, **column_encodings(part.schema))
                parts.append(str(rel))
        rel = Path("instruments") / f"venue={inst.venue}" / f"symbol={inst.symbol}" / "instrument.parquet"
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        row = {k: [v] for k, v in inst.model_dump().items()}
        pq.write_table(pa.table(row, schema=INSTRUMENTS), stage / rel)
        parts.append(str(rel))
        return parts

    def _commit(self, stage: Path, parts: list[str], manifest: dict, hashes: set[str]) -> None:
        group = manifest["group"]
        # Earlier ingests of any of these files (alone or grouped differently) are superseded.
        old = [m for m in self.manifests() if m["group"] == group or hashes & {s["sha256"] for s in m["sources"]}]
        for rel in parts:
            dest = self.root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / rel, dest)
        keep = set(parts)
        for m in old:
            for rel in m["parts"]:
                if rel not in keep and not rel.startswith("instruments/"):
                    (self.root / rel).unlink(missing_ok=True)
            if m["group"] != group:
                (self.manifests_dir / f"{m['group']}.json").unlink(missing_ok=True)
        self.manifests_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.manifests_dir / f".{group}.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, self.manifests_dir / f"{group}.json")
