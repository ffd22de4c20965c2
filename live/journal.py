"""An append-only JSONL file whose lines survive the process at once and a power loss a moment later.

Each line is written and flushed to the operating system before `append` returns: a process
killed with SIGKILL (or crashing) loses nothing. The fsync that makes it survive a power loss or
a kernel crash runs on a background thread right after, so the caller (the adapter, between a
decision and its order request) never waits for the disk. What a power loss can cost is the
lines of the last few milliseconds (docs/decisions/012-live-state-off-the-hot-path.md).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


class Journal:
    """Lines appended to `path` (created with its folder); `close()` fsyncs and closes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open for the process's life
        self._dirty = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._sync_loop, name=f"fsync {self.path.name}", daemon=True)
        self._thread.start()

    def append(self, line: str) -> None:
        """Write one line (no newline in it) and hand it to the OS; the fsync follows in the background."""
        self._fh.write(line + "\n")
        self._fh.flush()
        self._dirty.set()

    def _sync_loop(self) -> None:
        while True:
            self._dirty.wait()
            if self._closing:
                return
            self._dirty.clear()
            try:
                os.fsync(self._fh.fileno())
            except (OSError, ValueError):  # closed under us: close() does the last fsync
                return

    def close(self) -> None:
        """Stop the background thread, fsync what is left and close the file (later appends raise)."""
        if self._fh.closed:
            return
        self._closing = True
        self._dirty.set()
        self._thread.join()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
