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


def fsync_tree(path: Path) -> None:
    """fsync every file and folder under `path` (a staged tree must be on disk before a journal names it)."""
    for d, _, files in os.walk(path):
        for f in files:
            fsync_path(Path(d) / f)
        fsync_path(Path(d))


def apply_journal(root: Path, moves: list[list[str]], deletes: list[str], step: Callable[[str], None]) -> None:
    """Carry out a commit journal under `root`: every rename, then every delete; safe to repeat.

    `moves` are [source, destination] pairs relative to `root`, `deletes` paths relative to it. A
    rename whose source is gone was done by an earlier, interrupted attempt, so replaying a
    journal any number of times ends in the same tree. `step(name)` is called after each action
    (named `move-<i>`, `delete-<i>`) so tests can kill the process there. The touched folders are
    fsynced at the end: the caller may then drop the journal.
    """
    touched: set[Path] = set()
    for i, (src, dest) in enumerate(moves):
        s, d = root / src, root / dest
        if s.exists():
            d.parent.mkdir(parents=True, exist_ok=True)
            os.replace(s, d)
        touched.add(d.parent)
        step(f"move-{i}")
    for i, rel in enumerate(deletes):
        p = root / rel
        p.unlink(missing_ok=True)
        touched.add(p.parent)
        step(f"delete-{i}")
    for d in sorted(touched):
        if d.is_dir():
            fsync_path(d)
