"""An append-only JSONL file whose lines survive the process at once and a power loss a moment later.

Each line is written and flushed to the operating system before `append` returns: a process
killed with SIGKILL (or crashing) loses nothing. The fsync that makes it survive a power loss or
a kernel crash runs on a background thread when the caller says `sync_soon()` and, unless
`max_delay_s` is None, at least every `max_delay_s`. The adapter passes None and calls
`sync_soon()` itself between decisions (at least once a second), so the thread never wakes to
compete with a decision for the CPU or the interpreter. What a power loss can cost is the lines
of that last moment (docs/decisions/012-live-state-off-the-hot-path.md).

A write or fsync that fails (disk full, I/O error) never raises into the caller: the journal
stops, keeps the first error in `error` and says so once on stderr. Callers decide what a stopped
journal means (the port then refuses new orders but still sends cancels).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import threading
from pathlib import Path


class Journal:
    """Lines appended to `path` (created with its folder); `close()` fsyncs and closes."""

    def __init__(self, path: Path, max_delay_s: float | None = 1.0):
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # A bare descriptor, no Python buffer: one write(2) per line is all that stands between a
        # line and the OS (faster than a text file's write and flush; decision 012).
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if stat.S_ISREG(os.fstat(self._fd).st_mode):  # a device (/dev/full in tests) is not ours to change
            os.fchmod(self._fd, 0o600)  # the owner's only, whatever the umask, also a file of an earlier version
        self._closed = False
        self._wake = threading.Event()
        self._dirty = False
        self._closing = False
        self.max_delay_s = max_delay_s
        self.error: OSError | None = None  # the first write or fsync failure; nothing is written after it
        self._thread = threading.Thread(target=self._sync_loop, name=f"fsync {self.path.name}", daemon=True)
        self._thread.start()

    def append(self, line: str) -> bool:
        """Write one line (no newline in it) and hand it to the OS; False if the journal has failed."""
        if self._closed:
            raise ValueError(f"{self.path}: journal is closed")
        if self.error is not None:
            return False
        data = (line + "\n").encode()
        try:
            n = os.write(self._fd, data)
            if n != len(data):  # a regular file writes short only when the disk fills up
                raise OSError(errno.ENOSPC, f"short write ({n} of {len(data)} bytes)")
        except OSError as e:
            self._fail(e)
            return False
        self._dirty = True
        return True

    def prewarm(self) -> None:
        """A write of nothing to the file: the kernel's write path is warm for the next real line."""
        if not self._closed and self.error is None:
            with contextlib.suppress(OSError):  # the next real append meets and keeps the error
                os.write(self._fd, b"")

    def _fail(self, e: OSError) -> None:
        if self.error is None:
            self.error = e
            print(f"grinder: {self.path}: {e.strerror or e}; nothing more is written to it", file=sys.stderr)

    def sync_soon(self) -> None:
        """Have the background thread fsync what was appended, now (returns at once)."""
        if self._dirty:
            self._wake.set()

    def _sync_loop(self) -> None:
        while True:
            self._wake.wait(self.max_delay_s)
            if self._closing:
                return
            self._wake.clear()
            if not self._dirty:
                continue
            self._dirty = False
            try:
                os.fsync(self._fd)
            except OSError as e:  # Linux reports a writeback error once: keep it, or it is lost
                self._fail(e)
                return

    def close(self) -> None:
        """Stop the background thread, fsync what is left and close the file (later appends raise)."""
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        self._thread.join()
        self._closed = True
        try:
            if self.error is None:
                os.fsync(self._fd)
        except OSError as e:
            self._fail(e)
        finally:
            os.close(self._fd)
