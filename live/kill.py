"""The kill switch: stop trading now, leave nothing resting, and stay stopped until a person clears it.

Three ways in, one effect (decision 029):

- `grinder live kill --config X` writes the kill file and sends SIGUSR1 to the running adapter;
- the kill file itself (`<state_dir>/KILL`), which the adapter looks for in housekeeping (at least
  once a second);
- SIGUSR1 to the adapter process (`systemctl kill -s USR1 grinder-live@X`), which also writes the file
  (one that comes while `grinder live` is still loading is held by `grinder/__init__.py` and turned
  into the file once the config is read; only the interpreter's first tens of milliseconds have no
  handler, so the CLI, which writes the file first, is the way that never misses).

The adapter then stops: no create leaves after the request, every order of ours is cancelled by
the shutdown path, the position is closed when `kill_flatten = true` in execute_flatten mode
(planned in the audit trail but not sent in the other modes), `kill` goes to the audit trail, and
the process exits 0 (a deliberate stop: systemd's Restart=on-failure does not start it again). As
long as the file is there a start refuses, before it touches the venue: one line, exit 2.
`grinder live kill --clear --config X` removes it.

The running adapter is found by its pid file (`<state_dir>/adapter.pid`, written at start and
removed at stop), trusted only while the state folder's lock is held: a pid file left by a
process killed -9 names nobody, and its pid may be another process's by now.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
from pathlib import Path

from grinder.errors import LiveError
from grinder.io.atomic import write_atomic
from grinder.live.lock import ProcessLock

KILL_FILE = "KILL"
PID_FILE = "adapter.pid"
LOCKED_FILE = "budget.jsonl"  # the adapter holds this file's lock (live.budget) for as long as it runs


def kill_path(state_dir: Path) -> Path:
    """Where the kill file of a state folder is."""
    return Path(state_dir) / KILL_FILE


def killed(state_dir: Path) -> dict | None:
    """The kill file's record ({} if it cannot be read as one), or None when there is none.

    Anything at the path counts, whatever it holds (a folder, garbage, no permission to read it):
    a kill switch must not be defeated by how it was pulled.
    """
    path = kill_path(state_dir)
    if not os.path.lexists(path):
        return None
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return rec if isinstance(rec, dict) else {}


def refuse_if_killed(state_dir: Path) -> None:
    """LiveError naming the kill file when it is there (a start must not trade)."""
    rec = killed(state_dir)
    if rec is not None:
        when = f" at {rec['time']}" if "time" in rec else ""
        raise LiveError(f"{kill_path(state_dir)}: killed{when} ({rec.get('by', 'unknown')}); refusing to trade "
                        f"until a person clears it (grinder live kill --clear --config ...)")  # fmt: skip


def write_kill(state_dir: Path, by: str) -> Path:
    """Write the kill file (durably, 0600), naming who asked; an existing one is kept as it is."""
    path = kill_path(state_dir)
    if not path.exists():
        rec = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "by": by}
        write_atomic(path, json.dumps(rec) + "\n", durable=True, mode=0o600)
    return path


def clear_kill(state_dir: Path) -> bool:
    """Remove the kill file; True if there was one."""
    path = kill_path(state_dir)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as e:
        raise LiveError(f"{path}: cannot be removed ({e.strerror}); remove it by hand") from None
    return True


def write_pid(state_dir: Path) -> None:
    """Record this process as the state folder's running adapter."""
    write_atomic(Path(state_dir) / PID_FILE, f"{os.getpid()}\n", durable=False, mode=0o600)


def remove_pid(state_dir: Path) -> None:
    """Forget this process as the running adapter (only if the file still names it)."""
    path = Path(state_dir) / PID_FILE
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except (FileNotFoundError, ValueError):
        pass


def running_pid(state_dir: Path) -> int | None:
    """The pid of the adapter running on this state folder, or None if none is.

    Its pid file alone is not enough (kill -9 leaves it behind): the folder's lock must be held too.
    """
    try:
        pid = int((Path(state_dir) / PID_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not (Path(state_dir) / (LOCKED_FILE + ".lock")).exists():
        return None
    try:
        ProcessLock(Path(state_dir) / LOCKED_FILE).release()  # free: nobody runs on the folder
        return None
    except LiveError:
        pass  # held: an adapter runs
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's: the signal will say so
    return pid


def kill(state_dir: Path, by: str = "grinder live kill") -> tuple[Path, int | None]:
    """Write the kill file, then signal the running adapter (SIGUSR1); returns the file and the pid signalled.

    The file comes first: the adapter finds it within a second even if the signal is lost, and a
    start after this one refuses.
    """
    state_dir = Path(state_dir)
    if not state_dir.is_dir():
        raise LiveError(f"{state_dir}: no such state folder")
    path = write_kill(state_dir, by)
    pid = running_pid(state_dir)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGUSR1)
        except OSError as e:
            raise LiveError(f"{path} written, but adapter pid {pid} could not be signalled ({e.strerror}); "
                            "it finds the file within a second") from None  # fmt: skip
    return path, pid
