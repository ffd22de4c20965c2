"""`grinder record` against the emulator over loopback through ccxt.pro: the recording replays as it was streamed."""

from __future__ import annotations

import asyncio
import gzip
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

from grinder.cli.main import app
from grinder.data.tape import load_tape
from grinder.live.client import GrinderBinance, client_options, market_instrument
from grinder.live.recorder import Recorder, ingest_recording
from grinder.venue.exchange import Exchange
from grinder.venue.server import VenueServer
from tests.conftest import REPO
from tests.venue.test_server import CREDS, tape  # noqa: F401 - tape is a fixture

TOP = 20


def book_at_end(tape, n: int = TOP):  # noqa: F811 - a tape, not the fixture
    """Top n levels a side after applying every row of the tape, as the emulator's book would hold them."""
    x = Exchange(tape.instrument)
    for k, s, p, q, ts in zip(tape.kind.tolist(), tape.side.tolist(), tape.price_ticks.tolist(), tape.qty.tolist(),
                              tape.ts_exch.tolist(), strict=True):  # fmt: skip
        x.on_row(k, s, p, q, ts)
    return x.depth(n)


def trade_rows(tape, rows=None):  # noqa: F811
    """(exchange time, trade id, side, price ticks, qty) of the tape's trades, or of the given rows."""
    idx = np.flatnonzero(tape.kind == 3) if rows is None else np.asarray(rows, dtype=np.int64)
    return list(zip(tape.ts_exch[idx].tolist(), tape.ref[idx].tolist(), tape.side[idx].tolist(),
                    tape.price_ticks[idx].tolist(), tape.qty[idx].tolist(), strict=True))  # fmt: skip


async def record(tape, tmp_path, rows: int, during=None, stop_after: float | None = None):  # noqa: F811
    """Record the emulator replaying `rows` rows; stop when the replay is over (or after `stop_after` s)."""
    srv = VenueServer(tape, CREDS, speed=20.0)
    srv.preroll()
    port = await srv.start()
    streamed: list[int] = []  # tape rows of the trades the emulator sent to a subscriber
    emit = srv._emit_trade

    async def emit_and_note(i: int) -> None:
        if srv.trade_subs["trade"]:
            streamed.append(i)
        await emit(i)

    srv._emit_trade = emit_and_note
    replay = asyncio.create_task(srv.run_replay(until_row=srv.row + rows))
    ex = GrinderBinance(client_options(f"http://127.0.0.1:{port}"))
    rec = Recorder(ex, "BTCUSDT", tmp_path / "raw")
    task = asyncio.create_task(rec.run())
    try:
        if during is not None:
            await asyncio.sleep(1.0)
            during(srv)
        if stop_after is not None:
            await asyncio.sleep(stop_after)
        else:
            await asyncio.wait_for(replay, 60)
            await asyncio.sleep(0.3)  # the last messages reach the recorder
        rec.stop()
        got = await asyncio.wait_for(task, 30)
        depth = srv.x.depth(TOP)  # the venue's book when the recording ended
    finally:
        replay.cancel()
        await ex.close()
        await srv.stop()
    manifest = ingest_recording(got.path, tmp_path / "lake", market_instrument(got.market))
    return got, manifest, depth, streamed


def test_a_recording_replays_the_book_and_trades_the_venue_streamed(tape, tmp_path):  # noqa: F811
    got, manifest, venue_depth, streamed = asyncio.run(record(tape, tmp_path, rows=40_000))
    assert got.snapshots == 1 and got.depth > 100 and got.trades > 100 and got.reconnects == 0
    assert [p.name for p in (tmp_path / "raw").iterdir()] == [got.path.name]  # no temporary file left
    lines = gzip.decompress(got.path.read_bytes()).decode().splitlines()
    assert len(lines) == got.lines
    # The line shapes of the real captures: compact JSON, stream messages in the combined-stream envelope,
    # snapshots bare.
    bodies = [x.split(" ", 1)[1] for x in lines]
    assert all(b.startswith(('{"stream":', '{"lastUpdateId":')) and " " not in b for b in bodies)
    msgs = [json.loads(b) for b in bodies]
    kinds = Counter(m["stream"] if "stream" in m else "snapshot" for m in msgs)
    assert kinds == {"btcusdt@depth@100ms": got.depth, "btcusdt@trade": got.trades, "snapshot": 1}
    report = manifest["report"]
    assert report["gaps"] == [] and report["rows"]["trades"] == got.trades
    recorded = load_tape(tmp_path / "lake", "binance-usdm", "BTCUSDT")
    assert recorded.instrument.tick_size == tape.instrument.tick_size
    assert len(venue_depth[0]) == len(venue_depth[1]) == TOP
    assert book_at_end(recorded) == venue_depth  # the book rebuilt from the lake is the venue's, level for level
    assert trade_rows(recorded) == trade_rows(tape, streamed)  # every trade streamed, none more, equal fields


