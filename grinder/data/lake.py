"""The Parquet lake: tables hive-partitioned by venue/symbol/date, committed atomically.

Each ingest writes one part file per (table, partition), named after the ingest's *group id*: a
hash of the format, venue, symbol and its rows (never of the source files' bytes, so the same
data gzipped, re-compressed or plain is one ingest). An ingest whose rows include an earlier
ingest's supersedes it; one whose rows are all in the lake already writes nothing; one that
shares only some rows with an earlier ingest is refused (decision 019).

A commit stages every file, writes a journal of its renames and deletes durably, carries it out
and then drops it; whoever opens the lake next (reader or writer, under `<root>/.lock`) finishes
an interrupted journal and clears `.staging`, so readers see a whole ingest or none of it.
Readers hold a shared lock while they list and read part files; writers an exclusive one.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import functools
import hashlib
import json
import os
import shutil
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from grinder.data import tape_cache
from grinder.data.instruments import Instrument, check_name
from grinder.data.schema import INSTRUMENTS, MARKET_TABLES
from grinder.errors import ConfigError, DataError
from grinder.io.atomic import apply_journal, fsync_tree, write_atomic

NS_PER_DAY = 86_400 * 1_000_000_000
# Parquet codecs an ingest may choose: lz4 (the default) decodes faster, zstd makes smaller files
# for archives and the committed sample (decision 032).
COMPRESSIONS = ("lz4", "zstd", "snappy", "none")


def column_encodings(schema: pa.Schema) -> dict:
    """Parquet writer options for a market table: int64 columns delta-encoded, the rest dictionary-encoded.

    Times, `seq` and ids rise through a file in small steps, which delta encoding packs into a few
    bits a row; in Arrow's default dictionary encoding `seq` falls back to plain 8-byte values
    (decision 017: smaller files that read faster).
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
    """Relative folder of one hive partition (venue and symbol must be safe path parts)."""
    venue, symbol = check_name("venue", venue), check_name("symbol", symbol)
    return Path(table) / f"venue={venue}" / f"symbol={symbol}" / f"date={date}"


# Row identity ignores `seq`: it numbers rows within one ingest, so it differs for the same row
# ingested from a prefix of a capture and from the whole (or from a file listed second).
_SALT = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, elementwise on uint64 (wraps on overflow by design)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def row_hashes(table: pa.Table) -> np.ndarray:
    """64-bit hash of each row over every column but `seq`: the row's identity across ingests."""
    h = np.full(table.num_rows, _SALT, np.uint64)
    for name in table.column_names:
        if name == "seq":
            continue
        a = table.column(name).to_numpy()
        if a.dtype.kind == "f":
            bits = (a.astype(np.float64) + 0.0).view(np.uint64)  # + 0.0: -0.0 and 0.0 are one value
        else:
            bits = a.astype(np.int64).view(np.uint64)
        h = _mix(h ^ _mix(bits + _SALT))
    return h


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


JOURNAL = "_journal.json"
STAGING = ".staging"
# Fault injection for tests: the name of a commit step (`staged`, `journaled`, `move-<i>`,
# `delete-<i>`, `applied`, `committed`) at which the writing process SIGKILLs itself.
KILL_AT_ENV = "GRINDER_LAKE_KILL_AT"

# Read locks this thread holds, per lake: a writer in the same thread would wait on itself.
_held = threading.local()


