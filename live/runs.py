"""A folder per adapter run under the state folder: that run's audit trail, metrics and budget, and its retention.

`<state_dir>/runs/<UTC start, YYYYMMDDTHHMMSSZ>-<epoch>/` (the epoch is the run's client-id epoch,
live.client_ids) holds:

- `run.json`: the start (time, pid, strategy, symbol, mode, epoch, which audit file and the byte
  offset the run's lines start at), rewritten at the stop with how it ended;
- `audit.jsonl`: the run's own lines, copied at the stop from the state folder's `audit.jsonl`,
  which stays the whole history (what `grinder live kill`, the tests and an operator's tail read)
  and is the only file written while trading: nothing is added to a decision's path. A run that
  never reached its stop (kill -9, a watchdog kill, the machine) gets its lines from the next
  start, which copies from its offset up to the next run's;
- `metrics.prom`: the metrics' last values at the stop (also `<state_dir>/metrics.prom`);
- `budget.json`: the daily budget at the start and at the stop. The budget itself stays in
  `<state_dir>/budget.jsonl`: it counts a UTC day across runs, and a restart must go on counting it.

Retention, at each start (`prune`): run folders beyond the newest `keep_runs`, and, with
`keep_days`, those started more than `keep_days` ago, are removed; never the current one, never
anything whose name is not a run folder's, never a symlink (nor what it points at: removal does not
follow links), never one whose run lock (`run.lock`, held by its process for as long as it runs) is
held, never one owned by another user.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

from grinder.errors import LiveError
from grinder.io.atomic import write_atomic
from grinder.live.client_ids import EPOCH_LEN
from grinder.live.lock import ProcessLock

RUNS = "runs"
RUN_NAME = re.compile(rf"^(\d{{8}}T\d{{6}}Z)-[0-9A-Za-z]{{{EPOCH_LEN}}}$")
RUN_FILE, AUDIT_FILE, METRICS_FILE, BUDGET_FILE = "run.json", "audit.jsonl", "metrics.prom", "budget.json"
COPY_CHUNK = 1 << 20  # bytes read at a time when a run's audit lines are copied


def run_name(now_ns: int, epoch: str) -> str:
    """A run folder's name: its UTC start to the second, then its epoch (names sort by start)."""
    return f"{dt.datetime.fromtimestamp(now_ns // 10**9, dt.UTC):%Y%m%dT%H%M%SZ}-{epoch}"


def started_ns(name: str) -> int | None:
    """The start (ns since the epoch, to the second) a run folder's name says; None if it is no run folder's."""
    m = RUN_NAME.match(name)
    if m is None:
        return None
    return int(dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC).timestamp()) * 10**9


def _regular_size(path: Path) -> int | None:
    """The size of `path` if it is a regular file (a device such as /dev/full has no lines to copy), else None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def copy_range(src: Path, start: int, end: int, dest: Path) -> int:
    """Copy bytes [start, end) of `src` to `dest` (0600, through a temp file renamed into place); bytes copied.

    A source shorter than `start` (truncated by hand) gives an empty file.
    """
    tmp = dest.with_name(f".{dest.name}.tmp")
    n = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        with open(src, "rb") as f, os.fdopen(fd, "wb") as out:
            f.seek(start)
            while n < end - start:
                chunk = f.read(min(COPY_CHUNK, end - start - n))
                if not chunk:
                    break
                out.write(chunk)
                n += len(chunk)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return n


def _ours(path: Path) -> bool:
    """A real folder (not a symlink) named as a run folder and owned by this user."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and RUN_NAME.match(path.name) is not None


