"""systemd's notify protocol, without python-systemd: READY, STATUS, STOPPING and the watchdog (decision 042).

`Notifier` sends newline-separated `KEY=value` lines as one datagram to the AF_UNIX socket named by
`$NOTIFY_SOCKET`: a filesystem path (`/run/systemd/notify`) or an abstract name (`@...`, sent with
a leading NUL as systemd reads it). No `$NOTIFY_SOCKET` (not under systemd, or a unit not of
Type=notify): nothing is sent and nothing fails. A send that fails (the socket gone, its queue
full) never raises: the first error is kept in `error` and the rest is counted in `failed`; the
adapter goes on trading, and systemd's own timeouts say what a lost message means.

`watchdog_s` reads `$WATCHDOG_USEC` (the unit's WatchdogSec, microseconds) and `$WATCHDOG_PID` as
sd_watchdog_enabled(3) does: a WATCHDOG_PID naming another process means the watchdog is not this
process's. `keep_fed` is the task that pets it: every `every_s` it sends WATCHDOG=1, but only while
the decision loop has made progress within `stall_after_s`; a stalled loop gets STATUS lines only,
and systemd ends the process once WatchdogSec passes without a WATCHDOG=1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping


def notify_address(value: str | None) -> str | bytes | None:
    """The socket address `$NOTIFY_SOCKET` names: a path (str), an abstract name (bytes, leading NUL) or None.

    None for an unset or empty variable and for forms this module does not speak (systemd 254's
    `vsock:`): the adapter then runs as if it were not under systemd.
    """
    if not value:
        return None
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    return None


def watchdog_s(env: Mapping[str, str] = os.environ, pid: int | None = None) -> float | None:
    """The watchdog's timeout in seconds from `$WATCHDOG_USEC`, or None when no watchdog is this process's.

    None also for a value that is not a positive integer, and when `$WATCHDOG_PID` names another
    process than `pid` (default: this one): sd_watchdog_enabled(3)'s rules.
    """
    raw = env.get("WATCHDOG_USEC", "")
    if not raw.isdigit() or int(raw) <= 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and (not owner.isdigit() or int(owner) != (os.getpid() if pid is None else pid)):
        return None
    return int(raw) / 1e6


class Notifier:
    """Messages to systemd over `$NOTIFY_SOCKET` (read from `env` once); every method a no-op without one."""

    def __init__(self, env: Mapping[str, str] = os.environ):
        self.address = notify_address(env.get("NOTIFY_SOCKET"))
        self.watchdog_s = watchdog_s(env) if self.address is not None else None
        self.sent = 0  # datagrams handed to the socket
        self.failed = 0  # datagrams lost (the socket gone, its queue full)
        self.error: OSError | None = None  # the first failure
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """Whether there is a socket to send to."""
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send `lines` (each `KEY=value`, no newline inside) as one datagram; False if not sent."""
        if self.address is None:
            return False
        # A STATUS text is free-form: a newline in it would start a line systemd reads as an assignment.
        data = "\n".join(x.replace("\n", " ") for x in lines).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)  # systemd not reading must never hold the event loop
            self._sock.sendto(data, self.address)
        except OSError as e:
            self.failed += 1
            if self.error is None:
                self.error = e
            return False
        self.sent += 1
        return True

    def ready(self, status: str) -> bool:
        """READY=1: the start is over (systemd's start job completes; the watchdog starts counting)."""
        return self.notify("READY=1", f"STATUS={status}")

    def stopping(self, status: str) -> bool:
        """STOPPING=1: the stop has begun (systemd stops the watchdog and gives it TimeoutStopSec)."""
        return self.notify("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        """STATUS=: one line `systemctl status` shows."""
        return self.notify(f"STATUS={status}")

    def close(self) -> None:
        """Close the socket (a later message opens it again)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def stall_after_s(watchdog: float, step_ms: int) -> float:
    """How old the decision loop's last progress may be (s) and the watchdog still fed.

    Half the watchdog's timeout, and never below three steps (capped at the loop's 1 s beat of a
    long step) plus a second: a loop that turns is never taken for stalled. systemd then ends a
    stalled process between this plus WatchdogSec less one feeding interval, and this plus
    WatchdogSec, after its last progress.
    """
    return max(watchdog / 2, 3 * min(step_ms / 1000, 1.0) + 1.0)


async def keep_fed(
    notifier: Notifier,
    progress_ns: Callable[[], int],
    stall_s: float,
    every_s: float,
    status: Callable[[], str],
    now_ns: Callable[[], int] = time.perf_counter_ns,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Every `every_s`: WATCHDOG=1 with STATUS=`status()` while `progress_ns()` is at most `stall_s` old, else a STATUS
    saying the loop stalled and no WATCHDOG=1. Runs until cancelled.

    `progress_ns` and `now_ns` are on one clock (ns; perf_counter_ns by default, as the decision loop's).
    """
    while True:
        age_s = (now_ns() - progress_ns()) / 1e9
        if age_s <= stall_s:
            notifier.notify("WATCHDOG=1", f"STATUS={status()}")
        else:
            notifier.status(f"decision loop stalled for {age_s:.1f} s: watchdog not fed")
        await sleep(every_s)