def test_a_recording_stopped_mid_replay_is_complete_and_ingests(tape, tmp_path):  # noqa: F811
    got, manifest, _, _ = asyncio.run(record(tape, tmp_path, rows=len(tape), stop_after=1.5))
    assert got.snapshots == 1 and got.depth > 50 and 1.0 < got.seconds < 5.0
    assert [p.name for p in (tmp_path / "raw").iterdir()] == [got.path.name]
    assert len(gzip.decompress(got.path.read_bytes()).splitlines()) == got.lines  # a whole gzip stream
    assert manifest["report"]["gaps"] == [] and manifest["report"]["rows"]["book"] > 1000


def test_a_dropped_socket_reconnects_and_the_book_resyncs_from_the_new_snapshot(tape, tmp_path):  # noqa: F811
    def drop(srv):
        srv.faults.drop_ws = True
        # The new snapshot is answered late, so diffs of the new subscription reach the file first and
        # the ingest sees the break (a snapshot first would reset the book with no gap to report).
        srv.faults.slow_s = 0.05

    got, manifest, venue_depth, _ = asyncio.run(record(tape, tmp_path, rows=60_000, during=drop))
    assert got.reconnects >= 1 and got.snapshots == 2  # ccxt resubscribed and refetched; the tap saw it
    gaps = manifest["report"]["gaps"]
    assert len(gaps) == 1 and "sequence gap" in gaps[0]  # the diffs lost while the socket was down, reported
    assert book_at_end(load_tape(tmp_path / "lake", "binance-usdm", "BTCUSDT")) == venue_depth


@pytest.fixture
def venue(tape):  # noqa: F811
    """The emulator replaying the sample at 20x on a thread of its own (a CLI process or runner talks to it)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    srv = VenueServer(tape, CREDS, speed=20.0)
    srv.preroll()
    port = asyncio.run_coroutine_threadsafe(srv.start(), loop).result(10)
    replay = asyncio.run_coroutine_threadsafe(srv.run_replay(), loop)
    yield f"http://127.0.0.1:{port}"
    replay.cancel()
    asyncio.run_coroutine_threadsafe(srv.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_sigterm_finishes_the_recording_cleanly_and_it_is_ingested(venue, tmp_path):
    cmd = [sys.executable, "-m", "grinder", "record", "--symbol", "btcusdt", "--api-url", venue,
           "--out", str(tmp_path / "raw"), "--lake", str(tmp_path / "lake")]  # fmt: skip
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert p.stdout.readline().startswith("recording BTCUSDT from http://127.0.0.1:")
        time.sleep(2.0)  # markets, subscriptions, the snapshot, then a stretch of the replay
        names = [x.name for x in (tmp_path / "raw").iterdir()]
        assert len(names) == 1 and names[0].startswith(".btcusdt_") and names[0].endswith(".gz.partial")
        p.send_signal(signal.SIGTERM)
        stdout, stderr = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, stderr
    files = list((tmp_path / "raw").iterdir())
    assert len(files) == 1 and files[0].name.startswith("btcusdt_") and files[0].suffix == ".gz"
    assert f"raw capture: {files[0]}" in stdout and "gaps: 0" in stdout
    assert "local_clock_offset_ns = -" in stdout  # the emulator replays 2024: the backtest needs the offset
    manifest = json.loads(next((tmp_path / "lake" / "_ingest").glob("*.json")).read_text())
    assert manifest["report"]["rows"]["book"] > 1000 and manifest["report"]["rows"]["trades"] > 0
    assert manifest["sources"][0]["path"] == str(files[0])


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "args, culprit",
    [
        (["--seconds", "0"], "--seconds must be a positive number, got 0.0"),
        (["--symbol", "NOPEUSDT"], "lists no market NOPEUSDT"),
        (["--api-url", "http://127.0.0.1:{closed}"], "cannot reach the venue at http://127.0.0.1:{closed}"),
        (["--api-url", "ftp://x"], "--api-url 'ftp://x'"),
        (["--out", "{tmp}/a-file/raw"], "--out {tmp}/a-file/raw"),
        (["--lake", "{tmp}/a-file/lake"], "--lake {tmp}/a-file/lake"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(venue, tmp_path, args, culprit):
    (tmp_path / "a-file").write_text("not a folder")
    fill = {"closed": closed_port(), "tmp": tmp_path}
    base = {"--symbol": "BTCUSDT", "--api-url": venue, "--seconds": "5", "--out": str(tmp_path / "raw"),
            "--lake": str(tmp_path / "lake")}  # fmt: skip
    base[args[0]] = args[1].format(**fill)
    r = CliRunner().invoke(app, ["record", *(x for kv in base.items() for x in kv)])
    assert r.exit_code == 2, r.output
    assert culprit.format(**fill) in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "raw").exists() and not (tmp_path / "lake").exists()
