"""One process per state file: an exclusive lock held for the life of the process."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from grinder.errors import LiveError


class ProcessLock:
    """Holds an exclusive flock on `<path>.lock`; a second holder (another adapter process) is refused."""

    def __init__(self, path: Path):
        self.path = Path(str(path) + ".lock")
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.fchmod(self._fd, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise LiveError(f"{path} is in use by another process (lock {self.path})") from None

    def release(self) -> None:
        """Give the lock up (the process exiting does the same)."""
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
