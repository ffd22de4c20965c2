"""A sweep process's end: SIGTERM and SIGINT end it cleanly, and runs left RUNNING by a killed one are failed.

An exception (Ctrl-C included) already ends a sweep's MLflow run FAILED (`sweep_run`). SIGTERM
would kill the process without unwinding; here it raises `Interrupted` in the main thread, so the
run is marked FAILED and nothing half-written stays. SIGKILL and the OOM killer leave no chance to
do anything: each sweep run carries its process id, the process's start time and the host as
tags, and the next sweep on that host marks RUNNING sweep runs whose process is gone FAILED.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

PID_TAG, START_TAG, HOST_TAG = "sweep_pid", "sweep_pid_start", "sweep_host"


class Interrupted(BaseException):
    """A signal asked the process to stop; `exit_code` is 128 + the signal number, as a shell reports it."""

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}; the sweep's MLflow run is marked FAILED")


# Signals received inside `signals_raise`. Python runs a handler between any two bytecodes, also
# inside a garbage-collection callback, where a raised exception is printed and dropped; `check`
# raises again for a signal that was lost that way.
_pending: list[int] = []
# How many `shielded` blocks are open: inside one the handler only records the signal.
_shields = [0]


@contextlib.contextmanager
def signals_raise(signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Within the block, the given signals raise `Interrupted` in the main thread (the old handlers come back after)."""

    def handler(signum, frame):
        _pending.append(signum)
        if not _shields[0]:
            raise Interrupted(signum)

    _pending.clear()
    old = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Within the block a signal is held, not raised; it raises `Interrupted` when the outermost block ends.

    For writes to the MLflow store: an exception raised in the middle of an SQLite statement leaves
    its transaction open and the database locked, so marking the run FAILED afterwards failed
    ("database is locked") and the run stayed RUNNING.
    """
    held = len(_pending)
    _shields[0] += 1
    try:
        yield
    finally:
        _shields[0] -= 1
    if len(_pending) > held and not _shields[0]:
        raise Interrupted(_pending[held])


def check() -> None:
    """Raise `Interrupted` if a signal arrived in `signals_raise` (in case its exception was dropped)."""
    if _pending:
        raise Interrupted(_pending[0])


@contextlib.contextmanager
def raise_pending() -> Iterator[None]:
    """At the end of the block, `check`: a run closed by an enclosing context then ends FAILED, not FINISHED."""
    yield
    check()


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # the command name may hold spaces and parentheses


def process_tags() -> dict[str, str]:
    """Tags that identify this process: pid, its start time (pids are reused) and the host."""
    pid = os.getpid()
    return {PID_TAG: str(pid), START_TAG: _start_time(pid) or "", HOST_TAG: socket.gethostname()}


def is_alive(tags: dict[str, str]) -> bool | None:
    """Whether the process named by a run's tags still runs; None when unknown (another host, no tags)."""
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return None
    start = _start_time(int(tags[PID_TAG]))
    return start is not None and (not tags.get(START_TAG) or start == tags[START_TAG])


def fail_orphaned_sweeps(client, experiment_id: str) -> list[str]:
    """Mark FAILED the RUNNING sweep runs of this host whose process is gone; returns their run ids."""
    runs = client.search_runs([experiment_id], "attributes.status = 'RUNNING' and tags.kind = 'sweep'")
    gone = [r.info.run_id for r in runs if is_alive(r.data.tags) is False]
    for run_id in gone:
        with shielded():
            client.set_tag(run_id, "failed_because", "its process ended without closing the run (killed?)")
            client.set_terminated(run_id, "FAILED")
    return gone
