"""On-disk cache of built tapes: uncompressed .npy columns, memory-mapped read-only on reuse.

Building a tape decodes Parquet and merges tables; sweeps and repeated backtests load the same
selection many times, often from several processes. A cached tape opens in milliseconds and its
pages are shared between processes through the OS page cache. The cache key covers the
selection and the identity (name, size, mtime) of every lake file of the instrument, so any new
ingest of that instrument makes old entries unreachable; `Lake.write` also deletes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from grinder.data.instruments import Instrument
from grinder.io.atomic import publish_dir

FORMAT_VERSION = 2  # 2: book rows never cross a coverage gap, resets at gaps (decision 021)
_EVENT_COLUMNS = ("ts_exch", "ts_local", "kind", "side", "price", "price_ticks", "qty", "ref", "flags")


def cache_root(root: Path) -> Path:
    """Folder of the tape cache inside a lake."""
    return Path(root) / "_tapes"


def _prefix(venue: str, symbol: str) -> str:
    return f"{venue}__{symbol}__"


def cache_key(root: Path, venue: str, symbol: str, start_ns: int | None, end_ns: int | None) -> str:
    """Directory name of the cached tape for this selection and the lake's current files."""
    h = hashlib.sha256(f"{FORMAT_VERSION}|{venue}|{symbol}|{start_ns}|{end_ns}".encode())
    for table in ("book", "trades", "bbo", "funding", "instruments"):
        base = Path(root) / table / f"venue={venue}" / f"symbol={symbol}"
        for f in sorted(base.rglob("*.parquet")):
            st = f.stat()
            h.update(f"{f.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return _prefix(venue, symbol) + h.hexdigest()[:20]


def save(tape, root: Path, key: str) -> None:
    """Write `tape` under `key` atomically (a crash leaves no half-written entry; a racing writer's entry stays)."""
    base = cache_root(root)
    tmp = base / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:  # a failed write (disk full) leaves no temporary folder behind either
        for c in _EVENT_COLUMNS:
            np.save(tmp / f"{c}.npy", getattr(tape, c))
        for group in ("bbo", "funding"):
            for c, a in getattr(tape, group).columns.items():
                np.save(tmp / f"{group}.{c}.npy", a)
        meta = {
            "start": tape.start,
            "window_start_ns": tape.window_start_ns,
            "instrument": tape.instrument.model_dump(),
            "bbo": list(tape.bbo.columns),
            "funding": list(tape.funding.columns),
        }
        (tmp / "meta.json").write_text(json.dumps(meta))  # last: an entry with meta.json is complete
        # Another process (a sweep's workers, a Dask cluster) may have saved this key first: its
        # entry holds the same data and may be open in a reader right now, so it is kept.
        publish_dir(tmp, base / key, lambda: open_cached(root, key) is not None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def open_cached(root: Path, key: str):
    """The cached tape under `key` as read-only memory maps, or None if there is none."""
    from grinder.data.tape import Series, Tape

    d = cache_root(root) / key
    meta_path = d / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        cols = {c: np.load(d / f"{c}.npy", mmap_mode="r") for c in _EVENT_COLUMNS}
        groups = {g: Series({c: np.load(d / f"{g}.{c}.npy", mmap_mode="r") for c in meta[g]})
                  for g in ("bbo", "funding")}  # fmt: skip
    except (OSError, ValueError, KeyError):  # removed or damaged under us: a miss, rebuilt by the caller
        return None
    return Tape(
        Instrument(**meta["instrument"]),
        **cols,
        **groups,
        start=meta["start"],
        window_start_ns=meta.get("window_start_ns", 0),
    )


def drop(root: Path, venue: str, symbol: str) -> None:
    """Delete every cached tape of an instrument (called when its data changes)."""
    base = cache_root(root)
    if base.is_dir():
        for d in base.glob(_prefix(venue, symbol) + "*"):
            shutil.rmtree(d, ignore_errors=True)
