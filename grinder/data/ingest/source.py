"""Reading input files: transparent gzip, clear errors for truncated archives, line bookkeeping."""

from __future__ import annotations

import gzip
import os
import time
import zlib
from bisect import bisect_right
from collections.abc import Callable
from pathlib import Path

from grinder.errors import DataError


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip; a truncated or corrupt archive is an error."""
    if not path.is_file():
        raise DataError("no such file", str(path))
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(f"corrupt or truncated gzip file ({e})", str(path)) from None


def iter_blocks(path: Path, block_size: int, progress: Callable[[int], None] | None = None):
    """The file's bytes (gunzipped when gzip) in pieces of about `block_size` that end at a line end
    (the last piece may not); a line longer than a block comes whole in one piece. Nothing else of
    the file is held: this is how ingest reads files of any size in bounded memory.

    `progress(n)`, when given, is told the bytes of the file on disk (compressed, for gzip) consumed
    so far (gzip's read-ahead included): before each read, once the pieces read before it have been
    handed out and taken, and with the file's size only once the last piece has been taken."""
    if not path.is_file():
        raise DataError("no such file", str(path))
    raw = f = open(path, "rb")  # noqa: SIM115 - closed below
    try:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        # Over the raw file, so its position is the compressed bytes gzip has consumed.
        f = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
        carry = b""
        size = os.fstat(raw.fileno()).st_size
        while True:
            if progress is not None:  # gzip reads ahead: the whole file counts once its last piece is taken
                progress(min(raw.tell(), max(size - 1, 0)))
            try:
                data = f.read(block_size)
            except (EOFError, OSError, zlib.error) as e:
                raise DataError(f"corrupt or truncated gzip file ({e})", str(path)) from None
            if not data:
                break
            buf = carry + data if carry else data
            cut = buf.rfind(b"\n")
            if cut < 0:
                carry = buf
                continue
            carry = buf[cut + 1 :]
            yield buf[: cut + 1]
        if carry:
            yield carry
        if progress is not None:
            progress(max(raw.tell(), size))
    finally:
        if f is not raw:
            f.close()
        raw.close()


class ByteProgress:
    """Bytes of a set of input files read so far, for a `callback(done, total)`: the total is the
    files' sizes on disk (compressed bytes, for gzip), known before anything is read.

    `reader(i)` is the `progress` to give `iter_blocks` for the i-th file (files read side by side
    each keep their own count). The callback is called when the count grows, at most every `every`
    seconds, and always when it reaches the total; a file that grew since is counted at its old size.
    """

    def __init__(self, paths: list[Path], callback: Callable[[int, int], None], every: float = 0.2) -> None:
        self.sizes = [Path(p).stat().st_size if Path(p).is_file() else 0 for p in paths]
        self.total = sum(self.sizes)
        self.done = [0] * len(self.sizes)
        self.callback, self.every = callback, every
        self._told, self._at = -1, float("-inf")

    def reader(self, i: int) -> Callable[[int], None]:
        def progress(n: int) -> None:
            n = min(n, self.sizes[i])
            if n > self.done[i]:
                self.done[i] = n
                self._tell()

        return progress

    def _tell(self) -> None:
        done = sum(self.done)
        now = time.monotonic()
        if done > self._told and (done == self.total or now - self._at >= self.every):
            self._told, self._at = done, now
            self.callback(done, self.total)

    def finish(self) -> None:
        """Every file has been read: tell the total (if not told yet)."""
        self.done = list(self.sizes)
        self._tell()


def byte_progress(paths: list[Path], callback: Callable[[int, int], None] | None) -> ByteProgress | None:
    """A `ByteProgress` over `paths` for `callback`, or None when there is none."""
    return None if callback is None else ByteProgress(paths, callback)


class FileLines:
    """Maps a row's id, file index << 40 | 1-based line, to (file, line)."""

    SHIFT = 40

    def __init__(self, paths: list[Path]) -> None:
        self.paths = [str(p) for p in paths]

    def __call__(self, g: int) -> tuple[str, int]:
        g = int(g)
        return self.paths[g >> self.SHIFT], g & ((1 << self.SHIFT) - 1)


class LineMap:
    """Maps a global 0-based line index over several files to (file, 1-based line)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.paths: list[str] = []

    def add(self, path: Path, first_global_line: int) -> None:
        """Register that `path` begins at global line index `first_global_line`."""
        self.starts.append(first_global_line)
        self.paths.append(str(path))

    def __call__(self, g: int) -> tuple[str, int]:
        k = bisect_right(self.starts, int(g)) - 1
        return self.paths[k], int(g) - self.starts[k] + 1
