"""The feature store: computed features kept in the lake, keyed by the feature set's version hash.

Layout, beside the market tables (hive partitions, as they are):
  <root>/features/version=<hash>/feature_set.json             the declaration the hash covers
  <root>/features/version=<hash>/venue=V/symbol=S/date=D/part-<key>.parquet
Each part holds `ts_exch` (int64 ns) and one float64 column per feature, ordered by time. The
part's key is a SHA-256 of the tape's data fingerprint (`grinder.track.provenance`) and the sample
times, so writing the same features again replaces the same files (each written to a temp file
and renamed into place) under the lake's exclusive lock, and readers never see half a file.
`attach(catalog)` adds a `features` view to a `grinder.data.catalog.Catalog` (columns: the
features, `ts_exch`, and the partition columns `version`, `venue`, `symbol`, `date`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from grinder.data.catalog import Catalog
from grinder.data.instruments import check_name
from grinder.data.lake import NS_PER_DAY, _held_counts, recover
from grinder.data.tape import Tape
from grinder.errors import DataError
from grinder.features.offline import Features
from grinder.features.spec import FeatureSet
from grinder.io.atomic import write_atomic
from grinder.track.provenance import data_fingerprint

TABLE = "features"
DECLARATION = "feature_set.json"


def version_dir(root: Path, version: str) -> Path:
    """The folder of one feature-set version in the lake at `root`."""
    if len(version) != 64 or any(c not in "0123456789abcdef" for c in version):
        raise DataError(f"not a feature-set version (64 lowercase hex digits): {version!r}")
    return Path(root) / TABLE / f"version={version}"


@contextmanager
def _write_lock(root: Path):
    """The lake's exclusive lock (the one `Lake.write` takes): no reader or commit meanwhile."""
    # The lake's own count of shared locks this thread holds: waiting for them would never end.
    if _held_counts().get(os.path.realpath(root)):
        raise DataError(f"this thread still reads the lake at {root} (an open Catalog?): close it before writing")
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            recover(root)
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def part_key(tape: Tape, ts: np.ndarray) -> str:
    """16 hex digits naming the parts of a tape's features at sample times `ts` (int64 ns): the tape's
    fingerprint and the times."""
    h = hashlib.sha256(data_fingerprint(tape).encode())
    h.update(np.ascontiguousarray(ts, "<i8").data)
    return h.hexdigest()[:16]


def write_features(root: str | Path, tape: Tape, features: Features, feature_set: FeatureSet) -> list[Path]:
    """Store `features` (computed from `tape` with `feature_set`) in the lake at `root`; the parts written.

    One part per UTC date of the samples; a part already there for the same tape and times is replaced.
    """
    root = Path(root)
    if features.version != feature_set.version or features.names != feature_set.names:
        have, want = features.version[:12], feature_set.version[:12]
        raise DataError(f"features of version {have} are not of feature set {want}")
    venue = check_name("venue", tape.instrument.venue)
    symbol = check_name("symbol", tape.instrument.symbol)
    key = part_key(tape, features.ts)
    vdir = version_dir(root, feature_set.version)
    days = features.ts // NS_PER_DAY
    bounds = np.flatnonzero(np.diff(days)) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, len(days)]
    written = []
    with _write_lock(root):
        vdir.mkdir(parents=True, exist_ok=True)
        write_atomic(vdir / DECLARATION, json.dumps(feature_set.declaration(), indent=2, sort_keys=True) + "\n")
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            if a == b:
                continue
            date = str(np.datetime64(int(days[a]), "D"))
            cols = {"ts_exch": pa.array(features.ts[a:b])}
            cols |= {n: pa.array(features.values[k, a:b]) for k, n in enumerate(features.names)}
            d = vdir / f"venue={venue}" / f"symbol={symbol}" / f"date={date}"
            d.mkdir(parents=True, exist_ok=True)
            path = d / f"part-{key}.parquet"
            tmp = d / f".part-{key}.parquet.tmp"
            pq.write_table(pa.table(cols), tmp, compression="lz4")
            os.replace(tmp, path)
            written.append(path)
    return written


