"""`grinder venue serve`: a fixed port, the end of the data (stay up or loop), fault knobs on the CLI and over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import ccxt
import numpy as np
import pytest
from aiohttp import web

from grinder.data.tape import load_tape
from grinder.venue.server import VenueServer
from tests.conftest import REPO
from tests.venue.test_server import CREDS, SYMBOL, client

SAMPLE = REPO / "data" / "sample" / "lake"
ENV = {**os.environ, "GRINDER_VENUE_API_KEY": CREDS.api_key, "GRINDER_VENUE_SECRET": CREDS.secret}
# Three seconds of the sample (the tape starts at the book snapshot before them: 6.5 s of exchange time).
SHORT = ["--start", "2024-08-08T23:54:20", "--end", "2024-08-08T23:54:23"]


def serve(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "grinder", "venue", "serve", "--root", str(SAMPLE), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO)  # fmt: skip


def port_of(p: subprocess.Popen) -> int:
    line = p.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    assert m, line + p.stderr.read()
    return int(m.group(1))


def read_until(p: subprocess.Popen, pattern: str, timeout: float = 60.0) -> str:
    """Lines of `p`'s stdout up to the first matching `pattern` (regex); fails if it exits or times out first."""
    seen, t0 = [], time.monotonic()
    while time.monotonic() - t0 < timeout:
        line = p.stdout.readline()
        if not line:
            raise AssertionError(f"exited ({p.poll()}) before {pattern!r}: {''.join(seen)}{p.stderr.read()}")
        seen.append(line)
        if re.search(pattern, line):
            return line
    raise AssertionError(f"no {pattern!r} in time: {''.join(seen)}")


