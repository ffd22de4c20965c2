"""Backoff honours Retry-After; the circuit breaker opens, waits, tries once and recovers."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grinder.live.retry import CLOSED, HALF_OPEN, OPEN, Backoff, CircuitBreaker


def test_backoff_grows_with_jitter_and_honours_retry_after():
    b = Backoff(base_s=0.5, cap_s=4.0, max_attempts=3)
    rng = random.Random(7)
    waits = [b.delay(a, rng) for a in (1, 2, 3, 4, 5)]
    assert all(0 <= w <= min(4.0, 0.5 * 2 ** (a - 1)) for a, w in zip((1, 2, 3, 4, 5), waits, strict=True))
    late = [b.delay(5, rng) for _ in range(200)]  # jittered over [0, cap]: spread out, not a constant
    assert 1.5 < sum(late) / len(late) < 2.5 and max(late) - min(late) > 3.0
    assert b.delay(1, rng, retry_after_s=7.0) == 7.0
    assert not b.gives_up(2) and b.gives_up(3)
    with pytest.raises(ValueError):
        Backoff(base_s=0)


def test_breaker_opens_after_repeated_failures_then_recovers_through_one_trial():
    cb = CircuitBreaker(threshold=3, cooldown_s=10.0)
    for t in (0.0, 1.0):
        assert cb.acquire(t)
        cb.failure(t)
    assert cb.state == CLOSED
    cb.failure(2.0)
    assert cb.state == OPEN and not cb.acquire(5.0) and not cb.acquire(11.9)
    assert cb.acquire(12.0) and cb.state == HALF_OPEN
    assert not cb.acquire(12.1) and not cb.allows(12.1)  # one trial at a time
    cb.failure(12.5)  # the trial failed: open again, a new cool-down
    assert cb.state == OPEN and not cb.acquire(20.0)
    assert cb.acquire(22.5)
    cb.success()
    assert cb.state == CLOSED and cb.acquire(22.6) and cb.failures == 0


def test_a_late_success_does_not_close_an_open_breaker_and_a_lost_trial_expires():
    cb = CircuitBreaker(threshold=1, cooldown_s=10.0)
    cb.failure(0.0)
    cb.success()  # the reply to a request sent before it opened
    assert cb.state == OPEN and not cb.acquire(5.0)
    assert cb.acquire(10.0) and not cb.acquire(15.0)  # the trial went out and was never reported
    assert cb.acquire(20.0)  # after another cool-down a new trial goes


@given(st.lists(st.sampled_from(["ask", "acquire", "ok", "fail", "wait"]), max_size=60))
def test_asking_never_changes_the_breaker_and_only_an_acquired_trial_closes_it(steps):
    """Any number of `allows` between the real requests changes nothing: the state machine is the acquires'."""
    asked, plain = CircuitBreaker(threshold=2, cooldown_s=10.0), CircuitBreaker(threshold=2, cooldown_s=10.0)
    t = 0.0
    for step in steps:
        if step == "ask":  # the pre-tick warm-up, a check before taking a client id: on one breaker only
            asked.allows(t)
            asked.allows(t)
        elif step == "acquire":
            assert asked.acquire(t) == plain.acquire(t)
        elif step == "ok":
            asked.success(), plain.success()
        elif step == "fail":
            asked.failure(t), plain.failure(t)
        else:
            t += 6.0
        assert asked == plain


def test_after_the_cool_down_warm_ups_leave_the_trial_to_the_first_real_order():
    cb = CircuitBreaker(threshold=1, cooldown_s=30.0)
    cb.failure(0.0)
    # The faults cleared; every decision tick warms the path up (asks) for a minute: 600 ticks at 10/s.
    for k in range(600):
        assert cb.allows(30.0 + k * 0.1) is True and cb.state == OPEN
    assert cb.acquire(90.0) and cb.state == HALF_OPEN  # the first real create is the trial ...
    cb.success()
    assert cb.state == CLOSED and cb.acquire(90.1) and cb.acquire(90.1)  # ... and then orders flow
