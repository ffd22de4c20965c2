"""The daily budget: charged before an action leaves, kept across restarts, new each UTC day."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grinder.errors import ConfigError, LiveError
from grinder.live.budget import BudgetLimits, DailyBudget, utc_day

DAY = 1_764_028_800_000_000_000  # 2025-11-25 00:00:00 UTC, ns
HOUR = 3_600 * 10**9


def test_actions_and_notional_are_capped(tmp_path):
    b = DailyBudget(tmp_path / "budget.jsonl", BudgetLimits(max_actions=3, max_notional=250.0))
    b.charge(DAY, 100.0)
    b.charge(DAY + 1, 100.0)
    assert "daily notional used up" in b.allows(DAY + 2, 100.0)
    assert b.allows(DAY + 2, 0.0) is None  # a cancel still fits
    b.charge(DAY + 2)
    assert "daily order actions used up (3/3)" in b.allows(DAY + 3)
    with pytest.raises(LiveError, match="budget: daily order actions used up"):
        b.charge(DAY + 3)


def test_a_restart_continues_the_day_and_a_new_day_starts_from_zero(tmp_path):
    limits = BudgetLimits(max_actions=2, max_notional=1e9)
    path = tmp_path / "budget.jsonl"
    first = DailyBudget(path, limits)
    first.charge(DAY + HOUR, 10.0)
    first.close()
    again = DailyBudget(path, limits)  # the process restarted
    assert (again.actions, again.notional) == (1, 10.0)
    again.charge(DAY + 2 * HOUR)
    assert again.allows(DAY + 3 * HOUR) is not None
    assert again.allows(DAY + 24 * HOUR) is None and again.day == utc_day(DAY + 24 * HOUR) == "2025-11-26"


@pytest.mark.parametrize(
    "content",
    ["\n", "{\n", '{"day": "2025-11-25"}\n', '{"day": "x", "actions": -1, "notional": 0}\n',
     '{"day": "yesterday", "actions": 1, "notional": 0}\n', '{"day": "2025-11-25", "actions": 1, "notional": NaN}\n'],
)  # fmt: skip
def test_a_damaged_budget_file_is_never_silently_reset(tmp_path, content):
    path = tmp_path / "budget.jsonl"
    path.write_text(content)
    with pytest.raises(LiveError, match="budget.jsonl: damaged budget file"):
        DailyBudget(path, BudgetLimits(1, 1.0))


def test_negative_limits_are_refused():
    for bad in ((-1, 1.0), (1, float("nan")), (1, -1.0)):
        with pytest.raises(ConfigError, match="budget limits must be >= 0"):
            BudgetLimits(*bad)


def test_a_clock_stepping_back_over_midnight_does_not_refill_the_budget(tmp_path):
    b = DailyBudget(tmp_path / "budget.jsonl", BudgetLimits(max_actions=2, max_notional=1e9))
    b.charge(DAY)
    b.charge(DAY + 1)
    assert b.allows(DAY - 10**9) is not None  # NTP stepped back 1 s into yesterday: still today's spend
    assert utc_day(DAY - 200) == "2025-11-24"  # 200 ns before midnight is the day before


def test_nan_or_negative_notional_is_refused_and_a_second_process_too(tmp_path):
    b = DailyBudget(tmp_path / "budget.jsonl", BudgetLimits(5, 100.0))
    for bad in (float("nan"), -5.0, float("inf")):
        with pytest.raises(ValueError, match="notional must be a finite amount"):
            b.charge(DAY, bad)
    assert b.allows(DAY, 100.0) is None and b.actions == 0
    with pytest.raises(LiveError, match="in use by another process"):
        DailyBudget(tmp_path / "budget.jsonl", BudgetLimits(5, 100.0))


def test_the_journal_keeps_the_last_complete_line_and_is_compacted_on_open(tmp_path):
    path = tmp_path / "budget.jsonl"
    b = DailyBudget(path, BudgetLimits(10, 1e9))
    for k in range(3):
        b.charge(DAY + k, 5.0)
    b.close()
    assert len(path.read_text().splitlines()) == 3  # one line per charge, on disk after close
    with open(path, "a") as f:
        f.write('{"day": "2025-11-25", "actio')  # a power loss cut the fourth charge's line short
    again = DailyBudget(path, BudgetLimits(10, 1e9))
    assert (again.actions, again.notional) == (3, 15.0)
    assert path.read_text().splitlines() == ['{"day": "2025-11-25", "actions": 3, "notional": 15.0}']
    again.close()
    assert DailyBudget(tmp_path / "new.jsonl", BudgetLimits(1, 1.0)).actions == 0  # no file: nothing spent


@given(st.integers(0, 10**12), st.floats(0, 1e15, allow_nan=False, allow_infinity=False))
def test_a_budget_line_is_what_json_writes(actions, notional):
    import json

    b = DailyBudget.__new__(DailyBudget)  # the line alone: no file, no lock
    b.day, b.actions, b.notional = "2025-11-25", actions, float(notional)
    assert b._line() == json.dumps({"day": b.day, "actions": actions, "notional": float(notional)})
    assert json.loads(b._line()) == {"day": "2025-11-25", "actions": actions, "notional": float(notional)}


def test_the_last_ns_of_a_day_is_in_it_and_the_next_starts_afresh(tmp_path):
    b = DailyBudget(tmp_path / "budget.jsonl", BudgetLimits(max_actions=1, max_notional=1e9))
    b.charge(DAY)
    assert b.allows(DAY + 24 * HOUR - 1) is not None and b.day == "2025-11-25"  # still today: used up
    assert b.allows(DAY + 24 * HOUR) is None and b.day == "2025-11-26"
    b.close()
    again = DailyBudget(tmp_path / "budget.jsonl", BudgetLimits(max_actions=1, max_notional=1e9))
    assert again.allows(DAY + 30 * HOUR) is None and again.allows(DAY + 48 * HOUR - 1) is None
    again.charge(DAY + 47 * HOUR)
    assert again.allows(DAY + 48 * HOUR - 1) is not None and again.allows(DAY + 48 * HOUR) is None


def test_remaining_asks_only_never_goes_below_zero_and_a_new_day_has_all_of_it(tmp_path):
    b = DailyBudget(tmp_path / "budget.jsonl", BudgetLimits(max_actions=2, max_notional=150.0))
    assert b.remaining(DAY) == (2, 150.0)  # nothing spent yet
    b.charge(DAY, 100.0)
    b.charge(DAY + 1)
    b.charge(DAY + 2, always=True)  # a cancel past the limit
    assert b.remaining(DAY + 3) == (0, 50.0)
    assert b.remaining(DAY + 24 * HOUR) == (2, 150.0) and b.day == utc_day(DAY)  # the next day: asked, not rolled
    b.close()