def stop(p: subprocess.Popen) -> int:
    p.send_signal(signal.SIGTERM)
    return p.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(port: int, path: str, body: dict | list | None = None, host: str = "127.0.0.1") -> tuple[int, dict | str]:
    """(status, JSON or text) of a GET, or of a POST of `body` as JSON."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{host}:{port}{path}", data=data, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


@pytest.fixture
def procs():
    running: list[subprocess.Popen] = []
    yield running
    for p in running:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_serve_answers_then_stops_cleanly_on_sigterm(procs):
    p = serve("--speed", "1")
    procs.append(p)
    port = port_of(p)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/fapi/v1/exchangeInfo", timeout=10) as r:
        assert json.load(r)["symbols"][0]["symbol"] == "BTCUSDT"
    assert stop(p) == 0
    assert "stopping" in p.stdout.read()


def test_serve_without_credentials_is_one_line_and_exit_2():
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRINDER_VENUE_")}
    r = subprocess.run([sys.executable, "-m", "grinder", "venue", "serve", "--root", str(SAMPLE)],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "GRINDER_VENUE_API_KEY" in r.stderr and "Traceback" not in r.stderr


def test_a_fixed_port_is_served_and_a_taken_one_is_one_line_and_exit_2(procs):
    port = free_port()
    p = serve("--port", str(port), *SHORT)
    procs.append(p)
    assert port_of(p) == port
    assert http(port, "/fapi/v1/time")[0] == 200
    # The same port again: taken.
    r = subprocess.run([sys.executable, "-m", "grinder", "venue", "serve", "--root", str(SAMPLE), "--port", str(port)],
                       capture_output=True, text=True, env=ENV, cwd=REPO, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert f"--port {port}" in r.stderr and "in use" in r.stderr
    assert stop(p) == 0  # the first one is unharmed


def test_at_the_end_of_the_data_it_stays_up_with_the_book_frozen_and_still_takes_orders(procs):
    p = serve("--speed", "10", *SHORT)
    procs.append(p)
    port = port_of(p)
    line = read_until(p, r"end of the data")
    assert "stays up" in line and "book frozen" in line

    async def after_the_end():
        ex = client(port)
        try:
            await ex.load_markets()
            first = await ex.fetch_order_book(SYMBOL)
            await asyncio.sleep(1.0)
            again = await ex.fetch_order_book(SYMBOL)
            bid = first["bids"][0][0]
            o = await ex.create_order(SYMBOL, "limit", "buy", 0.002, bid - 100,
                                      {"postOnly": True, "clientOrderId": "after_the_end"})  # fmt: skip
            listed = [x["clientOrderId"] for x in await ex.fetch_open_orders(SYMBOL)]
            cancelled = await ex.cancel_order(o["id"], SYMBOL)
            return first, again, o, listed, cancelled, await ex.fetch_open_orders(SYMBOL)
        finally:
            await ex.close()

    first, again, o, listed, cancelled, left = asyncio.run(after_the_end())
    assert (first["nonce"], first["bids"][:5], first["asks"][:5]) == (again["nonce"], again["bids"][:5],
                                                                       again["asks"][:5])  # fmt: skip
    assert o["status"] == "open" and listed == ["after_the_end"]
    assert cancelled["status"] == "canceled" and left == []
    assert p.poll() is None  # still up
    assert stop(p) == 0


def test_loop_replays_the_data_again_and_again(procs):
    p = serve("--speed", "10", "--loop", *SHORT)
    procs.append(p)
    port = port_of(p)
    read_until(p, r"replaying it again from its first book \(loop 1\)")
    read_until(p, r"\(loop 2\)")
    assert http(port, "/fapi/v1/time")[0] == 200
    assert stop(p) == 0


def test_a_looped_replay_is_one_unbroken_stream_with_time_going_on():
    """Across loops the client's book never sees a sequence gap, its times go forward, and it equals the venue's."""
    lo = int(np.datetime64("2024-08-08T23:54:20", "ns").astype(np.int64))
    tape = load_tape(SAMPLE, "binance-usdm", "BTCUSDT", lo, lo + 3_000_000_000)

    async def main():
        srv = VenueServer(tape, CREDS, speed=20.0)
        srv.preroll()
        port = await srv.start()
        ex = client(port)
        try:
            await ex.load_markets()
            await ex.watch_order_book(SYMBOL)
            replay = asyncio.create_task(srv.run_tape(loop=True))
            nonces, stamps = [], []
            while srv.loops < 2:
                ob = await asyncio.wait_for(ex.watch_order_book(SYMBOL), 10)  # a ChecksumError would fail here
                nonces.append(ob["nonce"])
                stamps.append(ob["timestamp"])
            replay.cancel()
            await asyncio.sleep(0.3)
            ob = ex.orderbooks[SYMBOL]
            bids, asks = srv.x.depth(10)
            assert [(round(p / 0.1), q) for p, q in ob["bids"][:10]] == [(p, pytest.approx(q)) for p, q in bids]
            assert [(round(p / 0.1), q) for p, q in ob["asks"][:10]] == [(p, pytest.approx(q)) for p, q in asks]
            return nonces, stamps, srv.now_ns
        finally:
            await ex.close()
            await srv.stop()

    nonces, stamps, now_ns = asyncio.run(main())
    assert nonces == sorted(nonces) and stamps == sorted(stamps)
    assert now_ns > int(tape.ts_exch[-1]) + int(tape.ts_exch[-1] - tape.ts_exch[4])  # time went on over two loops


def test_fault_knobs_from_the_command_line(procs):
    p = serve("--fault-http-status", "503", "--fault-http-count", "2", "--fault-retry-after-s", "7", *SHORT)
    procs.append(p)
    port = port_of(p)
    status, knobs = http(port, "/admin/faults")
    assert status == 200 and (knobs["http_status"], knobs["http_count"], knobs["retry_after_s"]) == (503, 2, 7)
    # Private REST answers 503 twice, then the venue's own answer (here: unsigned, refused by its auth).
    assert [http(port, "/fapi/v1/openOrders")[0] for _ in range(3)] == [503, 503, 401]
    assert http(port, "/fapi/v1/time")[0] == 200  # public REST is never faulted
    assert stop(p) == 0


def test_a_bad_fault_knob_on_the_command_line_is_one_line_and_exit_2():
    r = subprocess.run([sys.executable, "-m", "grinder", "venue", "serve", "--root", str(SAMPLE),
                        "--fault-http-status", "200"], capture_output=True, text=True, env=ENV, cwd=REPO,
                       timeout=60)  # fmt: skip
    assert r.returncode == 2 and "http_status" in r.stderr and "Traceback" not in r.stderr


def test_the_admin_endpoint_sets_knobs_all_or_none_and_names_unknown_ones(procs):
    p = serve(*SHORT)
    procs.append(p)
    port = port_of(p)
    status, body = http(port, "/admin/faults", {"http_status": 429, "http_count": 1, "retry_after_s": 3})
    assert status == 200 and body["http_status"] == 429
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/fapi/v1/openOrders", timeout=10)
    assert e.value.code == 429 and e.value.headers["Retry-After"] == "3"
    before = http(port, "/admin/faults")[1]
    status, body = http(port, "/admin/faults", {"slow_s": 2.0, "drop_websockets": True, "bogus": 1})
    assert status == 400 and "bogus" in body["error"] and "drop_websockets" in body["error"]
    assert http(port, "/admin/faults")[1] == before  # nothing of a refused body was applied
    for bad in ({"http_count": -1}, {"http_count": True}, {"slow_s": "1"}, {"seq_gap": 1}, [1, 2]):
        status, body = http(port, "/admin/faults", bad)
        assert status == 400, bad
    assert http(port, "/admin/faults")[1] == before
    assert stop(p) == 0


def non_loopback_address() -> str | None:
    """One of this machine's own IPv4 addresses that is not loopback (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the interface a route would use
        except OSError:
            return None
        ip = s.getsockname()[0]
    return None if ip.startswith("127.") or ip == "0.0.0.0" else ip


