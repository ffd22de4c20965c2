"""Reading input files: transparent gzip, clear errors for truncated archives, line bookkeeping."""

from __future__ import annotations

import gzip
import zlib
from bisect import bisect_right
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
