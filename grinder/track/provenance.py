"""Where a run came from: a content fingerprint of its market data and the git commit of the code.

Both are plain Python (no MLflow), so anything can stamp its output with them.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from grinder.data.tape import Tape

# The event columns the backtest reads (the book replay and the engine); ts_local and flags matter
# too (latency and local view, book consistency), so two tapes that differ there get different
# fingerprints. `price` is price_ticks x tick (the instrument is hashed) and `ref` is never read.
EVENT_COLUMNS = ("ts_exch", "ts_local", "kind", "side", "price_ticks", "qty", "flags")
CHUNK_BYTES = 16 * 1024 * 1024  # bounds the copy when a column needs converting to little-endian


def data_fingerprint(tape: Tape) -> str:
    """sha256 (hex) over the tape's event columns, its funding series and its instrument's JSON."""
    fp = TapeFingerprint()
    fp.add({name: getattr(tape, name) for name in EVENT_COLUMNS})
    return fp.hexdigest(tape.instrument, tape.funding.columns)


class TapeFingerprint:
    """`data_fingerprint` fed chunk by chunk (a tape read a day at a time gives the whole tape's).

    Each column is hashed on its own as its chunks pass, and the columns' digests, with their names,
    dtypes and lengths, are hashed at the end.
    """

    def __init__(self) -> None:
        self._cols = {name: (hashlib.sha256(), [None, 0]) for name in EVENT_COLUMNS}

    def add(self, columns: dict[str, np.ndarray]) -> None:
        """The next rows of every event column (EVENT_COLUMNS, equal lengths)."""
        for name in EVENT_COLUMNS:
            h, meta = self._cols[name]
            a = np.asarray(columns[name])
            dtype = a.dtype.newbyteorder("<")  # the same bytes on any machine; single-byte types are unchanged
            if meta[0] is None:
                meta[0] = dtype.str
            elif meta[0] != dtype.str:
                raise ValueError(f"column {name} changes dtype from {meta[0]} to {dtype.str} between chunks")
            meta[1] += len(a)
            _feed(h, a, dtype)

    def hexdigest(self, instrument, funding) -> str:
        """The fingerprint of the rows added so far, with the instrument and the funding series: its
        columns (name -> array), or its consecutive parts as such dicts (a month's, a day at a time)."""
        h = hashlib.sha256(b"grinder-tape-v2\n")
        h.update(instrument.model_dump_json().encode())
        for name in EVENT_COLUMNS:
            col, (dtype, n) = self._cols[name]
            h.update(f"\n{name}:{dtype}:{n}:{col.hexdigest()}".encode())
        # Funding is settled on the position, so it changes results as much as the book does.
        cols: dict[str, tuple] = {}
        for part in [funding] if isinstance(funding, Mapping) else funding:
            for name in sorted(part):
                a = np.asarray(part[name])
                col, dtype, n = cols.get(name) or (hashlib.sha256(), a.dtype.newbyteorder("<"), 0)
                _feed(col, a, dtype)
                cols[name] = (col, dtype, n + len(a))
        for name, (col, dtype, n) in sorted(cols.items()):
            h.update(f"\nfunding.{name}:{dtype.str}:{n}:{col.hexdigest()}".encode())
        return h.hexdigest()


def _feed(h, a: np.ndarray, dtype) -> None:
    step = max(1, CHUNK_BYTES // max(1, a.dtype.itemsize))
    for i in range(0, len(a), step):
        # A no-op view for native little-endian contiguous columns; hashlib reads the buffer without copying.
        h.update(np.ascontiguousarray(a[i : i + step], dtype=dtype).data)


def git_commit(repo: Path) -> str | None:
    """HEAD's commit hash in `repo`, with "-dirty" when tracked or untracked files differ; None if unknown."""
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--verify", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode != 0:
            return None
        # Untracked files count: a new strategy module changes what a run does as much as an edit.
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if status.returncode != 0:
        return None  # a commit without knowing whether the tree matches it would claim too much
    commit = head.stdout.strip()
    return commit + "-dirty" if status.stdout.strip() else commit
