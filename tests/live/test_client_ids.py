"""Client order ids: names with underscores round-trip, foreign ids are not ours, ids never repeat."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grinder.data.errors import DataError
from live.client_ids import MAX_LEN, PREFIX, ClientOrderId, IdAllocator, check_names, decode_seq, encode_seq, parse

NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/", min_size=1, max_size=9)


@given(NAME, NAME, st.integers(0, 62**6 - 1))
def test_every_id_parses_back_to_its_parts(strategy, symbol, seq):
    cid = ClientOrderId(strategy, symbol, seq)
    text = str(cid)
    assert len(text) <= MAX_LEN and text.startswith(PREFIX)
    assert parse(text) == cid


def test_underscores_in_names_round_trip():
    cid = ClientOrderId("adaptive_grid", "ETH_USDT", 12345)
    assert str(cid) == "grinder_adaptive_grid:ETH_USDT:3D7"
    assert parse(str(cid)) == cid
    check_names("adaptive_grid", "ETH_USDT")  # and there is room for 62**5 orders


@pytest.mark.parametrize(
    "foreign",
    ["", "web_123", "grinder", "grinder_", "grinder_a:b", "grinder_a:b:c:d", "grinder_:BTCUSDT:1",
     "grinder_grid::1", "grinder_grid:BTCUSDT:", "grinder_grid:BTCUSDT:1!", "x" + "grinder_grid:BTCUSDT:1",
     "grinder_" + "a" * 30 + ":B:1", "grinder_grid:BTCUSDT:01", "grinder_grid\n:BTCUSDT:1",
     "grinder_grid:BTCUSDT:1\n", None, 17],
)  # fmt: skip
def test_ids_that_are_not_ours_parse_to_none(foreign):
    assert parse(foreign) is None


@pytest.mark.parametrize(
    ("strategy", "symbol", "message"),
    [("grid:v2", "BTCUSDT", "strategy name 'grid:v2'"), ("grid", "BTC USDT", "symbol name 'BTC USDT'"),
     ("", "BTCUSDT", "strategy name ''"), ("a_very_long_strategy_name", "BTCUSDT", "use a shorter strategy name"),
     ("grid\n", "BTCUSDT", "cannot go into a client order id")],
)  # fmt: skip
def test_names_that_cannot_be_carried_are_refused_up_front(strategy, symbol, message):
    with pytest.raises(DataError, match=message):
        check_names(strategy, symbol)


def test_base62_round_trip_and_errors():
    assert [encode_seq(n) for n in (0, 61, 62)] == ["0", "z", "10"]
    assert decode_seq(encode_seq(62**7 + 5)) == 62**7 + 5
    for bad in ("", "a!"):
        with pytest.raises(ValueError):
            decode_seq(bad)


def test_allocator_never_reuses_an_id_across_restarts(tmp_path):
    path = tmp_path / "ids.json"
    a = IdAllocator(path, "static_grid", "BTCUSDT", block=3, new=True)
    first = [a.next().seq for _ in range(4)]  # crosses a block boundary
    assert first == [0, 1, 2, 3] and json.loads(path.read_text())["reserved_until"] == 6
    a.close()
    b = IdAllocator(path, "static_grid", "BTCUSDT", block=3)  # a restart: resumes after the reservation
    assert b.next().seq == 6


def test_peek_is_the_id_next_hands_out_and_takes_nothing(tmp_path):
    a = IdAllocator(tmp_path / "ids.json", "static_grid", "BTCUSDT", block=2, new=True)
    for _ in range(5):  # across block boundaries, before and after their reservations
        peeked, again = a.peek(), a.peek()
        assert peeked == again == a.next()
    assert a.next().seq == 5
    a.close()


def test_a_missing_or_shared_reservation_is_refused(tmp_path):
    path = tmp_path / "ids.json"
    with pytest.raises(DataError, match="no client-id reservation"):
        IdAllocator(path, "static_grid", "BTCUSDT")  # a lost state folder must not restart at 0
    a = IdAllocator(path, "static_grid", "BTCUSDT", new=True)
    a.next()
    with pytest.raises(DataError, match="in use by another process"):
        IdAllocator(path, "static_grid", "BTCUSDT")
    a.close()
    with pytest.raises(DataError, match="already exists"):
        IdAllocator(path, "static_grid", "BTCUSDT", new=True)


def test_after_kill_9_the_next_process_resumes_beyond_every_id_handed_out(tmp_path):
    path = tmp_path / "ids.json"
    code = (
        "import os, sys\n"
        "from live.client_ids import IdAllocator\n"
        f"a = IdAllocator({str(path)!r}, 'static_grid', 'BTCUSDT', block=10, new=True)\n"
        "print(max(a.next().seq for _ in range(25)), flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.getcwd())
    assert r.returncode == -9
    last = int(r.stdout.split()[0])
    assert IdAllocator(path, "static_grid", "BTCUSDT").next().seq > last


@pytest.mark.parametrize(
    ("content", "message"),
    [("{", "damaged client-id reservation"), ('{"strategy": "static_grid", "symbol": "BTCUSDT"}', "damaged"),
     ('{"strategy": "other", "symbol": "BTCUSDT", "reserved_until": 5}', "belongs to other/BTCUSDT")],
)  # fmt: skip
def test_a_damaged_or_foreign_reservation_stops_the_adapter(tmp_path, content, message):
    path = tmp_path / "ids.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        IdAllocator(path, "static_grid", "BTCUSDT")
    with pytest.raises(DataError, match=message):  # refusing released the lock: the same error again
        IdAllocator(path, "static_grid", "BTCUSDT")


def test_reserving_ahead_keeps_every_id_handed_out_under_the_durable_reservation(tmp_path, monkeypatch):
    path = tmp_path / "ids.json"
    a = IdAllocator(path, "static_grid", "BTCUSDT", block=4, new=True)
    assert a.reserve_ahead() and json.loads(path.read_text())["reserved_until"] == 4  # at start: a whole block
    assert not a.reserve_ahead()  # more than half a block left: no write
    writes = []
    monkeypatch.setattr("live.client_ids.write_atomic", lambda *args, **kw: writes.append(json.loads(args[1])))
    reserved, handed = 4, []
    for _ in range(5):  # a decision's creates, then the adapter's reserve_ahead once its requests are out
        before = len(writes)
        handed += [a.next().seq, a.next().seq]
        assert len(writes) == before  # next() never had to reserve: reserve_ahead kept the headroom
        assert max(handed) < reserved  # a kill -9 now cannot hand out an id twice
        if a.reserve_ahead():
            assert writes[-1]["reserved_until"] == reserved + 4
            reserved = writes[-1]["reserved_until"]
    assert handed == list(range(10)) and reserved == 12 and len(writes) == 2
