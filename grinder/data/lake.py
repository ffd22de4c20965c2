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
import uuid
from contextlib import contextmanager, suppress
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
    _clear_dead_spools(root)
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
        if isinstance(batch, StreamedBatch) and batch.streaming:
            return batch.write_to(self, sources, key)
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

    def _compare(self, new: dict, rows) -> tuple[dict | None, list[dict], list[str]]:
        """(ingest already holding every new row or None, ingests the new one supersedes, notes).

        `rows`: the new rows' hashes per table, or a function returning them (read only when needed).
        Only ingests of the same instrument whose exchange-time spans meet the new one's are read.
        """
        old, notes = [], []
        mine: dict[str, np.ndarray] = {}
        for m in self.manifests():
            if (m["venue"], m["symbol"]) != (new["venue"], new["symbol"]):
                continue
            if "spans" in m and not _overlap(m["spans"], new["spans"]):
                continue  # a continuation (a later day): nothing to compare
            if not mine:
                mine = {t: np.sort(h) for t, h in (rows() if callable(rows) else rows).items()}
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


# --- Streaming ingest (decision 045) --------------------------------------------------------------

SPOOL = ".spool"
# pq.write_table's default row group length: streamed part files come out byte for byte as Lake.write's.
ROW_GROUP = 1 << 20
# Trades, BBO and funding rows are written in exchange-time order; a streamed table holds back its
# last HOLD_NS of exchange time before writing, so rows arriving that late still sort in place.
# A row later than that makes the table be re-sorted from its spooled files at the end.
HOLD_NS = 600 * 1_000_000_000


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clear_dead_spools(root: Path) -> None:
    """Remove the spools of streamed ingests whose process is gone (killed before it committed)."""
    d = root / SPOOL
    if not d.is_dir():
        return
    for sp in d.iterdir():
        pid = sp.name.split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(sp, ignore_errors=True)
    with suppress(OSError):
        d.rmdir()


class _DayFile:
    """One partition's part file of a streamed table, written a row group at a time."""

    def __init__(self, path: Path, schema: pa.Schema, compression: str):
        self.path, self.schema, self.compression = path, schema, compression
        self.buf: list[pa.Table] = []
        self.n = 0
        self.writer: pq.ParquetWriter | None = None

    def _write(self, t: pa.Table) -> None:
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(
                self.path, self.schema, compression=self.compression, **column_encodings(self.schema)
            )
        self.writer.write_table(t, row_group_size=ROW_GROUP)

    def add(self, t: pa.Table) -> None:
        self.buf.append(t)
        self.n += t.num_rows
        while self.n >= ROW_GROUP:
            whole = pa.concat_tables(self.buf).combine_chunks()
            self._write(whole.slice(0, ROW_GROUP))
            rest = whole.slice(ROW_GROUP)
            self.buf, self.n = [rest], rest.num_rows

    def close(self) -> None:
        if self.n or self.writer is None:
            self._write(pa.concat_tables(self.buf).combine_chunks())
        self.buf, self.n = [], 0
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class _TableSpool:
    """A streamed table: rows in final order split into per-day part files and a file of row hashes."""

    def __init__(self, name: str, spool: Path, compression: str):
        self.name, self.dir, self.compression = name, spool / name, compression
        self.dir.mkdir(parents=True)
        self.schema = MARKET_TABLES[name]
        self.sort = name != "book"  # the book stays in apply order (see _order_by_exchange_time)
        self.hash_path = spool / f"{name}.hashes"
        self.hashes = open(self.hash_path, "wb")  # noqa: SIM115 - closed by finish/abort
        self.days: dict[int, _DayFile] = {}
        self.rows = 0
        self.lo = self.hi = 0
        self.last_in: int | None = None  # last exchange time in input order (for the report's note)
        self.back = 0
        self.worst = 0
        self.pending: list[pa.Table] = []
        self.npending = 0
        self.max_seen: int | None = None
        self.flushed_max: int | None = None
        self.dirty = False

    def add(self, t: pa.Table) -> None:
        if not t.num_rows:
            return
        t = t.cast(self.schema)
        ts = t.column("ts_exch").to_numpy()
        seq_ts = ts if self.last_in is None else np.concatenate(([self.last_in], ts))
        back = np.flatnonzero(seq_ts[1:] < seq_ts[:-1])
        if back.size:
            self.back += back.size
            self.worst = max(self.worst, int((seq_ts[back] - seq_ts[back + 1]).max()))
        self.last_in = int(ts[-1])
        if not self.sort:
            self._emit(t, ts)
            return
        if self.flushed_max is not None and int(ts.min()) < self.flushed_max:
            self.dirty = True
        self.pending.append(t)
        self.npending += t.num_rows
        self.max_seen = int(ts.max()) if self.max_seen is None else max(self.max_seen, int(ts.max()))
        if self.npending >= ROW_GROUP:
            self._flush(self.max_seen - HOLD_NS)

    def _flush(self, upto: int | None) -> None:
        """Write the pending rows with exchange time <= `upto` (all if None) in (ts_exch, seq) order."""
        if not self.npending:
            return
        t = pa.concat_tables(self.pending).combine_chunks()
        ts = t.column("ts_exch").to_numpy()
        order = np.lexsort((t.column("seq").to_numpy(), ts))
        if upto is None:
            k = len(order)
        else:
            k = int(np.searchsorted(ts[order], upto, side="right"))
            if k == 0:
                return
        t = t.take(pa.array(order))
        self._emit(t.slice(0, k), ts[order[:k]])
        rest = t.slice(k)
        self.pending, self.npending = [rest], rest.num_rows
        self.flushed_max = int(ts[order[k - 1]])

    def _emit(self, t: pa.Table, ts: np.ndarray) -> None:
        self.hashes.write(row_hashes(t).tobytes())
        if not self.rows:
            self.lo, self.hi = int(ts.min()), int(ts.max())
        else:
            self.lo, self.hi = min(self.lo, int(ts.min())), max(self.hi, int(ts.max()))
        self.rows += t.num_rows
        day = ts // NS_PER_DAY
        if day[0] == day[-1] and (day == day[0]).all():
            self._day(int(day[0])).add(t)
            return
        for d in dict.fromkeys(day.tolist()):  # days in order of appearance; rows in order within each
            self._day(d).add(t.filter(pa.array(day == d)))

    def _day(self, d: int) -> _DayFile:
        if d not in self.days:
            self.days[d] = _DayFile(self.dir / f"{d}.parquet", self.schema, self.compression)
        return self.days[d]

    def note(self) -> str | None:
        """The report's note on rows out of exchange-time order, as Lake.write words it."""
        if not self.back:
            return None
        worst_ms = float(self.worst) / 1e6
        if not self.sort:
            return (
                f"{self.name}: exchange time goes backwards {self.back} times (by up to {worst_ms:g} ms); "
                "rows kept in apply order"
            )
        return f"{self.name}: {self.back} rows arrived out of exchange-time order (by up to {worst_ms:g} ms); sorted"

    def finish(self) -> None:
        self._flush(None)
        if self.dirty:  # a row came later than HOLD_NS: sort the whole table once, from its files
            for f in self.days.values():
                f.close()
            t = pa.concat_tables([pq.read_table(self.days[d].path) for d in sorted(self.days)])
            for f in self.days.values():
                f.path.unlink()
            self.days, self.rows, self.dirty = {}, 0, False
            self.hashes.close()
            self.hashes = open(self.hash_path, "wb")  # noqa: SIM115 - closed below
            self.pending, self.npending = [t], t.num_rows
            self._flush(None)
        for f in self.days.values():
            f.close()
        self.hashes.close()

    def abort(self) -> None:
        for f in self.days.values():
            if f.writer is not None:
                with suppress(Exception):
                    f.writer.close()
        self.hashes.close()

    def row_hashes(self) -> np.ndarray:
        return np.fromfile(self.hash_path, np.uint64)


