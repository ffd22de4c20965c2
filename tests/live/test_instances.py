"""Two adapter instances on one account: the second is refused, a dead one's orders are cleared, ids never repeat."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter

import pytest

from grinder.errors import LiveError
from grinder.live.adapter import LiveAdapter
from grinder.live.audit import AuditLog
from grinder.live.client import make_client
from grinder.live.client_ids import ClientOrderId, is_ours
from grinder.live.instance import Instances
from grinder.live.reconcile import check_orders
from grinder.venue.exchange import CANCELED
from grinder.venue.server import VenueServer
from tests.live.test_adapter import _until, config
from tests.live.test_live_cli import KILL_RESTART_TOML, events, open_orders, procs, serve, start, wait_for  # noqa: F401
from tests.live.test_live_cli import config as cli_config
from tests.venue.test_server import CREDS, SYMBOL, client, tape  # noqa: F401 - fixtures

STRATEGY = "static_grid"


def ours(ids) -> list[str]:
    return sorted(c for c in ids if is_ours(c, STRATEGY, "BTCUSDT"))


def duplicates(srv: VenueServer) -> list[str]:
    """Client ids used by more than one order the venue ever took."""
    return [c for c, n in Counter(o.client_id for o in srv.x.orders.values()).items() if n > 1]


def read(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_ids_of_another_live_instance_are_neither_orphans_nor_cancelled_by_reconciliation():
    inst = Instances(STRATEGY, "BTCUSDT", "mine1", dead={"dead1", None})
    mine, dead, legacy = (str(ClientOrderId(STRATEGY, "BTCUSDT", 3, e)) for e in ("mine1", "dead1", None))
    live = str(ClientOrderId(STRATEGY, "BTCUSDT", 3, "live1"))
    other_symbol = str(ClientOrderId(STRATEGY, "ETHUSDT", 3, "live1"))
    assert [inst.is_other(c) for c in (mine, dead, legacy, live, other_symbol, "web_1")] == [
        False, False, False, True, False, False]  # fmt: skip
    assert [inst.mine_or_dead(c) for c in (mine, dead, legacy, live, other_symbol, "web_1")] == [
        True, True, True, False, False, False]  # fmt: skip
    venue = [{"clientOrderId": c} for c in (mine, dead, legacy, live, other_symbol, "web_1")]
    check = check_orders(set(), venue, STRATEGY, "BTCUSDT", is_other=inst.is_other)
    assert [o["clientOrderId"] for o in check.orphans] == [mine, dead, legacy]
    assert [o["clientOrderId"] for o in check.others] == [live]
    assert [o["clientOrderId"] for o in check.foreign] == [other_symbol, "web_1"]
    assert inst.by_epoch(venue) == {"dead1": {dead}, None: {legacy}, "live1": {live}}


async def _venue(tape):  # noqa: F811
    srv = VenueServer(tape, CREDS, speed=20.0)
    srv.preroll()
    port = await srv.start()
    return srv, port, asyncio.create_task(srv.run_replay())


def _adapter(tmp_path, port: int, name: str, **kw) -> tuple[LiveAdapter, AuditLog]:
    (tmp_path / name).mkdir(exist_ok=True)
    cfg = config(tmp_path / name, port).model_copy(update=kw)
    ex = make_client(cfg, CREDS.api_key, CREDS.secret)
    audit = AuditLog(tmp_path / name / "audit.jsonl", secrets=(CREDS.api_key, CREDS.secret))
    return LiveAdapter(cfg, ex, audit), audit


async def _close(*pairs) -> None:
    for adapter, audit in pairs:
        await adapter.ex.close()
        audit.close()


def test_a_second_adapter_on_the_same_account_refuses_to_start_and_cancels_nothing(tape, tmp_path):  # noqa: F811
    async def main():
        srv, port, replay = await _venue(tape)
        first, first_audit = _adapter(tmp_path, port, "a")
        second, second_audit = _adapter(tmp_path, port, "b", instance_probe_s=6.0)  # another state folder
        task = asyncio.create_task(first.run())
        try:
            await _until(lambda: len(ours(o.client_id for o in srv.x.open_orders())) >= 4, what="the first's quotes")
            resting = set(ours(o.client_id for o in srv.x.open_orders()))
            decisions = first.decisions
            with pytest.raises(LiveError) as refused:
                await second.run()
            gone = {o.client_id for o in srv.x.orders.values() if o.status == CANCELED}  # so far
            # The first trades on, untouched: its decisions go on and it places orders after the refusal.
            placed = len(srv.x.orders)
            await _until(lambda: len(srv.x.orders) > placed and first.decisions > decisions + 10, what="trading on")
            assert not task.done()
        finally:
            first.stop()
            await asyncio.wait_for(task, 60)
            replay.cancel()
            await _close((first, first_audit), (second, second_audit))
            await srv.stop()
        return srv, first, refused.value, resting, gone

    srv, first, refused, resting, gone = asyncio.run(main())
    text = str(refused)
    assert "\n" not in text and text.startswith(f"another adapter (instance {first.ids.epoch}) is trading static_grid")
    assert "refusing to start (nothing cancelled)" in text
    b = read(tmp_path / "b" / "audit.jsonl")
    kinds = [e["event"] for e in b]
    assert kinds[:4] == ["run_folder", "start", "instance_probe", "other_instance"]
    assert not [k for k in kinds if k.startswith("cancel") or k == "create"]  # 0 of the first's orders cancelled
    assert all(first.ids.is_mine(c) for c in b[3]["placed"])
    a = read(tmp_path / "a" / "audit.jsonl")
    cancelled_by_first = {e["client_id"] for e in a if e["event"] in ("cancel", "cancelled", "cancel_not_open")}
    assert gone <= cancelled_by_first  # every cancel on the venue until the refusal was the first's own
    assert resting and "other_instance" not in [e["event"] for e in a]
    assert not duplicates(srv) and not ours(o.client_id for o in srv.x.open_orders())


def test_orders_of_a_dead_instance_are_cancelled_after_the_probe_and_trading_goes_on(tape, tmp_path):  # noqa: F811
    async def main():
        srv, port, replay = await _venue(tape)
        other = client(port)
        await other.load_markets()
        bb, ba = srv.x.best()
        # What a killed adapter of another state folder, and one of an earlier version, left resting.
        dead = [str(ClientOrderId(STRATEGY, "BTCUSDT", n, "DeAd1")) for n in range(3)]
        dead.append(str(ClientOrderId(STRATEGY, "BTCUSDT", 0, None)))
        for n, cid in enumerate(dead):
            await other.create_order(SYMBOL, "limit", "buy", 0.002, (bb - 500 - 10 * n) * 0.1,
                                     {"postOnly": True, "clientOrderId": cid})  # fmt: skip
        await other.create_order(SYMBOL, "limit", "sell", 0.002, (ba + 5000) * 0.1,
                                 {"postOnly": True, "clientOrderId": "web_keep_me"})  # fmt: skip
        adapter, audit = _adapter(tmp_path, port, "a", instance_probe_s=1.0)
        task = asyncio.create_task(adapter.run())
        try:
            await _until(lambda: len([o for o in srv.x.open_orders() if adapter.ids.is_mine(o.client_id)]) >= 2,
                         what="quotes after the probe")  # fmt: skip
            still = {o.client_id for o in srv.x.open_orders()} & set(dead)
        finally:
            adapter.stop()
            await asyncio.wait_for(task, 60)
            replay.cancel()
            await other.close()
            await _close((adapter, audit))
            await srv.stop()
        return srv, adapter, dead, still

    srv, adapter, dead, still = asyncio.run(main())
    assert not still  # gone before trading went on
    ev = read(tmp_path / "a" / "audit.jsonl")
    kinds = [e["event"] for e in ev]
    assert kinds[:3] == ["run_folder", "start", "instance_probe"]
    probe_dead = {e["epoch"]: e for e in ev if e["event"] == "instance_dead"}
    assert probe_dead["DeAd1"]["open_orders"] == 3 and probe_dead["(earlier id format)"]["open_orders"] == 1
    orphans = {e["client_id"] for e in ev if e["event"] == "mismatch" and e["kind"] == "orphan"}
    assert orphans == set(dead) and kinds.index("instance_dead") < kinds.index("mismatch") < kinds.index("create")
    assert "other_instance" not in kinds and adapter.decisions > 0
    assert [o.client_id for o in srv.x.open_orders()] == ["web_keep_me"] and not duplicates(srv)


def test_a_restart_takes_its_folders_earlier_instance_for_dead_without_a_probe(tape, tmp_path):  # noqa: F811
    async def main():
        srv, port, replay = await _venue(tape)
        other = client(port)
        await other.load_markets()
        try:
            first, audit = _adapter(tmp_path, port, "a")
            task = asyncio.create_task(first.run())
            await _until(lambda: len(ours(o.client_id for o in srv.x.open_orders())) >= 2, what="the first quotes")
            first.stop()
            await asyncio.wait_for(task, 60)
            await _close((first, audit))
            # What a kill -9 of that process would have left: orders of its epoch resting.
            bb, _ = srv.x.best()
            left = [str(ClientOrderId(STRATEGY, "BTCUSDT", 5000 + n, first.ids.epoch)) for n in range(2)]
            for n, cid in enumerate(left):
                await other.create_order(SYMBOL, "limit", "buy", 0.002, (bb - 600 - 10 * n) * 0.1,
                                         {"postOnly": True, "clientOrderId": cid})  # fmt: skip
            n_before = len(read(tmp_path / "a" / "audit.jsonl"))
            again, audit = _adapter(tmp_path, port, "a", instance_probe_s=120.0)  # a probe would outlast the test
            task = asyncio.create_task(again.run())
            try:
                await _until(lambda: any(again.ids.is_mine(o.client_id) for o in srv.x.open_orders()),
                             what="quotes after the restart")  # fmt: skip
            finally:
                again.stop()
                await asyncio.wait_for(task, 60)
                await _close((again, audit))
        finally:
            replay.cancel()
            await other.close()
            await srv.stop()
        return srv, first, again, left, read(tmp_path / "a" / "audit.jsonl")[n_before:]

    srv, first, again, left, ev = asyncio.run(main())
    assert again.ids.past_epochs == (first.ids.epoch,) and again.ids.epoch != first.ids.epoch
    kinds = [e["event"] for e in ev]
    assert "instance_probe" not in kinds and "other_instance" not in kinds
    (dead,) = [e for e in ev if e["event"] == "instance_dead"]
    assert dead == {**dead, "epoch": first.ids.epoch, "open_orders": 2, "probed": False}
    assert {e["client_id"] for e in ev if e["event"] == "mismatch" and e["kind"] == "orphan"} == set(left)
    assert not set(left) & {o.client_id for o in srv.x.open_orders()} and not duplicates(srv)


def test_a_running_adapter_that_sees_another_instance_place_an_order_stops_and_leaves_it(tape, tmp_path):  # noqa: F811
    async def main():
        srv, port, replay = await _venue(tape)
        other = client(port)
        await other.load_markets()
        adapter, audit = _adapter(tmp_path, port, "a", reconcile_s=60.0)  # the user stream must see it
        task = asyncio.create_task(adapter.run())
        try:
            await _until(lambda: len(ours(o.client_id for o in srv.x.open_orders())) >= 2, what="the first quotes")
            bb, _ = srv.x.best()
            intruder = str(ClientOrderId(STRATEGY, "BTCUSDT", 0, "LiVe2"))  # another instance's first order
            await other.create_order(SYMBOL, "limit", "buy", 0.002, (bb - 700) * 0.1,
                                     {"postOnly": True, "clientOrderId": intruder})  # fmt: skip
            with pytest.raises(LiveError) as stopped:
                await asyncio.wait_for(task, 60)
        finally:
            adapter.stop()
            if not task.done():
                await asyncio.wait_for(task, 60)
            left = [o.client_id for o in srv.x.open_orders()]
            replay.cancel()
            await other.close()
            await _close((adapter, audit))
            await srv.stop()
        return srv, stopped.value, intruder, left

    srv, stopped, intruder, left = asyncio.run(main())
    assert "\n" not in str(stopped) and "another adapter (instance LiVe2)" in str(stopped)
    ev = read(tmp_path / "a" / "audit.jsonl")
    kinds = [e["event"] for e in ev]
    seen = kinds.index("other_instance")
    assert ev[seen]["client_id"] == intruder and ev[seen]["when"] == "user stream" and kinds[-1] == "stop"
    assert "create" not in kinds[seen:]  # it stopped trading at once
    assert intruder not in {e.get("client_id") for e in ev if e["event"].startswith("cancel")}
    assert left == [intruder] and not duplicates(srv)  # its own cancelled, the other instance's left alone


def _folder(tmp_path, name: str):
    (tmp_path / name).mkdir()
    return tmp_path / name


def test_kill_9_then_a_start_from_a_fresh_state_folder_clears_the_dead_orders_and_reuses_no_id(tmp_path, procs):  # noqa: F811
    port = serve(procs)
    cfg, state = cli_config(_folder(tmp_path, "one"), port, KILL_RESTART_TOML)
    first = start("live", "--config", str(cfg))
    procs.append(first)
    wait_for(lambda: sum(e["event"] == "created" for e in events(state)) >= 4)
    first.send_signal(signal.SIGKILL)  # orders left resting, no goodbye
    assert first.wait(10) == -9
    resting = ours(open_orders(port))
    assert resting

    # A fresh state folder on the used account: its sequence starts at 0 again, its epoch is new.
    cfg2, state2 = cli_config(_folder(tmp_path, "two"), port, "instance_probe_s = 1.0\n" + KILL_RESTART_TOML)
    second = start("live", "--config", str(cfg2))
    procs.append(second)
    wait_for(lambda: any(e["event"] == "created" for e in events(state2)))
    after = events(state2)
    assert [e["event"] for e in after][:3] == ["run_folder", "start", "instance_probe"]
    orphans = {e["client_id"] for e in after if e["event"] == "mismatch" and e["kind"] == "orphan"}
    assert orphans and orphans <= set(resting)  # the killed process's orders (some may have filled meanwhile)
    assert not set(open_orders(port)) & set(resting)
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0, second.stderr.read()
    one = {e["client_id"] for e in events(state) if e["event"] == "create"}
    two = {e["client_id"] for e in events(state2) if e["event"] == "create"}
    assert one and two and not one & two  # no id reused across state folders
    assert not ours(open_orders(port))


def test_a_second_adapter_process_is_refused_in_one_line_with_exit_2(tmp_path, procs):  # noqa: F811
    port = serve(procs)
    busy = KILL_RESTART_TOML.replace("interval = 5.0", "interval = 0.5")
    busy = busy.replace("half_spread = 10.0", "half_spread = 0.1")
    cfg, state = cli_config(_folder(tmp_path, "one"), port, busy)
    first = start("live", "--config", str(cfg))
    procs.append(first)
    wait_for(lambda: sum(e["event"] == "created" for e in events(state)) >= 4)
    # A probe long enough that the first, re-quoting as the replay moves, places orders within it.
    cfg2, state2 = cli_config(_folder(tmp_path, "two"), port, "instance_probe_s = 20.0\n" + busy)
    second = start("live", "--config", str(cfg2))
    procs.append(second)
    assert second.wait(120) == 2
    err = second.stderr.read()
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "another adapter (instance" in err
    assert "refusing to start (nothing cancelled)" in err
    kinds = [e["event"] for e in events(state2)]
    assert kinds[:4] == ["run_folder", "start", "instance_probe", "other_instance"]
    assert not [k for k in kinds if k.startswith("cancel") or k == "create"]
    assert first.poll() is None  # the first trades on
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0
    assert "other_instance" not in [e["event"] for e in events(state)]