def read_part(root: str | Path, tape: Tape, feature_set: FeatureSet, at: np.ndarray) -> Features | None:
    """The stored features of exactly this tape at exactly these sample times (`write_features` wrote them
    under `part_key(tape, at)`), or None when they are not stored. Read from the part files themselves,
    not the `features` view, which also holds other tapes' and other times' parts."""
    venue, symbol = tape.instrument.venue, tape.instrument.symbol
    key = part_key(tape, at)
    base = version_dir(Path(root), feature_set.version) / f"venue={venue}" / f"symbol={symbol}"
    parts = sorted(base.glob(f"date=*/part-{key}.parquet"))
    if not parts:
        return None
    tables = [pq.read_table(f, columns=["ts_exch", *feature_set.names]) for f in parts]
    ts = np.concatenate([t.column("ts_exch").to_numpy() for t in tables]).astype(np.int64)
    if not np.array_equal(ts, at):  # a part of another day missing, or a foreign file under our name
        return None
    values = np.vstack([np.concatenate([t.column(n).to_numpy() for t in tables]) for n in feature_set.names])
    return Features(feature_set.names, values.astype(np.float64), ts, np.full(len(ts), -1, np.int64),
                    feature_set.version)  # fmt: skip


def attach(catalog: Catalog) -> bool:
    """Add the `features` view to an open catalog; False when the lake holds no stored features."""
    pattern = catalog.root / TABLE / "*/*/*/*/*.parquet"
    if not any(catalog.root.glob(f"{TABLE}/*/*/*/*/*.parquet")):
        return False
    catalog.con.sql(
        f"CREATE OR REPLACE VIEW {TABLE} AS SELECT * FROM read_parquet('{pattern}', hive_partitioning = true, "
        "hive_types = {'version': VARCHAR, 'venue': VARCHAR, 'symbol': VARCHAR, 'date': DATE}, union_by_name = true)"
    )
    if TABLE not in catalog.tables:
        catalog.tables.append(TABLE)
    return True


def stored_feature_set(root: str | Path, version: str) -> dict:
    """The declaration stored with a version (what `FeatureSet.declaration()` gave when it was written)."""
    p = version_dir(Path(root), version) / DECLARATION
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise DataError(f"no stored features of version {version[:12]} in the lake at {root}") from None


def read_features(
    root: str | Path, version: str, venue: str, symbol: str, start_ns: int | None = None, end_ns: int | None = None
) -> Features:
    """Stored features of one version and instrument in [start_ns, end_ns), ordered by time, through the catalog.

    `row` is -1 throughout (tape rows do not survive storage).
    """
    names = tuple(stored_feature_set(root, version)["names"])
    check_name("venue", venue)
    check_name("symbol", symbol)
    lo = np.iinfo(np.int64).min if start_ns is None else int(start_ns)
    hi = np.iinfo(np.int64).max if end_ns is None else int(end_ns)
    with Catalog(root) as cat:
        if not attach(cat):
            raise DataError(f"no stored features in the lake at {root}")
        cols = ", ".join(f'"{n}"' for n in ("ts_exch", *names))
        rel = cat.con.execute(
            f"SELECT {cols} FROM {TABLE} WHERE version = ? AND venue = ? AND symbol = ? AND ts_exch >= ? "
            "AND ts_exch < ? ORDER BY ts_exch",
            [version, venue, symbol, lo, hi],
        )
        t = rel.fetchnumpy()
    ts = np.asarray(t["ts_exch"], np.int64)
    values = np.empty((len(names), len(ts)))
    for k, n in enumerate(names):
        values[k] = np.asarray(t[n], np.float64)
    return Features(names, values, ts, np.full(len(ts), -1, np.int64), version)