class StreamWriter:
    """Writes one ingest's rows as they are parsed, then commits them like `Lake.write` (decision 045).

    Rows go to per-day part files in a private spool under the lake (`<root>/.spool/<pid>-<id>`, which
    readers ignore and `recover` removes once its process is gone) and their row hashes to a file
    beside them; nothing in the lake changes before `commit`, which compares, names and moves the
    files under the lake's lock through the same journal as `Lake.write`. The result is the same
    lake as `Lake.write` of the whole batch: the same part files, byte for byte, and manifest.
    """

    def __init__(self, lake: Lake, fmt: str, inst: Instrument, sources: list[Path], key: str, tables: list[str]):
        partition_dir("book", inst.venue, inst.symbol, "x")  # names checked before anything is read or written
        for t in tables:
            if t not in MARKET_TABLES:
                raise DataError(f"unknown table {t!r}")
        self.lake, self.fmt, self.inst, self.sources, self.key = lake, fmt, inst, list(sources), key
        self._made_root = not lake.root.exists()
        self.spool = lake.root / SPOOL / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.spool.mkdir(parents=True)
        self.tables = {t: _TableSpool(t, self.spool, lake.compression) for t in tables}

    def add(self, table: str, rows: pa.Table) -> None:
        """Append rows of `table`, in their final order (the book in apply order; the other tables in
        arrival order: they are sorted by exchange time as Lake.write sorts them)."""
        self.tables[table].add(rows)

    def abort(self) -> None:
        """Drop everything written so far: the lake is as it was."""
        for t in self.tables.values():
            t.abort()
        shutil.rmtree(self.spool, ignore_errors=True)
        with suppress(OSError):
            self.spool.parent.rmdir()
        if self._made_root:
            with suppress(OSError):
                self.lake.root.rmdir()

    def __enter__(self) -> StreamWriter:
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is not None or self.spool.exists():
            self.abort()

    def commit(self, report: IngestReport) -> dict:
        """Commit the rows added (atomically, rows kept once: see `Lake.write`); returns the manifest."""
        lake, inst = self.lake, self.inst
        for t in self.tables.values():
            note = t.note()
            if note:
                report.notes.append(note)
            t.finish()
        present = {n: t for n, t in self.tables.items() if t.rows}
        h = hashlib.sha256("|".join([self.fmt, inst.venue, inst.symbol, self.key]).encode())
        for n in sorted(present):
            h.update(n.encode())
            with open(present[n].hash_path, "rb") as f:
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(block)
        group = h.hexdigest()[:16]
        hashes = [file_sha256(p) for p in self.sources]
        manifest = {
            "group": group,
            "format": self.fmt,
            "venue": inst.venue,
            "symbol": inst.symbol,
            "key": "|".join([self.fmt, inst.venue, inst.symbol, self.key, *hashes]),
            "sources": [
                {"path": str(p), "sha256": fh, "bytes": p.stat().st_size}
                for p, fh in zip(self.sources, hashes, strict=True)
            ],
            "spans": {n: [t.lo, t.hi, t.rows] for n, t in present.items()},
            "parts": [],
            "report": report.to_dict(),
            "ingested_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        with lake._locked():
            stage = lake.root / STAGING / f"{group}-{os.getpid()}"
            try:
                holder, old, notes = lake._compare(manifest, lambda: {n: t.row_hashes() for n, t in present.items()})
                if holder is not None:
                    note = f"every row is in the lake already (ingest {holder['group']} from {_names(holder)}): "
                    if lake._instrument_changed(inst):
                        lake._commit(stage, lake._stage_instrument(inst, stage), [], inst)
                        note += "only the instrument's rules were updated"
                    else:
                        note += "nothing written"
                    return {**holder, "report": {"rows": {}, "skipped": {}, "gaps": [], "notes": [*notes, note]}}
                manifest["report"]["notes"] = [*manifest["report"]["notes"], *notes]
                parts: list[str] = []
                for n, t in present.items():
                    for d in sorted(t.days):
                        rel = partition_dir(n, inst.venue, inst.symbol, _day_str(d)) / f"part-{group}.parquet"
                        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                        os.replace(t.days[d].path, stage / rel)
                        parts.append(str(rel))
                manifest["parts"] = parts + lake._stage_instrument(inst, stage)
                (stage / "_ingest").mkdir(parents=True, exist_ok=True)
                (stage / "_ingest" / f"{group}.json").write_text(json.dumps(manifest, indent=1))
                keep = set(manifest["parts"])
                deletes = [r for m in old for r in m["parts"] if r not in keep and not r.startswith("instruments/")]
                deletes += [f"_ingest/{m['group']}.json" for m in old if m["group"] != group]
                lake._commit(stage, [*manifest["parts"], f"_ingest/{group}.json"], deletes, inst)
            finally:
                if not (lake.root / JOURNAL).exists():
                    shutil.rmtree(lake.root / STAGING, ignore_errors=True)
                shutil.rmtree(self.spool, ignore_errors=True)
                with suppress(OSError):
                    self.spool.parent.rmdir()
        return manifest


class StreamedBatch(IngestBatch):
    """An ingest parsed as it is written: `Lake.write` streams it chunk by chunk into the lake; reading
    `tables` or `report` first parses it whole into memory instead (as `IngestBatch`).

    `pieces(report)` yields `(table, rows)` in each table's final order and fills `report`.
    """

    def __init__(self, fmt: str, instrument: Instrument, pieces, table_names: list[str]):
        self.fmt, self.instrument = fmt, instrument
        self._pieces, self._names = pieces, list(table_names)
        self._tables: dict[str, pa.Table] | None = None
        self._report: IngestReport | None = None
        self._written = False

    def _materialize(self) -> None:
        report = IngestReport()
        parts: dict[str, list[pa.Table]] = {n: [] for n in self._names}
        for n, t in self._pieces(report):
            parts[n].append(t)
        self._tables = {
            n: pa.concat_tables(p).combine_chunks() if p else MARKET_TABLES[n].empty_table() for n, p in parts.items()
        }
        self._report = report

    @property
    def tables(self) -> dict[str, pa.Table]:  # type: ignore[override]
        if self._tables is None:
            self._materialize()
        return self._tables

    @tables.setter
    def tables(self, value: dict[str, pa.Table]) -> None:
        self._tables = value

    @property
    def report(self) -> IngestReport:  # type: ignore[override]
        if self._report is None:
            self._materialize()
        return self._report

    @report.setter
    def report(self, value: IngestReport) -> None:
        self._report = value

    def __repr__(self) -> str:  # the dataclass' would parse the files to show the tables
        state = "unparsed" if self.streaming else "parsed"
        return f"StreamedBatch({self.fmt!r}, {self.instrument.venue}/{self.instrument.symbol}, {state})"

    @property
    def streaming(self) -> bool:
        """Whether it has not been parsed yet (so `Lake.write` will stream it)."""
        return self._tables is None and not self._written

    def write_to(self, lake: Lake, sources: list[Path], key: str = "") -> dict:
        """Parse and write in bounded memory; returns the manifest (as `Lake.write`)."""
        report = IngestReport()
        with StreamWriter(lake, self.fmt, self.instrument, sources, key, self._names) as w:
            for n, t in self._pieces(report):
                w.add(n, t)
            manifest = w.commit(report)
        self._report, self._written = report, True
        return manifest
