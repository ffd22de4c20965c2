"""A folder per adapter run (live.runs): its audit lines, metrics and budget; completion after kill -9; retention."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from grinder.errors import ConfigError
from grinder.live.adapter import LiveAdapter
from grinder.live.audit import AuditLog
from grinder.live.client import make_client
from grinder.live.config import load_config
from grinder.live.lock import ProcessLock
from grinder.live.runs import RUNS, RunFolder, prune, run_name, started_ns
from grinder.venue.server import VenueServer
from tests.live.test_adapter import config
from tests.venue.test_server import CREDS, tape  # noqa: F401 - tape is a fixture

DAY_NS = 86_400 * 10**9
NOW = 1_780_000_000 * 10**9  # a fixed wall time the tests name folders by


def make_run(runs, now_ns: int, epoch: str = "AAAAA", done: bool = True):
    """A finished (or, `done` False, never stopped) run folder of ours started at `now_ns`."""
    path = runs / run_name(now_ns, epoch)
    path.mkdir(parents=True, mode=0o700)
    rec = {"started_ns": now_ns, **({"stopped_ns": now_ns + 1} if done else {})}
    (path / "run.json").write_text(json.dumps(rec))
    return path


def test_two_sessions_leave_two_run_folders_whose_audit_lines_make_the_whole_trail(tape, tmp_path):  # noqa: F811
    async def one_session(seconds: float):
        srv = VenueServer(tape, CREDS, speed=20.0)
        srv.preroll()
        port = await srv.start()
        replay = asyncio.create_task(srv.run_replay())
        cfg = config(tmp_path, port, metrics_port=0)
        ex = make_client(cfg, CREDS.api_key, CREDS.secret)
        audit = AuditLog(cfg.state_dir / "audit.jsonl", secrets=(CREDS.api_key, CREDS.secret))
        adapter = LiveAdapter(cfg, ex, audit)
        task = asyncio.create_task(adapter.run())
        try:
            await asyncio.sleep(seconds)
            adapter.stop()
            await asyncio.wait_for(task, 60)
        finally:
            replay.cancel()
            await ex.close()
            audit.close()
            await srv.stop()
        return adapter

    first = asyncio.run(one_session(3.0))
    second = asyncio.run(one_session(3.0))
    state = tmp_path / "state"
    runs = sorted((state / RUNS).iterdir())
    assert [p.name.split("-")[1] for p in runs] == [first.ids.epoch, second.ids.epoch]
    # The state folder's trail is the whole history; each run folder holds exactly its own part of it.
    whole = (state / "audit.jsonl").read_bytes()
    assert b"".join((p / "audit.jsonl").read_bytes() for p in runs) == whole
    for p, adapter in zip(runs, (first, second), strict=True):
        lines = [json.loads(x) for x in (p / "audit.jsonl").read_text().splitlines()]
        assert lines[0]["event"] == "run_folder" and lines[-1]["event"] == "stop"
        assert {e["epoch"] for e in lines if e["event"] == "start"} == {adapter.ids.epoch}
        rec = json.loads((p / "run.json").read_text())
        assert rec["outcome"] == "stopped" and rec["clean"] is True and rec["decisions"] == adapter.decisions
        assert rec["pid"] == os.getpid() and rec["stopped_ns"] > rec["started_ns"]
        assert "grinder_decisions_total" in (p / "metrics.prom").read_text()
        assert {f.name for f in p.iterdir()} == {"run.json", "run.lock", "audit.jsonl", "metrics.prom", "budget.json"}
        assert all(oct(f.stat().st_mode & 0o777) == "0o600" for f in p.iterdir())
        assert oct(p.stat().st_mode & 0o777) == "0o700"
    # The budget is the state folder's, counting the day across runs; each run folder has its start and stop.
    b1, b2 = (json.loads((p / "budget.json").read_text()) for p in runs)
    assert b1["at_stop"] == b2["at_start"] and b2["at_stop"]["actions"] > b2["at_start"]["actions"] > 0
    assert json.loads((state / "budget.jsonl").read_text().splitlines()[-1])["actions"] == b2["at_stop"]["actions"]
    assert (state / "metrics.prom").read_text() == (runs[1] / "metrics.prom").read_text()


def test_a_run_killed_before_its_stop_gets_its_lines_from_the_next_start(tmp_path):
    audit = tmp_path / "audit.jsonl"
    audit.write_text("old\n")
    a = RunFolder.start(tmp_path, "AAAAA", audit, NOW, 30, 0)
    with audit.open("a") as f:
        f.write("a1\na2\n")
    a.lock.release()  # the process died: no finish, its lock gone with it
    b = RunFolder.start(tmp_path, "BBBBB", audit, NOW + 10**9, 30, 0)
    assert b.completed == [a.path.name]
    assert (a.path / "audit.jsonl").read_text() == "a1\na2\n"
    assert json.loads((a.path / "run.json").read_text())["ended"].startswith("unclean")
    with audit.open("a") as f:
        f.write("b1\n")
    b.finish(NOW + 2 * 10**9, outcome="stopped")
    assert (b.path / "audit.jsonl").read_text() == "b1\n"
    # A run still running (its lock held) is not completed by anyone else.
    c = RunFolder.start(tmp_path, "CCCCC", audit, NOW + 3 * 10**9, 30, 0)
    d = RunFolder.start(tmp_path, "DDDDD", audit, NOW + 4 * 10**9, 30, 0)
    assert d.completed == [] and not (c.path / "audit.jsonl").exists()
    for r in (c, d):
        r.lock.release()


def test_retention_keeps_the_newest_keep_runs_and_drops_those_older_than_keep_days(tmp_path):
    runs = tmp_path / RUNS
    paths = [make_run(runs, NOW - k * DAY_NS, f"E{k:04d}") for k in range(6)]  # newest first
    assert prune(runs, 4, 0, NOW) == [paths[4].name, paths[5].name]
    assert prune(runs, 4, 2.5, NOW) == [paths[3].name]  # 3 days old
    assert sorted(p.name for p in runs.iterdir()) == sorted(p.name for p in paths[:3])
    assert started_ns(paths[1].name) == NOW - DAY_NS and started_ns("notes") is None


def test_retention_never_removes_the_current_run_a_locked_run_a_symlink_or_what_is_not_a_run_folder(tmp_path):
    """Hostile: everything in runs/ that is not a finished run folder of ours survives keep_runs = 1."""
    runs = tmp_path / RUNS
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    current = make_run(runs, NOW, "CURRN", done=False)
    locked = make_run(runs, NOW - 5 * DAY_NS, "LOCKD", done=False)
    old = make_run(runs, NOW - 6 * DAY_NS, "OLDXX")
    (old / "link").symlink_to(outside / "precious")  # removing the folder removes the link, not its target
    (old / "dirlink").symlink_to(outside, target_is_directory=True)
    foreign = runs / "notes"
    foreign.mkdir()
    (runs / run_name(NOW - 9 * DAY_NS, "AFILE")).write_text("a file named as a run")
    link = runs / run_name(NOW - 8 * DAY_NS, "SYMLK")
    link.symlink_to(outside, target_is_directory=True)
    held = ProcessLock(locked / "run")  # its process still runs
    try:
        removed = prune(runs, 1, 1, NOW, current=current)
    finally:
        held.release()
    assert removed == [old.name]
    assert current.is_dir() and locked.is_dir() and foreign.is_dir() and link.is_symlink()
    assert (runs / run_name(NOW - 9 * DAY_NS, "AFILE")).is_file()
    assert (outside / "precious").read_text() == "keep me"
    # Once its process is gone the locked one goes too; the current one never.
    assert prune(runs, 1, 1, NOW, current=current) == [locked.name]
    assert current.is_dir()


@pytest.mark.skipif(os.geteuid() != 0, reason="making a folder another user owns needs root")
def test_retention_leaves_a_run_folder_another_user_owns(tmp_path):
    runs = tmp_path / RUNS
    theirs = make_run(runs, NOW - 9 * DAY_NS, "THEIR")
    os.chown(theirs, 12345, 12345)
    assert prune(runs, 1, 0, NOW) == []
    assert theirs.is_dir()


def test_a_run_folder_that_cannot_be_made_is_audited_and_trading_goes_on(tmp_path):
    cfg = config(tmp_path, 1)
    cfg.state_dir.mkdir(parents=True)
    (cfg.state_dir / RUNS).write_text("not a folder")
    audit = AuditLog(tmp_path / "audit.jsonl", max_delay_s=None)
    adapter = LiveAdapter(cfg, ex=None, audit=audit)
    try:
        adapter._open_run_folder()
        assert adapter.run_folder is None
        adapter._close_run_folder(outcome="stopped")  # nothing to close: no error
    finally:
        adapter.ids.close()
        adapter.budget.close()
        audit.close()
    assert [json.loads(x)["event"] for x in (tmp_path / "audit.jsonl").read_text().splitlines()] == [
        "run_folder_failed"
    ]


@pytest.mark.parametrize(("line", "expected"), [("keep_runs = 0", "keep_runs"), ("keep_days = -1", "keep_days")])
def test_a_bad_retention_setting_is_one_line_naming_the_field(line, expected, tmp_path):
    path = tmp_path / "live.toml"
    path.write_text(f'strategy = "static_grid"\nsymbol = "BTCUSDT"\n{line}\nparams = {{}}\n')
    with pytest.raises(ConfigError, match=rf"live\.toml: {expected}: "):
        load_config(path)
