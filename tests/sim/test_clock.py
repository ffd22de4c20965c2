"""The decision clock's runs of steps (engine.decision_segments): one grid, coverage gaps left out."""

from __future__ import annotations

import numpy as np

from grinder.sim.engine import decision_segments, segment_steps

S = 10**9  # ns per second
STEP = S // 10
STALE = 60 * S


def segments(local_s, start_s=0.0):
    local = (np.asarray(local_s, np.float64) * S).astype(np.int64)
    out = decision_segments(local, local, int(start_s * S), STEP, STALE)
    return out.reshape(-1, 2).tolist(), int(segment_steps(out))


def test_one_span_is_one_run_over_the_whole_calendar():
    runs, n = segments([1.0, 2.0, 61.0, 90.0])  # every gap within the stale limit
    assert runs == [[1, 892]] and n == 892  # (90 - 1) s / 100 ms + 2: the clock as it always was


def test_a_gap_keeps_its_first_stale_step_and_resumes_at_the_next_event():
    runs, n = segments([1.0, 2.0, 10_002.05, 10_010.0])
    # t0 = 1 s. Steps after 2 s + 60 s: the first (62.1 s, k = 611) cancels the quotes; the next
    # taken step is the first at or after 10,002.05 s (k = 100,011: 10,002.1 s).
    assert runs == [[1, 611], [100_011, 100_092]]
    assert n == 611 + 82
    k0, k1 = runs[1]
    assert 1 * S + k0 * STEP >= 10_002.05 * S > 1 * S + (k0 - 1) * STEP


def test_a_start_long_before_the_data_skips_to_it():
    runs, _ = segments([5_000.0, 5_001.0], start_s=1.0)
    assert runs == [[1, 601], [49_990, 50_002]]  # 1 s + 49,990 * 0.1 s = 5,000 s


def test_gaps_too_short_to_skip_a_step_are_kept_whole():
    runs, _ = segments([0.0, 60.15])  # stale only at 60.1 s, and the event comes at 60.15 s
    assert runs == [[1, 603]]


def _reference(local, t0):
    """decision_segments's runs, event by event in Python."""
    runs, a = [1], t0
    for b in local:
        if b - a > STALE:
            ks, kb = (a + STALE - t0) // STEP + 1, -((t0 - b) // STEP)
            if kb > ks + 1:
                runs += [ks, kb]
        a = max(a, b)
    return runs + [max(1, (max(a, t0) - t0) // STEP + 2)]


def test_the_strided_scan_finds_every_gap_an_event_by_event_one_does():
    rng = np.random.default_rng(7)
    for trial in range(40):
        n = int(rng.integers(1, 3_000))
        # Mostly dense events, some gaps of 1 to 200 s, placed anywhere in the 64-event strides.
        d = rng.integers(0, 50 * 10**6, n)
        gaps = rng.random(n) < 0.01 * (trial % 4)
        d[gaps] = rng.integers(1, 200, gaps.sum()) * S + rng.integers(0, S, gaps.sum())
        local = np.cumsum(d).astype(np.int64) + 10**12
        start = int(local[0] - rng.integers(0, 300) * S) if trial % 3 == 0 else 0
        t0 = start if start > 0 else int(local[0])
        got = decision_segments(local, local, start, STEP, STALE)
        assert got.tolist() == _reference(local, t0), trial
