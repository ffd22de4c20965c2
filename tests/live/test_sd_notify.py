"""systemd's notify protocol (live.sd_notify): READY, STATUS, WATCHDOG and STOPPING on a real AF_UNIX datagram socket.

Each datagram is stamped by the kernel when it is sent (SO_TIMESTAMPNS), so when a message left is known whatever
the test's reader was doing; the feeding rule itself is timed on a clock the test steps (`keep_fed`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import struct
import threading
import time
import uuid

import pytest

from grinder.live.sd_notify import Notifier, keep_fed, notify_address, stall_after_s, watchdog_s
from tests.live.test_adapter import _until, emulator_session
from tests.live.test_live_cli import config, events, procs, serve, start, wait_for  # noqa: F401 - procs is a fixture
from tests.venue.test_server import CREDS, tape  # noqa: F401 - tape is a fixture

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux's value (asm-generic), absent from Python's module


class Listener:
    """A bound AF_UNIX datagram socket collecting (kernel send time ns, {key: value}) on a thread of its own."""

    def __init__(self, address: str | bytes):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.settimeout(0.1)
        self.got: list[tuple[int, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data, anc, _, _ = self.sock.recvmsg(65536, 1024)
            except TimeoutError:
                continue
            except OSError:
                return
            ts = next(struct.unpack("qq", d[:16]) for lvl, typ, d in anc if typ == SO_TIMESTAMPNS)
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            self.got.append((ts[0] * 10**9 + ts[1], fields))

    def times(self, key: str, value: str | None = None) -> list[int]:
        """Kernel send times of the messages holding `key` (with `value`, if given)."""
        return [t for t, f in list(self.got) if key in f and (value is None or f[key] == value)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def abstract_listener():
    name = f"@grinder-test-{uuid.uuid4().hex}"
    lst = Listener(b"\0" + name[1:].encode())
    yield name, lst
    lst.close()


def test_the_socket_forms_and_the_watchdog_variables_are_read_as_systemd_defines_them():
    assert notify_address(None) is None and notify_address("") is None
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@abc") == b"\0abc"
    assert notify_address("@") is None and notify_address("vsock:2:1234") is None and notify_address("rel/x") is None
    me = os.getpid()
    assert watchdog_s({"WATCHDOG_USEC": "60000000"}) == 60.0
    assert watchdog_s({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(me)}) == 60.0
    assert watchdog_s({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(me + 1)}) is None  # another process's
    for bad in ("", "0", "-5", "1.5", "abc"):
        assert watchdog_s({"WATCHDOG_USEC": bad}) is None
    assert watchdog_s({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "x"}) is None
    # Without a socket there is no watchdog to feed, whatever WATCHDOG_USEC says.
    assert Notifier({"WATCHDOG_USEC": "1000000"}).watchdog_s is None


def test_without_notify_socket_nothing_is_sent_and_nothing_fails():
    n = Notifier({})
    assert not n.enabled
    assert n.ready("x") is False and n.notify("WATCHDOG=1") is False and n.stopping("x") is False
    assert (n.sent, n.failed, n.error) == (0, 0, None)
    n.close()


def test_a_socket_that_is_gone_costs_a_counted_failure_never_an_exception(tmp_path):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert n.ready("x") is False and n.status("y") is False
    assert n.failed == 2 and isinstance(n.error, FileNotFoundError)
    n.close()


def test_messages_go_to_a_path_and_to_an_abstract_name_one_datagram_each(tmp_path, abstract_listener):
    path = tmp_path / "notify"
    on_path = Listener(str(path))
    try:
        name, on_name = abstract_listener
        for n in (Notifier({"NOTIFY_SOCKET": str(path)}), Notifier({"NOTIFY_SOCKET": name})):
            assert n.ready("up\nSTOPPING=1")  # a newline in a status text must not become a line of its own
            assert n.stopping("going")
            n.close()
        wait_for(lambda: len(on_path.got) == 2 and len(on_name.got) == 2, 10)
        for lst in (on_path, on_name):
            assert [f for _, f in lst.got] == [{"READY": "1", "STATUS": "up STOPPING=1"},
                                               {"STOPPING": "1", "STATUS": "going"}]  # fmt: skip
    finally:
        on_path.close()


def test_the_watchdog_is_fed_only_while_the_loop_progresses_on_a_clock_the_test_steps():
    """keep_fed on a stepped clock: WATCHDOG=1 every interval while the beat is fresh, STATUS only once it stalls."""
    sent: list[tuple[float, tuple[str, ...]]] = []
    clock = {"now": 0.0}
    beat = {"ns": 0}

    class Recorder(Notifier):
        def notify(self, *lines):
            sent.append((clock["now"], lines))
            return True

    async def sleep(s):
        clock["now"] += s
        if clock["now"] <= 10.0:  # the loop beats until t = 10 s, then stalls
            beat["ns"] = int(clock["now"] * 1e9)
        if clock["now"] >= 30.0:
            raise asyncio.CancelledError

    n = Recorder({})
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(keep_fed(n, lambda: beat["ns"], 5.0, 1.0, lambda: "fine", lambda: int(clock["now"] * 1e9), sleep))
    fed = [t for t, lines in sent if "WATCHDOG=1" in lines]
    stalled = [t for t, lines in sent if "WATCHDOG=1" not in lines]
    assert fed == [float(t) for t in range(16)]  # every second, up to 5 s past the last beat
    assert stalled == [float(t) for t in range(16, 30)]
    assert all(lines[0].startswith("STATUS=decision loop stalled for") for t, lines in sent if t in stalled)
    # The bound: half the watchdog, never below three steps (at most the 1 s beat of a long step) plus a second.
    assert stall_after_s(60.0, 100) == 30.0
    assert stall_after_s(2.0, 100) == pytest.approx(1.3)
    assert stall_after_s(2.0, 600_000) == 4.0


async def _adapter_session(tape, tmp_path, monkeypatch, socket_name: str, during):  # noqa: F811
    """An adapter against a fresh emulator under NOTIFY_SOCKET and WATCHDOG_USEC (4 s); `during` while it runs."""
    monkeypatch.setenv("NOTIFY_SOCKET", socket_name)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    adapter, _ = await emulator_session(tape, tmp_path, lambda adapter, srv, task: during(adapter, task), speed=5.0)
    return adapter


def test_a_stale_book_feeds_the_watchdog_and_a_stalled_decision_loop_does_not(tape, tmp_path, monkeypatch,  # noqa: F811
                                                                                abstract_listener):  # fmt: skip
    """Hostile: the decision loop blocks inside a decision; WATCHDOG=1 stops, STATUS goes on, STOPPING still comes."""
    name, lst = abstract_listener
    marks: dict[str, int] = {}

    async def during(adapter, task):
        await _until(lambda: lst.times("READY") or task.done(), 60, "READY")
        assert not task.done()
        await _until(lambda: adapter.decisions > 3 and len(lst.times("WATCHDOG")) >= 3, 60, "three WATCHDOG")
        # A book that legitimately blocks decisions: the loop ticks without deciding, and it is still fed.
        adapter._book_fresh = lambda: False
        marks["stale"], decided = time.time_ns(), adapter.decisions
        await asyncio.sleep(4.0)
        assert adapter.decisions == decided
        marks["fresh"] = time.time_ns()
        # The stall: the next decision never returns (an await that hangs), the event loop itself runs on.
        hang = asyncio.Event()

        async def stuck():
            marks.setdefault("stalled", time.time_ns())
            await hang.wait()

        adapter.decide_once = stuck
        del adapter._book_fresh  # fresh again: the next tick decides, and hangs
        await _until(lambda: "stalled" in marks, 60, "the stall")
        await asyncio.sleep(7.0)  # the stall bound (2 s) and then some
        marks["stop"] = time.time_ns()

    adapter = asyncio.run(_adapter_session(tape, tmp_path, monkeypatch, name, during))
    wait_for(lambda: lst.times("STOPPING"), 10)
    ready, fed, stopping = lst.times("READY"), lst.times("WATCHDOG"), lst.times("STOPPING")
    assert len(ready) == 1 and ready[0] < fed[0], "READY comes before any WATCHDOG"
    assert sum(marks["stale"] + 1.5e9 < t < marks["fresh"] for t in fed) >= 2, "fed through the stale book"
    after_stall = [t for t in fed if t > marks["stalled"]]
    assert all(t <= marks["stalled"] + 3.5e9 for t in after_stall), "fed past the stall bound"
    assert not [t for t in fed if marks["stalled"] + 3.5e9 < t], "the watchdog was fed during the stall"
    stalled = [t for t, f in lst.got if t > marks["stalled"] + 3.5e9 and f.get("STATUS", "").startswith(
        "decision loop stalled")]  # fmt: skip
    assert len(stalled) >= 2, "STATUS still flows while the watchdog starves"
    assert stopping[0] > marks["stop"] and adapter.stop_outcome.clean


def test_grinder_live_says_ready_then_feeds_the_watchdog_then_says_stopping_on_sigterm(tmp_path, procs):  # noqa: F811
    """`grinder live` under NOTIFY_SOCKET (a path) and WATCHDOG_USEC, against `grinder venue serve`, then SIGTERM."""
    lst = Listener(str(tmp_path / "notify"))
    try:
        port = serve(procs, "--loop", "--port", "0")
        cfg, state = config(tmp_path, port, "step_ms = 100\nreconcile_s = 2\n"
                                            "params = { levels = 2, interval = 0.5, half_spread = 0.1, "
                                            "order_qty = 0.002, max_position = 0.01 }\n")  # fmt: skip
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "2000000"}
        live = start("live", "--config", str(cfg), env=env)
        procs.append(live)
        wait_for(lambda: lst.times("READY") or live.poll() is not None, 90)
        assert live.poll() is None, live.stderr.read()
        wait_for(lambda: len(lst.times("WATCHDOG")) >= 8 or live.poll() is not None, 60)
        live.send_signal(signal.SIGTERM)
        assert live.wait(60) == 0, live.stderr.read()
        wait_for(lambda: lst.times("STOPPING"), 10)
    finally:
        lst.close()
    trail = events(state)
    at = {e["event"]: e["ts_ns"] for e in reversed(trail)}  # each event's first time
    ready, fed, stopping = lst.times("READY"), lst.times("WATCHDOG"), lst.times("STOPPING")
    # READY once, after the start's reconciliation and before any WATCHDOG or order.
    assert len(ready) == 1 and at["reconcile"] < ready[0] < fed[0]
    assert ready[0] < at["created"]
    # WATCHDOG every quarter of WatchdogSec (0.5 s): timed by the kernel's stamps, bounds generous for a busy machine.
    gaps = [(b - a) / 1e9 for a, b in zip(fed, fed[1:], strict=False) if b < stopping[0]]
    assert 0.45 <= statistics.median(gaps) <= 1.5, gaps
    # STOPPING once, before the stop's cancels and the last audit line: the process was still at work.
    last_stop = [e["ts_ns"] for e in trail if e["event"] == "stop"][-1]
    assert len(stopping) == 1 and ready[0] < stopping[0] < at["stop_cancels"] <= last_stop
    assert not [t for t in fed if t > stopping[0]], "no WATCHDOG after STOPPING"
    final = [f["STATUS"] for t, f in lst.got if t > stopping[0] and "STATUS" in f]
    assert final and final[-1].startswith("stopped:")
