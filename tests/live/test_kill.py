"""The kill switch: by file, SIGUSR1 and `grinder live kill`; everything cancelled, flattened only where allowed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from grinder.core.diff import ST_NEW
from grinder.errors import LiveError
from grinder.live import kill as killswitch
from grinder.live.adapter import LiveAdapter
from grinder.live.audit import AuditLog
from grinder.live.client import make_client
from grinder.live.client_ids import is_ours
from grinder.live.config import LiveConfig
from grinder.live.rollout import MODES
from grinder.venue.server import VenueServer
from tests.conftest import REPO
from tests.live.test_adapter import PARAMS, _until
from tests.live.test_live_cli import ENV, KILL_RESTART_TOML, config, events, open_orders, procs, serve, start, wait_for  # noqa: F401
from tests.venue.test_server import CREDS, SYMBOL, client, tape  # noqa: F401 - tape is a fixture

HAND_QTY = 0.02  # more than the grid's orders (3 a side of 0.002) can take back before the kill


def probe() -> dict:
    """A short watch for other instances at start, where the config has one (live.instance)."""
    return {"instance_probe_s": 0.3} if "instance_probe_s" in LiveConfig.model_fields else {}


def cfg_for(tmp_path, port: int, **kw) -> LiveConfig:
    # No periodic reconciliation while the test runs: what happens to the position is the kill's doing.
    return LiveConfig(strategy="static_grid", params=PARAMS, symbol="BTCUSDT", api_url=f"http://127.0.0.1:{port}",
                      state_dir=tmp_path / "state", step_ms=100, reconcile_s=60.0, **probe(), **kw)  # fmt: skip


def ours(ids) -> list[str]:
    return sorted(c for c in ids if is_ours(c, "static_grid", "BTCUSDT"))


def audit_events(tmp_path) -> list[dict]:
    return [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]


async def run_adapter(cfg: LiveConfig, tmp_path, until=None, then=None, seconds: float = 60.0):
    """Run an adapter until it stops by itself or `seconds` pass; `then()` once `until()` holds; returns it."""
    ex = make_client(cfg, CREDS.api_key, CREDS.secret)
    audit = AuditLog(tmp_path / "audit.jsonl", secrets=(CREDS.api_key, CREDS.secret))
    try:
        adapter = LiveAdapter(cfg, ex, audit)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, adapter.request_kill)
        task = asyncio.create_task(adapter.run())
        if until is not None:
            await _until(lambda: until(adapter) or task.done(), 30.0, "the adapter to trade")
            if not task.done():
                await then(adapter)
        done, _ = await asyncio.wait({task}, timeout=seconds)
        if not done:
            adapter.stop()
        await asyncio.wait_for(task, 60)
        return adapter
    finally:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
        await ex.close()
        audit.close()


async def scenario(tape, tmp_path, trigger: str, mode: str, **cfg_kw):  # noqa: F811
    """Trade, open a position by hand, pull the kill switch; then a restart (refused), --clear and a restart."""
    srv = VenueServer(tape, CREDS, speed=20.0)
    srv.preroll()
    port = await srv.start()
    replay = asyncio.create_task(srv.run_replay())
    other = client(port)
    await other.load_markets()
    cfg = cfg_for(tmp_path, port, rollout=mode, **cfg_kw)
    out = {}
    try:

        async def pull(adapter):
            _bb, ba = srv.x.best()
            await other.create_order(SYMBOL, "limit", "buy", HAND_QTY, (ba + 500) * 0.1, {"timeInForce": "IOC"})
            out["position_before"] = srv.x.position()[0]
            if trigger == "file":
                killswitch.write_kill(cfg.state_dir, "test")
            else:
                os.kill(os.getpid(), signal.SIGUSR1)

        out["killed"] = await run_adapter(cfg, tmp_path, until=lambda a: len(a.orders) >= 2, then=pull, seconds=30.0)
        out["left"] = ours(o.client_id for o in srv.x.open_orders())
        out["position_after"] = srv.x.position()[0]
        out["flattens"] = [o for o in srv.x.orders.values() if o.reduce_only]
        out["events"] = audit_events(tmp_path)
        sent = len(srv.faults.requests)
        with pytest.raises(LiveError, match=r"KILL: killed .*refusing to trade until a person clears it") as e:
            await run_adapter(cfg, tmp_path)
        out["refusal"] = str(e.value)
        out["sent_by_refused_start"] = len(srv.faults.requests) - sent
        assert killswitch.clear_kill(cfg.state_dir)
        acked = lambda a: any(k.status == ST_NEW for k in a.orders.values())  # noqa: E731 - an order rests
        again = await run_adapter(cfg, tmp_path, until=acked, then=_stop, seconds=30.0)
        out["again_decisions"] = again.decisions
        out["events_after_clear"] = audit_events(tmp_path)[len(out["events"]) :]
    finally:
        replay.cancel()
        await other.close()
        await srv.stop()
    return out


async def _stop(adapter):
    adapter.stop()


def check_killed(out: dict, by: str) -> list[dict]:
    """What every kill must leave: its lines in order, no create after it, nothing of ours resting, a refused start."""
    ev = out["events"]
    names = [e["event"] for e in ev]
    i = names.index("kill_requested")
    assert ev[i]["by"] == by and names.index("kill_plan") > i and names.index("kill") > names.index("kill_plan")
    assert "create" not in names[i:]  # nothing new leaves once the kill is asked for
    (kill,) = [e for e in ev if e["event"] == "kill"]
    assert kill["orders_left"] == [] and out["left"] == []  # every order of ours cancelled
    assert names[-1] == "stop"
    assert "\n" not in out["refusal"] and out["sent_by_refused_start"] == 0  # refused before touching the venue
    assert any(e["event"] == "created" for e in out["events_after_clear"])  # --clear lets it trade again
    return ev


@pytest.mark.parametrize("mode", MODES)
def test_the_kill_file_cancels_everything_in_every_mode_and_flattens_only_in_execute_flatten(tape, tmp_path, mode):  # noqa: F811
    out = asyncio.run(scenario(tape, tmp_path, "file", mode, kill_flatten=True, max_flatten_qty=0.05))
    ev = check_killed(out, "kill file")
    (plan,) = [e for e in ev if e["event"] == "kill_plan"]
    (kill,) = [e for e in ev if e["event"] == "kill"]
    (action,) = plan["actions"]  # the position opened by hand (and whatever the grid holds) is planned
    assert action["kind"] == "flatten" and action["wanted"] == pytest.approx(abs(kill["position_before"]))
    assert kill["plan_id"] == plan["plan_id"]
    if mode == "execute_flatten":
        (order,) = out["flattens"]
        assert action["then"] == "execute" and order.reduce_only and order.tif == "IOC"
        assert kill["flatten"]["client_id"] == order.client_id and abs(out["position_after"]) < 0.0005
    else:
        assert action["then"] == "not_in_mode" and out["flattens"] == []
        assert out["position_after"] == pytest.approx(kill["position_before"])  # planned, not sent


def test_sigusr1_kills_like_the_file_and_leaves_the_file_for_the_restart(tape, tmp_path):  # noqa: F811
    # kill_flatten off: even in execute_flatten mode the position stays, the flatten only planned.
    out = asyncio.run(scenario(tape, tmp_path, "signal", "execute_flatten", max_flatten_qty=0.05))
    ev = check_killed(out, "SIGUSR1")
    (plan,) = [e for e in ev if e["event"] == "kill_plan"]
    assert [a["then"] for a in plan["actions"]] == ["kill_flatten_off"] and out["flattens"] == []


def test_a_pid_file_left_by_a_dead_process_names_nobody(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / killswitch.PID_FILE).write_text(f"{os.getpid()}\n")  # alive, but holds no lock on the folder
    assert killswitch.running_pid(state) is None
    path, pid = killswitch.kill(state)  # the file is written, nobody is signalled (not this process)
    assert pid is None and killswitch.killed(state)["by"] == "grinder live kill"
    assert path.stat().st_mode & 0o077 == 0


def test_grinder_live_kill_stops_the_running_adapter_and_clear_lets_it_trade_again(tmp_path, procs):  # noqa: F811
    port = serve(procs)
    rest = KILL_RESTART_TOML.replace("reconcile_s = 60\n", "reconcile_s = 60\ninstance_probe_s = 0.3\n")
    if "instance_probe_s" not in LiveConfig.model_fields:
        rest = KILL_RESTART_TOML
    cfg, state = config(tmp_path, port, rest)
    first = start("live", "--config", str(cfg))
    procs.append(first)
    wait_for(lambda: sum(e["event"] == "created" for e in events(state)) >= 2)

    def cli(*args) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "grinder", "live", "kill", "--config", str(cfg), *args],
                              capture_output=True, text=True, env=ENV, cwd=REPO, timeout=60)  # fmt: skip

    r = cli()
    assert r.returncode == 0 and f"adapter pid {first.pid} signalled" in r.stdout, r.stderr
    assert first.wait(60) == 0, first.stderr.read()  # a deliberate stop: systemd does not restart it
    names = [e["event"] for e in events(state)]
    assert "kill" in names and "create" not in names[names.index("kill_requested") :]
    assert not ours(open_orders(port))

    refused = subprocess.run([sys.executable, "-m", "grinder", "live", "--config", str(cfg)], capture_output=True,
                             text=True, env=ENV, cwd=REPO, timeout=60)  # fmt: skip
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "killed" in refused.stderr
    assert "Traceback" not in refused.stderr

    r = cli("--clear")
    assert r.returncode == 0 and "cleared" in r.stdout and not (state / killswitch.KILL_FILE).exists()
    n = len(events(state))
    second = start("live", "--config", str(cfg))
    procs.append(second)
    wait_for(lambda: any(e["event"] == "created" for e in events(state)[n:]))
    second.send_signal(signal.SIGTERM)
    assert second.wait(60) == 0, second.stderr.read()
    assert not ours(open_orders(port))


def test_grinder_live_kill_on_a_missing_state_folder_is_one_line_exit_2(tmp_path):
    cfg = tmp_path / "live.toml"
    cfg.write_text(
        f'strategy = "static_grid"\nsymbol = "BTCUSDT"\nstate_dir = "{tmp_path / "nowhere"}"\nparams = {{}}\n'
    )
    r = subprocess.run([sys.executable, "-m", "grinder", "live", "kill", "--config", str(cfg)], capture_output=True,
                       text=True, env=ENV, cwd=REPO, timeout=60)  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such state folder" in r.stderr


@pytest.mark.parametrize("how", ["garbage", "folder", "dangling link", "unreadable"])
def test_a_kill_file_counts_whatever_it_holds(tmp_path, how):
    state = tmp_path / "state"
    state.mkdir()
    path = killswitch.kill_path(state)
    if how == "garbage":
        path.write_bytes(b"\xff\x00not json")
    elif how == "folder":
        path.mkdir()
    elif how == "dangling link":
        path.symlink_to(tmp_path / "nowhere")
    else:
        path.write_text("{}")
        path.chmod(0)
    assert killswitch.killed(state) is not None
    with pytest.raises(LiveError, match="refusing to trade"):
        killswitch.refuse_if_killed(state)
    if how == "folder":  # --clear says what it cannot do, in one line
        with pytest.raises(LiveError, match="cannot be removed"):
            killswitch.clear_kill(state)
    else:
        assert killswitch.clear_kill(state) and killswitch.killed(state) is None


@pytest.mark.parametrize("after_s", [0.3, 1.5, 3.0])
def test_sigusr1_at_any_moment_of_the_start_kills_never_trades_after(tmp_path, procs, after_s):  # noqa: F811
    port = serve(procs)
    cfg, state = config(tmp_path, port, KILL_RESTART_TOML)
    proc = start("live", "--config", str(cfg))
    procs.append(proc)
    time.sleep(after_s)  # somewhere in the start: imports, the config, the venue's markets, the first orders
    proc.send_signal(signal.SIGUSR1)
    code = proc.wait(60)
    assert code in (0, 2), proc.stderr.read()  # killed, or refused by the kill file: never a death by signal
    assert killswitch.killed(state) is not None
    assert not ours(open_orders(port))
    names = [e["event"] for e in events(state)]
    assert "create" not in names[names.index("kill_requested") :] if "kill_requested" in names else True


def test_paper_mode_kills_and_flattens_on_its_local_venue(tape, tmp_path):  # noqa: F811
    async def main():
        srv = VenueServer(tape, CREDS, speed=20.0)
        srv.preroll()
        port = await srv.start()
        replay = asyncio.create_task(srv.run_replay())
        cfg = cfg_for(tmp_path, port, mode="paper", rollout="execute_flatten", kill_flatten=True, max_flatten_qty=0.05)

        async def pull(adapter):  # a position opened by hand on the paper venue, then the kill file
            _bb, ba = adapter.ex.x.best()
            await adapter.ex.create_order(SYMBOL, "limit", "buy", HAND_QTY, (ba + 500) * 0.1,
                                          {"timeInForce": "IOC", "clientOrderId": "by_hand"})  # fmt: skip
            killswitch.write_kill(cfg.state_dir, "test")

        try:
            adapter = await run_adapter(cfg, tmp_path, until=lambda a: len(a.orders) >= 2, then=pull, seconds=30.0)
            return adapter, adapter.ex.x.position()[0], adapter.ex.x.open_orders(), audit_events(tmp_path)
        finally:
            replay.cancel()
            await srv.stop()

    adapter, position, resting, ev = asyncio.run(main())
    (kill,) = [e for e in ev if e["event"] == "kill"]
    assert kill["by"] == "kill file" and kill["orders_left"] == [] and resting == []
    assert abs(kill["position_before"]) >= HAND_QTY / 2 and kill["flatten"]["result"] == "sent"
    assert abs(position) < 0.0005 and abs(kill["position_after"]) < 0.0005  # closed on the local venue
    assert adapter.ex.x.find(client_id=kill["flatten"]["client_id"]).reduce_only