def _step(name: str) -> None:
    """A point between two commit steps; dies here if the test environment asks for it."""
    if os.environ.get(KILL_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _held_counts() -> dict[str, int]:
    if not hasattr(_held, "counts"):
        _held.counts = {}
    return _held.counts


def recover(root: Path) -> None:
    """Finish an interrupted commit and clear staging leftovers.

    The caller holds the exclusive lock. A journal is only written once every file it moves is
    staged and on disk, so rolling it forward always ends in the committed lake.
    """
    root = Path(root)
    journal = root / JOURNAL
    if journal.exists():
        try:
            plan = json.loads(journal.read_text())
            moves, deletes = plan["moves"], plan["deletes"]
        except (ValueError, KeyError, TypeError):  # written by rename, so only a hand edit gets here
            raise DataError("unreadable commit journal: restore it or the lake from a copy", str(journal)) from None
        apply_journal(root, moves, deletes, lambda _: None)
        tape_cache.drop(root, plan["venue"], plan["symbol"])
        journal.unlink()
    shutil.rmtree(root / STAGING, ignore_errors=True)
    for tmp in root.glob(f".{JOURNAL}.*.tmp"):  # killed while writing the journal: it never existed
        tmp.unlink()


def _interrupted(root: Path) -> bool:
    return (root / JOURNAL).exists() or (root / STAGING).exists()


@contextmanager
def read_lock(root: str | os.PathLike):
    """Hold a shared lock on the lake: no commit starts or ends while it is held.

    An interrupted commit found on the way in is finished first (under the exclusive lock). A lake
    that does not exist yet, or cannot be written (a read-only copy), is read without a lock.
    """
    root = Path(root)
    counts = _held_counts()
    key = os.path.realpath(root)
    if counts.get(key):  # nested (a cached load builds the tape): this thread holds it already
        counts[key] += 1
        try:
            yield
        finally:
            counts[key] -= 1
        return
    try:
        fh = open(root / ".lock", "a")  # noqa: SIM115 - held until the caller is done reading
    except OSError:
        fh = None
    if fh is None:
        if root.is_dir() and (root / JOURNAL).exists():
            raise DataError(f"the lake at {root} has an unfinished commit: open it once with write access")
        yield
        return
    try:
        while True:
            fcntl.flock(fh, fcntl.LOCK_SH)
            if not _interrupted(root):
                break
            fcntl.flock(fh, fcntl.LOCK_UN)
            fcntl.flock(fh, fcntl.LOCK_EX)
            recover(root)
            fcntl.flock(fh, fcntl.LOCK_UN)
        counts[key] = counts.get(key, 0) + 1
        try:
            yield
        finally:
            counts[key] -= 1
    finally:
        fh.close()  # closing the file releases the lock


def lake_reader(fn):
    """Decorate `fn(root, venue, symbol, ...)`: names checked as path parts, run under `read_lock(root)`."""

    @functools.wraps(fn)
    def wrapper(root, venue, symbol, *args, **kwargs):
        check_name("venue", venue)
        check_name("symbol", symbol)
        with read_lock(root):
            return fn(root, venue, symbol, *args, **kwargs)

    return wrapper


def _member(values: np.ndarray, sorted_pool: np.ndarray) -> np.ndarray:
    """Whether each of `values` is in `sorted_pool` (ascending); a binary search beats np.isin here (decision 019)."""
    if not sorted_pool.size:
        return np.zeros(values.shape, bool)
    i = np.minimum(np.searchsorted(sorted_pool, values), sorted_pool.size - 1)
    return sorted_pool[i] == values


def _spans(tables: dict[str, pa.Table]) -> dict[str, list[int]]:
    """[first ts_exch, last ts_exch, rows] per table."""
    out = {}
    for name, t in tables.items():
        ts = t.column("ts_exch").to_numpy()
        out[name] = [int(ts.min()), int(ts.max()), int(t.num_rows)]
    return out


def _overlap(a: dict, b: dict) -> bool:
    """Whether two ingests' tables (spans as from `_spans`) share any stretch of exchange time."""
    return any(t in b and a[t][0] <= b[t][1] and b[t][0] <= a[t][1] for t in a)


def _names(m: dict) -> str:
    return ", ".join(s["path"] for s in m["sources"]) or f"generated data ({m['key'].split('|')[3]})"


class Lake:
    """A Parquet lake rooted at `root` (created on first write)."""

    def __init__(self, root: str | os.PathLike, compression: str = "lz4"):
        if compression not in COMPRESSIONS:
            raise ConfigError(f"unknown compression {compression!r}; expected one of {', '.join(COMPRESSIONS)}")
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
        if _held_counts().get(os.path.realpath(self.root)):
            raise DataError(
                f"this thread still reads the lake at {self.root} (an open Catalog?): close it before writing"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                recover(self.root)
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def write(self, batch: IngestBatch, sources: list[Path], key: str = "") -> dict:
        """Write `batch` atomically; returns the manifest recorded for it.

        `sources` are the input files (recorded for provenance); generated data without files
        passes its parameters as `key`. Rows already in the lake are not stored twice: if every
        row is there, nothing is written and the returned manifest (the holder's, with an empty
        report) says so in a note.
        """
        inst = batch.instrument
        partition_dir("book", inst.venue, inst.symbol, "x")  # names checked before anything is read or written
        _order_by_exchange_time(batch)
        tables: dict[str, pa.Table] = {}
        for table, data in batch.tables.items():
            if table not in MARKET_TABLES:
                raise DataError(f"unknown table {table!r}")
            if data.num_rows:
                tables[table] = data.cast(MARKET_TABLES[table])
        rows = {t: row_hashes(d) for t, d in tables.items()}
        h = hashlib.sha256("|".join([batch.fmt, inst.venue, inst.symbol, key]).encode())
        for t in sorted(rows):
            h.update(t.encode())
            h.update(rows[t].tobytes())
        group = h.hexdigest()[:16]
        hashes = [file_sha256(p) for p in sources]
        spans = _spans(tables)
        manifest = {
            "group": group,
            "format": batch.fmt,
            "venue": inst.venue,
            "symbol": inst.symbol,
            "key": "|".join([batch.fmt, inst.venue, inst.symbol, key, *hashes]),
            "sources": [
                {"path": str(p), "sha256": fh, "bytes": p.stat().st_size} for p, fh in zip(sources, hashes, strict=True)
            ],
            "spans": spans,
            "parts": [],
            "report": batch.report.to_dict(),
            "ingested_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        with self._locked():
            stage = self.root / STAGING / f"{group}-{os.getpid()}"
            try:
                holder, old, notes = self._compare(manifest, rows)
                if holder is not None:
                    note = f"every row is in the lake already (ingest {holder['group']} from {_names(holder)}): "
                    if self._instrument_changed(inst):
                        self._commit(stage, self._stage_instrument(inst, stage), [], inst)
                        note += "only the instrument's rules were updated"
                    else:
                        note += "nothing written"
                    return {**holder, "report": {"rows": {}, "skipped": {}, "gaps": [], "notes": [*notes, note]}}
                manifest["report"]["notes"] = [*manifest["report"]["notes"], *notes]
                manifest["parts"] = self._stage(tables, inst, group, stage)
                (stage / "_ingest").mkdir(parents=True, exist_ok=True)
                (stage / "_ingest" / f"{group}.json").write_text(json.dumps(manifest, indent=1))
                keep = set(manifest["parts"])
                deletes = [r for m in old for r in m["parts"] if r not in keep and not r.startswith("instruments/")]
                deletes += [f"_ingest/{m['group']}.json" for m in old if m["group"] != group]
                self._commit(stage, [*manifest["parts"], f"_ingest/{group}.json"], deletes, inst)
            finally:
                # Before the journal exists a failure leaves the lake as it was; after, `recover` finishes it.
                if not (self.root / JOURNAL).exists():
                    shutil.rmtree(self.root / STAGING, ignore_errors=True)
        return manifest

    def _compare(self, new: dict, rows: dict[str, np.ndarray]) -> tuple[dict | None, list[dict], list[str]]:
        """(ingest already holding every new row or None, ingests the new one supersedes, notes).

        Only ingests of the same instrument whose exchange-time spans meet the new one's are read.
        """
        old, notes = [], []
        mine: dict[str, np.ndarray] = {}
        for m in self.manifests():
            if (m["venue"], m["symbol"]) != (new["venue"], new["symbol"]):
                continue
            if "spans" in m and not _overlap(m["spans"], new["spans"]):
                continue  # a continuation (a later day): nothing to compare
            mine = mine or {t: np.sort(h) for t, h in rows.items()}
            theirs = self._row_hashes(m)
            mine_in = {t: _member(mine[t], np.sort(theirs[t])) for t in mine if t in theirs}
            theirs_in = {t: _member(theirs[t], mine[t]) for t in theirs if t in mine}
            common = any(f.any() for f in mine_in.values())
            if all(t in mine_in and mine_in[t].all() for t in mine):
                return m, [], notes
            if all(t in theirs_in and theirs_in[t].all() for t in theirs):
                old.append(m)
            elif common:
                raise DataError(
                    f"{_names(new)} and {_names(m)} (ingest {m['group']}) share some rows but neither holds "
                    "all of the other's: ingest the whole capture once, or cut the files where they meet"
                )
            else:
                notes.append(
                    f"overlaps ingest {m['group']} ({_names(m)}) in exchange time with no row in common: both kept"
                )
        return None, old, notes

    def _row_hashes(self, m: dict) -> dict[str, np.ndarray]:
        """Row hashes per table of an ingest already in the lake, read from its part files."""
        out: dict[str, list[np.ndarray]] = {}
        for rel in m["parts"]:
            table = rel.split("/", 1)[0]
            if table in MARKET_TABLES:
                cols = [f.name for f in MARKET_TABLES[table] if f.name != "seq"]
                data = pq.read_table(self.root / rel, columns=cols)
                out.setdefault(table, []).append(row_hashes(data))
        return {t: np.concatenate(v) for t, v in out.items()}

    def _instrument_changed(self, inst: Instrument) -> bool:
        p = self.root / "instruments" / f"venue={inst.venue}" / f"symbol={inst.symbol}" / "instrument.parquet"
        return not p.is_file() or Instrument(**pq.read_table(p, columns=INSTRUMENTS.names).to_pylist()[0]) != inst

    def _stage_instrument(self, inst: Instrument, stage: Path) -> list[str]:
        rel = Path("instruments") / f"venue={inst.venue}" / f"symbol={inst.symbol}" / "instrument.parquet"
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        row = {k: [v] for k, v in inst.model_dump().items()}
        pq.write_table(pa.table(row, schema=INSTRUMENTS), stage / rel)
        return [str(rel)]

    def _stage(self, tables: dict[str, pa.Table], inst: Instrument, group: str, stage: Path) -> list[str]:
        parts: list[str] = []
        for table, data in tables.items():
            day = data.column("ts_exch").to_numpy() // NS_PER_DAY
            days = np.unique(day)
            for d in days:
                rel = partition_dir(table, inst.venue, inst.symbol, _day_str(d)) / f"part-{group}.parquet"
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                part = data if len(days) == 1 else data.filter(pa.array(day == d))
                pq.write_table(part, stage / rel, compression=self.compression, **column_encodings(part.schema))
                parts.append(str(rel))
        return parts + self._stage_instrument(inst, stage)

    def _commit(self, stage: Path, moves: list[str], deletes: list[str], inst: Instrument) -> None:
        """Move the staged files `moves` (paths relative to the stage and the lake) in, delete `deletes`.

        The journal is written (durably) only once every staged file is on disk; from then on the
        commit is decided, and `recover` finishes it if this process dies.
        """
        fsync_tree(stage)
        _step("staged")
        stage_rel = stage.relative_to(self.root)
        plan = {
            "venue": inst.venue,
            "symbol": inst.symbol,
            "moves": [[str(stage_rel / r), r] for r in moves],
            "deletes": deletes,
        }
        write_atomic(self.root / JOURNAL, json.dumps(plan, indent=1), durable=True)
        _step("journaled")
        apply_journal(self.root, plan["moves"], plan["deletes"], _step)
        tape_cache.drop(self.root, inst.venue, inst.symbol)
        _step("applied")
        (self.root / JOURNAL).unlink()
        _step("committed")
        shutil.rmtree(self.root / STAGING, ignore_errors=True)
