"""A sweep stopped by SIGTERM ends its MLflow run FAILED; one killed outright is failed by the next sweep."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from grinder.sweep.lifecycle import (
    HOST_TAG,
    PID_TAG,
    START_TAG,
    Interrupted,
    check,
    fail_orphaned_sweeps,
    is_alive,
    process_tags,
    raise_pending,
    shielded,
    signals_raise,
)
from grinder.track.mlflow_store import DB_NAME, open_store, sweep_run
from tests.conftest import REPO

# A grid of 2,500 sets over the sample: seconds of work, so the sweep is still running when signalled.
BIG = ["-g", "interval=lin:0.5:4:50", "-g", "half_spread=lin:1:8:50", "-p", "order_qty=0.1", "-p", "max_position=5"]


def test_signals_raise_interrupted_in_the_block_only():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as e, signals_raise():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs at the next bytecode; never reached
    assert e.value.exit_code == 143 and "SIGTERM" in str(e.value)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_whose_exception_was_dropped_still_raises_at_the_next_check():
    # Python runs handlers inside garbage-collection callbacks too, where a raised exception is
    # printed and dropped; the sweep checks again before it writes its folder and closes its run.
    with signals_raise():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except Interrupted:
            pass  # dropped
        with pytest.raises(Interrupted, match="SIGTERM"), raise_pending():
            pass
        with pytest.raises(Interrupted):
            check()
    with signals_raise():
        check()  # a new block starts with nothing pending


def test_a_shielded_block_holds_a_signal_until_it_ends():
    with signals_raise():
        with pytest.raises(Interrupted, match="SIGTERM"):
            with shielded():
                with shielded():
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.1)  # the handler has run by now; it only recorded the signal
                reached = True  # the inner block's end does not raise: the outer one is still open
        assert reached
        with shielded():
            pass  # a signal raised before the block is not raised again at its end


@pytest.mark.parametrize("table", ["params", "runs"])
def test_a_signal_in_the_middle_of_a_store_write_still_ends_the_run_failed(tmp_path, table):
    # The SIGTERM arrives right after an INSERT, inside the write's open transaction: raised there,
    # it left the database locked, marking the run FAILED failed and the run stayed RUNNING.
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    fired = []

    def signal_after(conn, cursor, statement, *args):
        if not fired and statement.lstrip().upper().startswith(f"INSERT INTO {table.upper()}"):
            fired.append(statement)
            os.kill(os.getpid(), signal.SIGTERM)

    store = tmp_path / "mlruns"
    open_store(store)
    event.listen(Engine, "after_cursor_execute", signal_after)
    try:
        with pytest.raises(Interrupted, match="SIGTERM"), signals_raise():
            with sweep_run(store, "sweep", {"a": 1, "b": {"c": 2}}):
                time.sleep(5)  # never reached: the signal is raised when the write ends
    finally:
        event.remove(Engine, "after_cursor_execute", signal_after)
    assert fired
    assert [s for s, _ in _statuses(store)[2]] == ["FAILED"]


def _start_sweep(tmp_path):
    store = tmp_path / "mlruns"
    proc = subprocess.Popen(
        [sys.executable, "-m", "grinder", "sweep", "static_grid", "--root", str(REPO / "data" / "sample" / "lake"),
         *BIG, "--no-report", "--mlruns", str(store), "--out", str(tmp_path / "sw")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300  # a bound for a loaded machine, not a timing assumption
    while time.monotonic() < deadline and proc.poll() is None:
        if (store / DB_NAME).exists():
            with sqlite3.connect(store / DB_NAME) as db:
                try:
                    if db.execute("select status from runs").fetchall() == [("RUNNING",)]:
                        return proc, store
                except sqlite3.OperationalError:  # tables not created yet
                    pass
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"the sweep never showed a RUNNING run: {proc.communicate()[1][-2000:]}")


def _statuses(store):
    client, exp = open_store(store)
    return client, exp, [(r.info.status, r.data.tags) for r in client.search_runs([exp])]


def test_sigterm_marks_the_sweep_failed_and_leaves_nothing(tmp_path):
    proc, store = _start_sweep(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    # One line from us (MLflow logs its own lines when it creates a store).
    assert err.strip().splitlines()[-1].startswith("error: stopped by SIGTERM") and "Traceback" not in err, err
    (status, tags), = _statuses(store)[2]  # fmt: skip
    assert status == "FAILED" and tags[PID_TAG] == str(proc.pid)
    assert not (tmp_path / "sw").exists() or not any((tmp_path / "sw").iterdir())


def test_a_killed_sweeps_run_is_marked_failed_at_the_next_start(tmp_path):
    proc, store = _start_sweep(tmp_path)
    proc.kill()  # SIGKILL: no handler runs, the run stays RUNNING
    proc.communicate(timeout=300)
    client, exp, runs = _statuses(store)
    assert [s for s, _ in runs] == ["RUNNING"]
    # A RUNNING sweep of a live process (this one) and one of another host are left alone.
    live = client.create_run(exp, tags={"kind": "sweep", **process_tags()}).info.run_id
    other = client.create_run(exp, tags={"kind": "sweep", PID_TAG: "1", START_TAG: "1", HOST_TAG: "elsewhere"})
    gone = fail_orphaned_sweeps(client, exp)
    assert len(gone) == 1
    run = client.get_run(gone[0])
    assert run.info.status == "FAILED" and run.data.tags[PID_TAG] == str(proc.pid) and "killed" in (
        run.data.tags["failed_because"])  # fmt: skip
    assert client.get_run(live).info.status == client.get_run(other.info.run_id).info.status == "RUNNING"
    assert fail_orphaned_sweeps(client, exp) == []


def test_a_reused_pid_is_not_mistaken_for_the_sweep():
    tags = process_tags()
    assert is_alive(tags) is True
    assert is_alive({**tags, START_TAG: "1"}) is False  # same pid, another start time: another process
    assert is_alive({**tags, HOST_TAG: "elsewhere"}) is None and is_alive({}) is None
