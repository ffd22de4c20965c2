"""Client order ids: names with underscores round-trip, foreign ids are not ours, ids never repeat on the account."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.errors import ConfigError, LiveError
from grinder.live.client_ids import (
    EPOCH_LEN,
    MAX_LEN,
    MIN_SEQ_CHARS,
    PREFIX,
    ClientOrderId,
    IdAllocator,
    check_names,
    decode_seq,
    encode_seq,
    is_instance,
    is_ours,
    new_epoch,
    parse,
)

CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/"
NAME = st.text(alphabet=CHARS, min_size=1, max_size=9)
EPOCH = st.text(alphabet=CHARS[:62], min_size=EPOCH_LEN, max_size=EPOCH_LEN)
VENUE_ID = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")  # what Binance takes as a client order id


@given(NAME, NAME, st.integers(0, 62**6 - 1), EPOCH)
def test_every_id_parses_back_to_its_parts(strategy, symbol, seq, epoch):
    cid = ClientOrderId(strategy, symbol, seq, epoch)
    text = str(cid)
    assert len(text) <= MAX_LEN and text.startswith(PREFIX)
    assert parse(text) == cid


def test_underscores_in_names_round_trip():
    cid = ClientOrderId("adaptive_grid", "ETH_USDT", 12345, "x7Gq2")
    assert str(cid) == "g_adaptive_grid:ETH_USDT:x7Gq2:3D7"
    assert parse(str(cid)) == cid
    check_names("adaptive_grid", "ETH_USDT")  # and there is room for 62**5 orders, as before epochs


def test_ids_of_the_earlier_format_are_still_ours_with_no_epoch():
    old = "grinder_static_grid:BTCUSDT:3D7"
    assert parse(old) == ClientOrderId("static_grid", "BTCUSDT", 12345, None)
    assert is_ours(old, "static_grid", "BTCUSDT") and not is_ours(old, "static_grid", "ETHUSDT")


def test_an_id_is_this_instances_only_with_its_epoch_strategy_and_symbol():
    cid = str(ClientOrderId("static_grid", "BTCUSDT", 7, "x7Gq2"))
    assert is_instance(cid, "static_grid", "BTCUSDT", "x7Gq2")
    assert is_ours(cid, "static_grid", "BTCUSDT")  # reconciliation's "ours": any instance
    for strategy, symbol, epoch in [("static_grid", "BTCUSDT", "x7Gq3"), ("adaptive_grid", "BTCUSDT", "x7Gq2"),
                                    ("static_grid", "ETHUSDT", "x7Gq2")]:  # fmt: skip
        assert not is_instance(cid, strategy, symbol, epoch)
    assert not is_instance("grinder_static_grid:BTCUSDT:7", "static_grid", "BTCUSDT", "x7Gq2")
    assert not is_instance(None, "static_grid", "BTCUSDT", "x7Gq2")


@settings(deadline=None, max_examples=60)  # every block reserved is fsynced
@given(st.data())
def test_two_allocators_with_different_epochs_never_collide_and_every_id_fits_the_venue(data):
    # Any names check_names takes, up to the longest that leave the sequence its room.
    strategy = data.draw(st.text(alphabet=CHARS, min_size=1, max_size=14), label="strategy")
    symbol = data.draw(st.text(alphabet=CHARS, min_size=1, max_size=21 - len(strategy)), label="symbol")
    epochs = data.draw(st.lists(EPOCH, min_size=2, max_size=2, unique=True), label="epochs")
    n = data.draw(st.integers(1, 300), label="orders")
    block = data.draw(st.integers(10, 100), label="block")
    with tempfile.TemporaryDirectory() as d:  # two state folders: their file locks cannot see each other
        made = []
        for i, epoch in enumerate(epochs):
            a = IdAllocator(Path(d) / f"state{i}" / "ids.json", strategy, symbol, block=block, new=True, epoch=epoch)
            made.append([str(a.next()) for _ in range(n)])
            a.close()
    first, second = made
    assert not set(first) & set(second) and len(set(first)) == len(set(second)) == n
    for cid in first + second:
        assert VENUE_ID.fullmatch(cid), cid
        assert is_ours(cid, strategy, symbol)
    # The longest sequence the names leave room for fits too.
    longest = str(ClientOrderId(strategy, symbol, 62**MIN_SEQ_CHARS - 1, epochs[0]))
    assert VENUE_ID.fullmatch(longest) and parse(longest).seq == 62**MIN_SEQ_CHARS - 1


def test_new_epochs_are_well_formed_and_differ():
    drawn = {new_epoch() for _ in range(1000)}
    assert len(drawn) == 1000 and all(len(e) == EPOCH_LEN and encode_seq(decode_seq(e)).rjust(EPOCH_LEN, "0") == e
                                      for e in drawn)  # fmt: skip


@pytest.mark.parametrize(
    "foreign",
    ["", "web_123", "grinder", "grinder_", "grinder_a:b", "grinder_a:b:c:d", "grinder_:BTCUSDT:1",
     "grinder_grid::1", "grinder_grid:BTCUSDT:", "grinder_grid:BTCUSDT:1!", "x" + "grinder_grid:BTCUSDT:1",
     "grinder_" + "a" * 30 + ":B:1", "grinder_grid:BTCUSDT:01", "grinder_grid\n:BTCUSDT:1",
     "grinder_grid:BTCUSDT:1\n", None, 17, "g_", "g_grid:BTCUSDT:1", "g_grid:BTCUSDT:x7Gq:1",
     "g_grid:BTCUSDT:x7Gq2A:1", "g_grid:BTCUSDT:x7G_2:1", "g_grid:BTCUSDT:x7Gq2:", "g_grid:BTCUSDT:x7Gq2:01",
     "g_grid:BTCUSDT:x7Gq2:1:2", "g_:BTCUSDT:x7Gq2:1", "g_grid::x7Gq2:1", "g_" + "a" * 26 + ":B:x7Gq2:1",
     "G_grid:BTCUSDT:x7Gq2:1", "g_grid:BTCUSDT:x7Gq2:1\n"],
)  # fmt: skip
def test_ids_that_are_not_ours_parse_to_none(foreign):
    assert parse(foreign) is None


@pytest.mark.parametrize(
    ("strategy", "symbol", "message"),
    [("grid:v2", "BTCUSDT", "strategy name 'grid:v2'"), ("grid", "BTC USDT", "symbol name 'BTC USDT'"),
     ("", "BTCUSDT", "strategy name ''"), ("a_very_long_strategy_name", "BTCUSDT", "use a shorter strategy name"),
     ("adaptive_grid", "ETHUSDT_X", "leaves 4 characters of the venue's 36"),
     ("grid\n", "BTCUSDT", "cannot go into a client order id")],
)  # fmt: skip
def test_names_that_cannot_be_carried_are_refused_up_front(strategy, symbol, message):
    with pytest.raises(ConfigError, match=message):
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
    with pytest.raises(LiveError, match="no client-id reservation"):
        IdAllocator(path, "static_grid", "BTCUSDT")  # a lost state folder must not restart at 0
    a = IdAllocator(path, "static_grid", "BTCUSDT", new=True)
    a.next()
    with pytest.raises(LiveError, match="in use by another process"):
        IdAllocator(path, "static_grid", "BTCUSDT")
    a.close()
    with pytest.raises(LiveError, match="already exists"):
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
     ('{"strategy": "other", "symbol": "BTCUSDT", "reserved_until": 5}', "belongs to other/BTCUSDT"),
     ('{"strategy": "static_grid", "symbol": "BTCUSDT", "reserved_until": 5, "epochs": ["x7G"]}', "damaged"),
     ('{"strategy": "static_grid", "symbol": "BTCUSDT", "reserved_until": 5, "epochs": "x7Gq2"}', "damaged")],
)  # fmt: skip
def test_a_damaged_or_foreign_reservation_stops_the_adapter(tmp_path, content, message):
    path = tmp_path / "ids.json"
    path.write_text(content)
    with pytest.raises(LiveError, match=message):
        IdAllocator(path, "static_grid", "BTCUSDT")
    with pytest.raises(LiveError, match=message):  # refusing released the lock: the same error again
        IdAllocator(path, "static_grid", "BTCUSDT")


def test_reserving_ahead_keeps_every_id_handed_out_under_the_durable_reservation(tmp_path, monkeypatch):
    path = tmp_path / "ids.json"
    a = IdAllocator(path, "static_grid", "BTCUSDT", block=4, new=True)
    assert a.reserve_ahead() and json.loads(path.read_text())["reserved_until"] == 4  # at start: a whole block
    assert not a.reserve_ahead()  # more than half a block left: no write
    writes = []
    monkeypatch.setattr("grinder.live.client_ids.write_atomic", lambda *args, **kw: writes.append(json.loads(args[1])))
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


def test_each_start_takes_a_new_epoch_and_knows_the_folders_earlier_ones_as_dead(tmp_path):
    path = tmp_path / "ids.json"
    a = IdAllocator(path, "static_grid", "BTCUSDT", block=3, new=True, epoch="AAAAA")
    assert a.past_epochs == () and a.next() == ClientOrderId("static_grid", "BTCUSDT", 0, "AAAAA")
    assert json.loads(path.read_text())["epochs"] == ["AAAAA"]  # on disk before its first id went out
    a.close()
    b = IdAllocator(path, "static_grid", "BTCUSDT", block=3)  # a restart: a fresh epoch, the sequence goes on
    assert b.past_epochs == ("AAAAA",) and b.epoch != "AAAAA"
    cid = b.next()
    assert (
        cid.epoch == b.epoch and cid.seq == 3 and b.is_mine(str(cid)) and not b.is_mine("g_static_grid:BTCUSDT:AAAAA:0")
    )
    b.close()
    c = IdAllocator(path, "static_grid", "BTCUSDT", block=3, epoch="AAAAA")  # never its predecessor's
    assert c.epoch not in ("AAAAA", b.epoch) and c.past_epochs == ("AAAAA", b.epoch)
    c.close()


def test_the_folder_remembers_a_bounded_number_of_earlier_epochs(tmp_path):
    path = tmp_path / "ids.json"
    IdAllocator(path, "static_grid", "BTCUSDT", new=True).close()
    epochs = []
    for _ in range(20):
        a = IdAllocator(path, "static_grid", "BTCUSDT")
        a.next()
        epochs.append(a.epoch)
        a.close()
    assert json.loads(path.read_text())["epochs"] == epochs[-16:]


def test_a_reservation_of_the_earlier_format_is_taken_and_gains_epochs(tmp_path):
    path = tmp_path / "ids.json"
    path.write_text('{"strategy": "static_grid", "symbol": "BTCUSDT", "reserved_until": 2000}')
    a = IdAllocator(path, "static_grid", "BTCUSDT")
    assert a.past_epochs == () and a.next().seq == 2000
    assert json.loads(path.read_text())["epochs"] == [a.epoch]
    a.close()


def test_a_used_up_sequence_is_refused_not_sent_too_long(tmp_path):
    path = tmp_path / "ids.json"
    path.write_text(json.dumps({"strategy": "static_grid", "symbol": "BTCUSDT", "reserved_until": 62**8 - 1}))
    a = IdAllocator(path, "static_grid", "BTCUSDT")  # 8 characters of room: 62**8 ids
    assert len(str(a.next())) == MAX_LEN
    with pytest.raises(LiveError, match="client-id sequence is used up"):
        a.next()
    a.close()
