"""Audit lines carry no secret, at any depth, inside strings or under credential-named keys."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from live.audit import REDACTED, AuditLog

KEY, SECRET = "k3yABCDEF0123456789", "s3cretZYXW9876543210"


def test_audit_lines_never_contain_secrets(tmp_path):
    log = AuditLog(tmp_path / "audit" / "audit.jsonl", secrets=(KEY, SECRET))
    log.write(1, "create", client_id="grinder_grid:BTCUSDT:1", request={"apiKey": "anything", "qty": 0.1})
    log.write(2, "error", message=f"401 for https://x/fapi/v1/order?signature=abc&key={KEY}", headers=[SECRET])
    log.write(3, "listen", listenKey="pqr", nested={"auth": {"api_secret": "z"}})
    log.write(4, "fail", err=RuntimeError(f"GET /x?signature=d00dfeed&listenKey=LK9 key {KEY}"), raw=SECRET.encode())
    log.close()
    text = (tmp_path / "audit" / "audit.jsonl").read_text()
    assert KEY not in text and SECRET not in text and "pqr" not in text
    assert "abc" not in text and "d00dfeed" not in text and "LK9" not in text  # inside URLs and exceptions
    lines = [json.loads(line) for line in text.splitlines()]
    assert [x["event"] for x in lines] == ["create", "error", "listen", "fail"]
    assert lines[0]["request"] == {"apiKey": REDACTED, "qty": 0.1} and lines[0]["client_id"].startswith("grinder_")
    assert lines[2]["nested"]["auth"]["api_secret"] == REDACTED and lines[1]["headers"] == [REDACTED]


def test_a_secret_that_contains_another_is_removed_whole(tmp_path):
    log = AuditLog(tmp_path / "a.jsonl", secrets=("abc", "abcdef123"))
    log.write(1, "x", msg="token abcdef123 here")
    log.close()
    assert json.loads((tmp_path / "a.jsonl").read_text())["msg"] == "token *** here"


def test_a_journal_on_a_full_disk_stops_quietly_and_keeps_the_error(capsys):
    from live.journal import Journal

    j = Journal(Path("/dev/full"))  # every write fails with ENOSPC
    assert j.append("x" * 10_000) is False and j.error is not None and j.error.errno == 28
    assert j.append("y") is False  # nothing more is written
    j.close()
    assert "No space left on device" in capsys.readouterr().err


def test_a_journal_line_is_in_the_file_at_once_prewarm_writes_nothing_and_a_closed_one_refuses(tmp_path):
    from live.journal import Journal

    path = tmp_path / "j" / "x.jsonl"
    j = Journal(path)
    assert j.append('{"a":1}') and path.read_text() == '{"a":1}\n'  # in the OS before append returns
    j.prewarm()
    assert path.read_text() == '{"a":1}\n'
    j.append('{"b":2}')
    j.close()
    j.close()  # twice is harmless
    assert path.read_text().splitlines() == ['{"a":1}', '{"b":2}']
    with pytest.raises(ValueError, match="closed"):
        j.append("late")
    j.prewarm()  # a no-op once closed
    assert Journal(path).append('{"c":3}') and path.read_text().endswith('{"b":2}\n{"c":3}\n')  # appends on reopen


def test_a_driven_journal_fsyncs_only_when_told_and_a_timed_one_on_its_own(tmp_path, monkeypatch):
    from live.journal import Journal

    watched: dict[int, threading.Event] = {}  # fd -> set when that descriptor is fsynced
    real = os.fsync

    def fsync(fd):  # other threads of the process (other journals) fsync too: only ours count
        real(fd)
        if fd in watched:
            watched[fd].set()

    monkeypatch.setattr(os, "fsync", fsync)
    driven = Journal(tmp_path / "driven.jsonl", max_delay_s=None)  # the adapter's: no timer
    synced = watched[driven._fd] = threading.Event()
    driven.append('{"a":1}')
    assert not synced.wait(0.3)  # no thread wakes on its own ...
    driven.sync_soon()
    assert synced.wait(10)  # ... until told
    watched.clear()
    driven.close()
    timed = Journal(tmp_path / "timed.jsonl", max_delay_s=0.05)
    synced = watched[timed._fd] = threading.Event()
    timed.append('{"b":1}')
    assert synced.wait(10)  # fsynced without being asked
    timed.close()
