"""The venue-down watch against the emulator: up with nothing to stream keeps a session; gone or hung ends it."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from grinder.live.adapter import LiveAdapter
from grinder.live.audit import AuditLog
from grinder.live.client import make_client
from grinder.live.venue_watch import EXIT_VENUE_DOWN, VenueDown, watch_venue
from grinder.venue.server import VenueServer
from tests.live.test_adapter import config
from tests.venue.test_server import CREDS, client, tape  # noqa: F401 - tape is a fixture


def lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def watch(ex, audit, down_after_s: float, last_data=lambda: 0.0):
    return watch_venue(ex, audit, down_after_s, "the emulator", last_data, time.monotonic, time.time_ns)


def run_watch(tape, tmp_path, down_after_s: float, bound_s: float, setup, last_data=lambda: 0.0):  # noqa: F811
    """The watch on an emulator `setup(srv)` prepared, for at most `bound_s`: (its error or None, seconds, srv, lines).

    `setup` may return another port to watch instead (a listener of its own, closed at the end).
    """

    async def main():
        srv = VenueServer(tape, CREDS)
        srv.preroll()
        port = await srv.start()
        other = await setup(srv)
        ex = client(port if other is None else other.sockets[0].getsockname()[1])
        audit = AuditLog(tmp_path / "audit.jsonl", secrets=(CREDS.api_key, CREDS.secret))
        try:
            t0 = time.monotonic()
            try:
                await asyncio.wait_for(watch(ex, audit, down_after_s, last_data), bound_s)
            except VenueDown as e:
                return e, time.monotonic() - t0, srv
            except TimeoutError:
                return None, time.monotonic() - t0, srv
        finally:
            audit.close()
            await ex.close()
            await srv.stop()
            if other is not None:
                other.close()

    error, elapsed, srv = asyncio.run(main())
    return error, elapsed, srv, lines(tmp_path / "audit.jsonl")


async def nothing(srv):
    pass


async def gone(srv):
    await srv.stop()


async def hung(srv):
    """A venue that takes the connection and never answers (a host gone behind a firewall that drops)."""

    async def never(reader, writer):
        await reader.read()

    return await asyncio.start_server(never, "127.0.0.1", 0)


def test_a_venue_that_is_up_with_nothing_to_stream_is_not_down(tape, tmp_path):  # noqa: F811
    error, _, srv, audit = run_watch(tape, tmp_path, 2.0, 6.0, nothing)  # no replay: no market data at all
    assert error is None and audit == []
    assert sum(p == "/fapi/v1/time" for _, p in srv.faults.requests) >= 3  # it was asked, and answered


@pytest.mark.parametrize("how", [gone, hung], ids=["stopped", "hung"])
def test_a_venue_that_is_gone_or_hangs_is_down_after_the_limit_not_before(tape, tmp_path, how):  # noqa: F811
    error, elapsed, _, audit = run_watch(tape, tmp_path, 2.0, 60.0, how)
    assert isinstance(error, VenueDown) and error.exit_code == EXIT_VENUE_DOWN == 3
    assert elapsed >= 2.0 and "the emulator down for" in str(error)
    [down] = audit
    assert down["event"] == "venue_down" and down["silent_s"] >= 2.0 and down["venue_down_exit_s"] == 2.0
    # Refused: ccxt's NetworkError family (ExchangeNotAvailable); hung: the watch's own bound on the probe.
    assert (
        down["probe_error"] == "TimeoutError"
        if how is hung
        else down["probe_error"] in ("ExchangeNotAvailable", "NetworkError")
    )


def test_market_data_alone_keeps_a_venue_up(tape, tmp_path):  # noqa: F811
    error, _, _, audit = run_watch(tape, tmp_path, 2.0, 5.0, gone, last_data=time.monotonic)
    assert error is None and audit == []


def test_an_adapter_on_a_venue_at_the_end_of_its_data_keeps_running_and_stops_clean(tape, tmp_path):  # noqa: F811
    """The book freezes, goes stale and its quotes are cancelled; the venue still answers, so the session goes on."""

    async def main():
        srv = VenueServer(tape, CREDS, speed=20.0)
        srv.preroll()
        port = await srv.start()
        replay = asyncio.create_task(srv.run_replay(until_row=srv.row + 20_000))  # then stays up, frozen
        cfg = config(tmp_path, port, venue_down_exit_s=2.0, stale_after_s=1.0)
        ex = make_client(cfg, CREDS.api_key, CREDS.secret)
        audit = AuditLog(tmp_path / "audit.jsonl", secrets=(CREDS.api_key, CREDS.secret))
        adapter = LiveAdapter(cfg, ex, audit)
        task = asyncio.create_task(adapter.run())
        try:
            await asyncio.wait_for(replay, 60)
            await asyncio.sleep(7.0)  # stale after 1 s, the venue-down limit (2 s) passed more than twice
            running, resting = not task.done(), [o.client_id for o in srv.x.open_orders()]
            adapter.stop()
            await asyncio.wait_for(task, 60)  # raises if the adapter failed
            return running, resting, srv, [o.client_id for o in srv.x.open_orders()]
        finally:
            await ex.close()
            audit.close()
            await srv.stop()

    running, resting, srv, left = asyncio.run(main())
    kinds = [e["event"] for e in lines(tmp_path / "audit.jsonl")]
    assert running and "venue_down" not in kinds and "task_failed" not in kinds
    assert "created" in kinds and resting == []  # it quoted, and no quote rests on the frozen book
    assert kinds[-1] == "stop" and left == []
    assert any(p == "/fapi/v1/time" for _, p in srv.faults.requests)  # the quiet venue was asked