def from_outside(requests: list[tuple[str, dict | None]]) -> tuple[str, list, list, VenueServer]:
    """The emulator bound on a non-loopback address too: each (path, JSON body or None) asked from that
    address and then from loopback; (the address, the answers from outside, from loopback, the server).
    Skips where the machine has no address but loopback."""
    ip = non_loopback_address()
    if ip is None:
        pytest.skip("this machine has no address but loopback (the peer check itself: tests/venue/test_faults.py)")
    lo = int(np.datetime64("2024-08-08T23:54:20", "ns").astype(np.int64))
    srv = VenueServer(load_tape(SAMPLE, "binance-usdm", "BTCUSDT", lo, lo + 1_000_000_000), CREDS)

    async def main():
        port = await srv.start()
        outside = web.TCPSite(srv._runner, ip, 0)
        await outside.start()
        try:
            out_port = outside._server.sockets[0].getsockname()[1]
            loop = asyncio.get_running_loop()
            refused = [await loop.run_in_executor(None, http, out_port, path, body, ip) for path, body in requests]
            own = [await loop.run_in_executor(None, http, port, path) for path, _ in requests]
            return refused, own
        finally:
            await srv.stop()

    refused, own = asyncio.run(main())
    return ip, refused, own, srv


def test_the_admin_endpoint_refuses_a_peer_that_is_not_loopback():
    """The check is on the request's peer, not on the address the server listens on: bound on eth0 too, refused."""
    ip, (refused, peeked), (own, _), srv = from_outside(
        [("/admin/faults", {"http_status": 503, "http_count": 99}), ("/admin/faults", None)]
    )
    knobs = srv.faults.values()
    assert refused[0] == 403 and ip in refused[1]["error"] and peeked[0] == 403
    assert own[0] == 200 and knobs["http_status"] == 0 and knobs["http_count"] == 0  # nothing was set


def test_a_looped_emulator_keeps_a_client_trading_across_the_loop():
    """An order of the client's rests through a loop and can still be cancelled; the venue never errors."""
    lo = int(np.datetime64("2024-08-08T23:54:20", "ns").astype(np.int64))
    tape = load_tape(SAMPLE, "binance-usdm", "BTCUSDT", lo, lo + 2_000_000_000)

    async def main():
        srv = VenueServer(tape, CREDS, speed=20.0)
        srv.preroll()
        port = await srv.start()
        ex = client(port)
        try:
            await ex.load_markets()
            bb, _ = srv.x.best()
            o = await ex.create_order(SYMBOL, "limit", "buy", 0.002, (bb - 5_000) * 0.1,
                                      {"postOnly": True, "clientOrderId": "through_the_loop"})  # fmt: skip
            replay = asyncio.create_task(srv.run_tape(loop=True))
            while srv.loops < 2:
                await asyncio.sleep(0.05)
            replay.cancel()
            try:
                cancelled = await ex.cancel_order(o["id"], SYMBOL)
            except ccxt.OrderNotFound:
                cancelled = None
            return cancelled
        finally:
            await ex.close()
            await srv.stop()

    cancelled = asyncio.run(main())
    assert cancelled is not None and cancelled["status"] == "canceled"
