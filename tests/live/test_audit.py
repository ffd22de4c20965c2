"""Audit lines carry no secret, at any depth, inside strings or under credential-named keys."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import string
import tempfile
import threading
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from grinder.live.audit import REDACTED, AuditLog

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
    from grinder.live.journal import Journal

    j = Journal(Path("/dev/full"))  # every write fails with ENOSPC
    assert j.append("x" * 10_000) is False and j.error is not None and j.error.errno == 28
    assert j.append("y") is False  # nothing more is written
    j.close()
    assert "No space left on device" in capsys.readouterr().err


def test_a_journal_line_is_in_the_file_at_once_prewarm_writes_nothing_and_a_closed_one_refuses(tmp_path):
    from grinder.live.journal import Journal

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
    from grinder.live.journal import Journal

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


# The adapter's own event names: never masked, whatever the secrets are.
EVENTS = ["start", "create", "created", "create_error", "create_failed", "creates_refused", "cancel", "cancelled",
          "fill", "reconcile", "mismatch", "book_stale", "book_fresh", "breaker", "stop", "task_failed"]  # fmt: skip
# Token characters an API key or secret is made of (Binance: letters and digits); a delimiter ends a token.
KEYISH = st.text(alphabet=string.ascii_letters + string.digits + "-_.+~", min_size=1, max_size=70)
_TOKEN_SPLIT = re.compile(r"[\s&=?/:,;\"'()\[\]{}<>|#%]+")


def _strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def _signed(key: str, secret: str, query: str) -> tuple[str, str]:
    sig = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    return sig, f"https://fapi.binance.com/fapi/v1/order?{query}&signature={sig}"


@settings(max_examples=300, deadline=None)
@given(key=KEYISH, secret=KEYISH, event=st.sampled_from(EVENTS), qty=st.integers(1, 10**6))
@example(key="0", secret="https", event="create", qty=1)  # a secret inside a URL quoted once more
def test_redaction_keeps_event_names_and_never_lets_a_secret_token_or_a_signature_through(key, secret, event, qty):
    log = _redactor(key, secret)
    query = f"symbol=BTCUSDT&side=BUY&quantity={qty}&timestamp=1700000000000"
    sig, url = _signed(key, secret, query)
    fields = {
        "client_id": "grinder_static_grid:BTCUSDT:1A",
        "exact": key,
        "message": f"binanceusdm POST {url} 401 key {key} with {secret}.",
        "quoted": f"GET {quote(url, safe='')}",
        "headers": str({"X-MBX-APIKEY": key, "Content-Type": "application/x-www-form-urlencoded"}),
        "body": json.dumps({"signature": sig, "apiKey": key, "qty": qty}),
        "nested": {"list": [secret, f"{key}"], "Signature": sig},
        "bare_signature": f"sig {sig} end",
    }
    line = json.loads(log.render(1, event, **fields))
    assert line["event"] == event and line["ts_ns"] == 1  # event names stay intact
    for text in _strings({k: v for k, v in line.items() if k != "event"}):
        assert sig not in text  # a signature never appears, whatever the secret
        tokens = set(_TOKEN_SPLIT.split(text))
        assert key not in tokens and secret not in tokens  # nor a secret as a token
        if len(key) >= 12:
            assert key not in text  # a long one not even inside a longer word
        if len(secret) >= 12:
            assert secret not in text
    # Nothing else is eaten: the client id survives unless it has a secret as one of its tokens.
    if not {key, secret} & set(_TOKEN_SPLIT.split(fields["client_id"])):
        assert line["client_id"] == fields["client_id"]


@settings(max_examples=200, deadline=None)
# grinder.live.client.credentials strips secrets and refuses empty ones: none starts or ends with white space.
@given(secret=st.text(min_size=1, max_size=20).filter(lambda s: s == s.strip()), event=st.sampled_from(EVENTS))
def test_any_secret_whatever_its_characters_is_masked_where_it_stands_alone_and_events_stay(secret, event):
    log = _redactor(secret)
    line = json.loads(log.render(7, event, value=secret, spaced=f"got {secret} here", listed=[secret]))
    assert line["event"] == event
    assert line["value"] == REDACTED and line["listed"] == [REDACTED]
    assert f" {secret} " not in f" {line['spaced']} ".replace(REDACTED, " ")


def _redactor(*secrets: str) -> AuditLog:
    """An AuditLog used for `render` only (no file opened)."""
    with tempfile.TemporaryDirectory() as d:
        log = AuditLog(Path(d) / "a.jsonl", secrets=secrets, max_delay_s=None)
        log.close()  # render needs no file
    return log


def test_a_one_character_secret_keeps_words_and_a_signature_next_to_it_goes(tmp_path):
    log = AuditLog(tmp_path / "a.jsonl", secrets=("s", "t"))
    sig = "ab" * 32
    log.write(1, "start", msg=f"POST /fapi/v1/order?timestamp=1&signature={sig} status s", strategy="static_grid")
    log.close()
    line = json.loads((tmp_path / "a.jsonl").read_text())
    assert line["event"] == "start" and line["strategy"] == "static_grid"  # not "***tart", not "***tatic_grid"
    assert sig not in line["msg"] and line["msg"].endswith("signature=*** status ***")
