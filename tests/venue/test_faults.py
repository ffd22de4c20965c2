"""The emulator's fault knobs: set all or none, every culprit named; the admin endpoint's peer check."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grinder.venue.faults import Faults, loopback_peer

KNOBS = Faults.knobs()
values = st.one_of(st.none(), st.booleans(), st.integers(-5, 700), st.floats(allow_nan=True), st.text(max_size=3))


def test_every_knob_has_a_type_a_default_and_a_help_text_and_requests_is_not_one():
    assert "requests" not in KNOBS and {"http_status", "http_count", "seq_gap", "drop_ws", "slow_s"} <= set(KNOBS)
    f = Faults()
    for name, (typ, default, text) in KNOBS.items():
        assert type(getattr(f, name)) is typ and getattr(f, name) == default and text


@given(st.dictionaries(st.sampled_from(sorted(KNOBS)), values), st.sets(st.text(min_size=1, max_size=8)))
def test_a_set_is_all_or_none_and_names_what_it_refused(good_names, unknown):
    unknown = {u for u in unknown if u not in KNOBS}
    f = Faults()
    before = f.values()
    body = {**good_names, **{u: 1 for u in unknown}}
    try:
        f.set(body)
    except ValueError as e:
        assert f.values() == before  # nothing applied
        msg = str(e)
        if unknown:
            assert all(u in msg for u in unknown)
        else:
            assert any(f"knob {name}" in msg for name in good_names)
        return
    assert not unknown
    for name, v in body.items():
        typ = KNOBS[name][0]
        assert type(getattr(f, name)) is typ and getattr(f, name) == v and (typ is bool or v >= 0)
        assert not (typ is not bool and isinstance(v, bool))  # True is never taken as a number


def test_a_status_knob_takes_only_an_error_status():
    f = Faults()
    with pytest.raises(ValueError, match="http_status"):
        f.set({"http_status": 200})
    f.set({"http_status": 503, "http_count": 3, "slow_s": 1})
    assert (f.http_status, f.http_count, f.slow_s) == (503, 3, 1.0) and type(f.slow_s) is float


@pytest.mark.parametrize(
    "peer, ok",
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("192.0.2.2", False), ("10.0.0.1", False),
     ("0.0.0.0", False), ("::", False), ("::ffff:127.0.0.1", False), ("fd00::2", False), ("localhost", False),
     ("", False), (None, False)],
)  # fmt: skip
def test_the_admin_endpoint_is_for_loopback_peers_only(peer, ok):
    assert loopback_peer(peer) is ok