def _read_run(path: Path) -> dict | None:
    try:
        rec = json.loads((path / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _try_lock(path: Path) -> ProcessLock | None:
    """The run's lock if no process holds it (the run is over), else None."""
    try:
        return ProcessLock(path / "run")
    except (LiveError, OSError):
        return None


def complete_unfinished(runs: Path, audit_path: Path) -> list[str]:
    """Give each run folder that never reached its stop its audit lines; the names of those completed.

    Its lines are those of `audit_path` from its offset up to the next run's offset (or the end of
    the file): one process at a time writes a state folder (its lock), so whatever came between is
    that run's.
    """
    names = sorted(p.name for p in runs.iterdir() if _ours(p))
    recs = {n: _read_run(runs / n) for n in names}
    size = _regular_size(audit_path)
    done = []
    for i, name in enumerate(names):
        rec, path = recs[name], runs / name
        if rec is None or "stopped_ns" in rec or os.path.lexists(path / AUDIT_FILE) or size is None:
            continue
        if rec.get("audit") != str(audit_path) or not isinstance(rec.get("audit_offset"), int):
            continue
        lock = _try_lock(path)
        if lock is None:  # its process still runs
            continue
        try:
            later = [r.get("audit_offset") for r in (recs[n] for n in names[i + 1 :]) if r]
            end = next((o for o in later if isinstance(o, int) and o >= rec["audit_offset"]), size)
            copy_range(audit_path, rec["audit_offset"], end, path / AUDIT_FILE)
            rec.update(ended="unclean: no stop recorded; lines copied by the next start")
            write_atomic(path / RUN_FILE, json.dumps(rec, indent=1) + "\n", mode=0o600)
            done.append(name)
        except OSError:
            continue  # left as it is: the whole history is still in audit_path
        finally:
            lock.release()
    return done


def prune(runs: Path, keep_runs: int, keep_days: float, now_ns: int, current: Path | None = None) -> list[str]:
    """Remove the run folders beyond the newest `keep_runs` and those older than `keep_days` (0: no age limit).

    Never `current`, nor anything the module docstring excludes; returns the names removed.
    """
    names = sorted((p.name for p in runs.iterdir() if _ours(p)), reverse=True)  # newest first
    cutoff = now_ns - int(keep_days * 86_400e9) if keep_days > 0 else None
    removed = []
    for i, name in enumerate(names):
        path = runs / name
        if current is not None and path == current:
            continue
        start = started_ns(name)
        if i < keep_runs and (cutoff is None or start >= cutoff):
            continue
        lock = _try_lock(path)
        if lock is None:  # a process runs on it (or it cannot be locked): not ours to take
            continue
        try:
            if not _ours(path):  # swapped for something else since it was listed
                continue
            # rmtree removes links inside, never what they point at (fd-based where the OS allows).
            shutil.rmtree(path)
            removed.append(name)
        except OSError:
            continue
        finally:
            lock.release()
    return removed


@dataclass
class RunFolder:
    """The current run's folder: made by `start`, filled by `finish`; its lock held in between."""

    path: Path
    audit_path: Path
    record: dict
    lock: ProcessLock | None = None
    removed: list[str] = field(default_factory=list)  # run folders the start's retention removed
    completed: list[str] = field(default_factory=list)  # unfinished runs whose lines the start copied

    @classmethod
    def start(cls, state_dir: Path, epoch: str, audit_path: Path, now_ns: int, keep_runs: int, keep_days: float,
              **info) -> RunFolder:  # fmt: skip
        """Make `<state_dir>/runs/<start>-<epoch>/` with its run.json, complete unfinished runs, prune old ones.

        `now_ns` is the wall clock (ns since the epoch); `info` goes into run.json. OSError if the
        folder cannot be made.
        """
        runs = Path(state_dir) / RUNS
        runs.mkdir(mode=0o700, exist_ok=True)
        audit_path = Path(audit_path).absolute()
        completed = complete_unfinished(runs, audit_path)
        path = runs / run_name(now_ns, epoch)
        path.mkdir(mode=0o700)  # an epoch is drawn at each start: a name taken is an error, never shared
        lock = ProcessLock(path / "run")
        record = {"started": dt.datetime.fromtimestamp(now_ns / 1e9, dt.UTC).isoformat(timespec="milliseconds"),
                  "started_ns": now_ns, "pid": os.getpid(), "epoch": epoch, **info, "audit": str(audit_path),
                  "audit_offset": _regular_size(audit_path)}  # fmt: skip
        try:
            write_atomic(path / RUN_FILE, json.dumps(record, indent=1) + "\n", mode=0o600)
            removed = prune(runs, keep_runs, keep_days, now_ns, current=path)
        except BaseException:
            lock.release()
            raise
        return cls(path, audit_path, record, lock, removed, completed)

    def write(self, name: str, text: str) -> None:
        """Write one file of the run (0600, atomically)."""
        write_atomic(self.path / name, text, mode=0o600)

    def finish(self, now_ns: int, **outcome) -> None:
        """At the stop: the run's audit lines copied, run.json rewritten with `outcome`, the lock released.

        OSError if a file cannot be written (the lock is released all the same).
        """
        try:
            start, end = self.record.get("audit_offset"), _regular_size(self.audit_path)
            if isinstance(start, int) and end is not None:
                copy_range(self.audit_path, start, end, self.path / AUDIT_FILE)
            self.record.update(stopped_ns=now_ns, **outcome)
            self.record["stopped"] = dt.datetime.fromtimestamp(now_ns / 1e9, dt.UTC).isoformat(timespec="milliseconds")
            self.write(RUN_FILE, json.dumps(self.record, indent=1, default=str) + "\n")
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None
