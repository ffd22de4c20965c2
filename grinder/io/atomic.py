"""Atomic file replacement: readers see the old file or the new one, never half of either."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file or a folder by path (a folder: so a rename or new file in it survives a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_dir(tmp: Path, dest: Path, existing_ok: Callable[[], bool]) -> bool:
    """Rename the complete folder `tmp` to `dest`; True if it was published.

    When `dest` exists already (another process saved the same entry first), it is kept if
    `existing_ok()` says it is intact (it may be open in a reader right now), else replaced.
    """
    try:
        os.rename(tmp, dest)
    except OSError:
        if existing_ok():
            return False
        shutil.rmtree(dest, ignore_errors=True)
        os.rename(tmp, dest)
    return True


def write_atomic(path: Path, text: str, durable: bool = False, mode: int = 0o644) -> None:
    """Write text to a temp file beside path, then rename it over path.

    With `durable`, the file and its folder are fsynced before returning, so the new content
    survives a crash or power loss right after (state a live process must not lose).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_path(path.parent)
