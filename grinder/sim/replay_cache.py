"""On-disk cache of prepared replays: one .npy file per array, opened as read-only memory maps.

A replay is a pure function of the tape's kind, side, price_ticks and qty columns, the local
times and the code that builds it, so an entry's name is a SHA-256 digest of exactly those
(decision 006): a new ingest, another clock offset or a changed book kernel give another key,
and an entry is never stale, only unreachable. Entries are written into a temporary folder,
synced, and renamed into place; on opening, the metadata, every file's header and every file's
size are checked against what this tape needs, and anything that does not fit is rebuilt.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from grinder.data.tape import Tape
from grinder.io.atomic import fsync_path, publish_dir
from grinder.sim.replay import REPLAY_FIELDS, Replay, build_replay

FORMAT_VERSION = 3
_FLOAT_FIELDS = ("prev_qty", "local_best_bid_qty", "local_best_ask_qty")
_BOOL_FIELDS = ("synced", "local_synced")
_ROW_FIELDS = REPLAY_FIELDS[:8] + _BOOL_FIELDS  # one value per tape row (or local event)
_HASH_CHUNK = 32 << 20  # bytes hashed per task; digests of the chunks are hashed in order


def cache_root(lake_root: str | Path) -> Path:
    """The conventional replay cache folder for tapes of a lake: `<lake_root>/_replays`."""
    return Path(lake_root) / "_replays"


def _prefix(venue: str, symbol: str) -> str:
    return f"{venue}__{symbol}__"


@functools.cache
def _code_digest() -> bytes:
    """Digest of the sources that define a replay's contents (the book kernels and the passes)."""
    from grinder.book import l2
    from grinder.sim import replay

    h = hashlib.sha256()
    for mod in (l2, replay):
        h.update(Path(mod.__file__).read_bytes())
    return h.digest()


def _sha256(buf) -> bytes:
    return hashlib.sha256(buf).digest()


def replay_key(tape: Tape, local_ts: np.ndarray) -> str:
    """Entry name for the replay of `tape` with local times `local_ts`: venue, symbol and a content digest.

    SHA-256 over the format version, the replay code, and the dtype, shape and bytes of kind, side,
    price_ticks, qty and the local times; chunks are hashed on two threads (hashlib releases the GIL).
    """
    h = hashlib.sha256(f"grinder-replay|{FORMAT_VERSION}|".encode())
    h.update(_code_digest())
    chunks = []
    cols = (tape.kind, tape.side, tape.price_ticks, tape.qty, np.asarray(local_ts, dtype=np.int64))
    for name, a in zip(("kind", "side", "price_ticks", "qty", "local_ts"), cols, strict=True):
        a = np.ascontiguousarray(a)
        h.update(f"|{name}|{a.dtype.str}|{a.shape}".encode())
        mv = memoryview(a.reshape(-1).view(np.uint8))
        chunks += [mv[o : o + _HASH_CHUNK] for o in range(0, len(mv), _HASH_CHUNK)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        for d in pool.map(_sha256, chunks):
            h.update(d)
    inst = tape.instrument
    return _prefix(inst.venue, inst.symbol) + h.hexdigest()[:32]


def save(rep: Replay, cache_dir: str | Path, key: str) -> None:
    """Store `rep` under `key` atomically: written and synced in a temporary folder, then renamed.

    Arrays shared between fields (the local best prices when local order is tape order) are stored
    once. If a valid entry appeared meanwhile (another process), it is kept; an invalid one is replaced.
    """
    base = Path(cache_dir)
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        stored: dict[int, str] = {}
        arrays = {}
        for f in REPLAY_FIELDS:
            a = getattr(rep, f)
            if id(a) not in stored:
                stored[id(a)] = f"{f}.npy"
                with open(tmp / f"{f}.npy", "wb") as fh:
                    np.save(fh, np.ascontiguousarray(a), allow_pickle=False)
                    fh.flush()
                    os.fsync(fh.fileno())
            arrays[f] = {"file": stored[id(a)], "dtype": a.dtype.str, "shape": list(a.shape)}
        meta = {"format": FORMAT_VERSION, "key": key, "rows": len(rep.prev_qty), "arrays": arrays}
        with open(tmp / "meta.json", "w") as fh:
            json.dump(meta, fh)
            fh.flush()
            os.fsync(fh.fileno())
        fsync_path(tmp)
        if publish_dir(tmp, base / key, lambda: open_cached(base, key, len(rep.prev_qty)) is not None):
            fsync_path(base)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def open_cached(cache_dir: str | Path, key: str, rows: int) -> Replay | None:
    """The entry `key` for a tape of `rows` rows as read-only memory maps; None if missing or not intact."""
    d = Path(cache_dir) / key
    try:
        meta = json.loads((d / "meta.json").read_text())
        if meta["format"] != FORMAT_VERSION or meta["key"] != key or meta["rows"] != rows:
            return None
        specs = meta["arrays"]
        if sorted(specs) != sorted(REPLAY_FIELDS):
            return None
        opened: dict[str, np.ndarray] = {}
        out = {}
        for f in REPLAY_FIELDS:
            spec = specs[f]
            name = spec["file"]
            if name not in opened:
                if Path(name).name != name or not name.endswith(".npy"):
                    return None
                opened[name] = _open_npy(d / name)
            a = opened[name]
            dtype = np.float64 if f in _FLOAT_FIELDS else np.bool_ if f in _BOOL_FIELDS else np.int64
            if a.dtype != dtype or a.shape != tuple(spec["shape"]) or a.ndim != 1:
                return None
            if f in _ROW_FIELDS and len(a) != rows:
                return None
            out[f] = a
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # json.JSONDecodeError is a ValueError
    starts = out["level_starts"]
    if (
        len(starts) != len(out["level_ukeys"]) + 1
        or starts[0] != 0
        or starts[-1] != len(out["level_rows"])
        or len(out["reset_rows"]) != len(out["reset_sides"])
    ):
        return None
    return Replay(**out)


def _open_npy(path: Path) -> np.ndarray:
    """A read-only array over a .npy file whose size is exactly its header plus its data."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"{path}: .npy format {version}")
        offset = fh.tell()
    if fortran or dtype.hasobject or size != offset + int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(f"{path}: not a complete C-ordered array")
    if size == offset:  # nothing to map
        a = np.empty(shape, dtype)
    else:
        a = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape).view(np.ndarray)
    a.flags.writeable = False
    return a


def load_or_build(tape: Tape, local_ts: np.ndarray, cache_dir: str | Path) -> Replay:
    """The replay from `cache_dir` if an intact entry exists, else built and stored there (best effort)."""
    key = replay_key(tape, local_ts)
    hit = open_cached(cache_dir, key, len(tape))
    if hit is not None:
        return hit
    rep = build_replay(tape, local_ts)
    try:
        save(rep, cache_dir, key)
    except OSError as e:
        warnings.warn(f"replay cache: could not store {key} in {cache_dir}: {e}", stacklevel=2)
    return rep


def drop(cache_dir: str | Path, venue: str, symbol: str) -> None:
    """Delete every cached replay of an instrument (unreachable after its data changed)."""
    base = Path(cache_dir)
    if base.is_dir():
        for d in base.glob(_prefix(venue, symbol) + "*"):
            shutil.rmtree(d, ignore_errors=True)
