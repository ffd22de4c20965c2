"""The daily order budget: order actions and notional per UTC day, kept on disk across restarts.

Every create or cancel the adapter sends is charged here *before* it leaves. The file is a journal
(`live.journal`): one line per charge with the day's totals, in the OS when `charge` returns and
fsynced on a background thread right after. After a crash or kill the budget counts an action that
may not have reached the venue, never the other way round; a power loss can cost the last few
milliseconds of charges (a line cut short is ignored). The journal is compacted to its last line
on open. A new UTC day starts from zero. A damaged budget file stops the adapter with an error
naming the file; it is never silently reset.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path

from grinder.errors import ConfigError, LiveError
from grinder.io.atomic import write_atomic
from grinder.live.journal import Journal
from grinder.live.lock import ProcessLock


def utc_day(now_ns: int) -> str:
    """The UTC calendar day (YYYY-MM-DD) of a time in ns since the epoch."""
    return dt.datetime.fromtimestamp(now_ns // 10**9, dt.UTC).strftime("%Y-%m-%d")


def _day_end_ns(day: str) -> int:
    """The first ns (since the epoch) of the UTC day after `day` (YYYY-MM-DD)."""
    end = dt.datetime.combine(dt.date.fromisoformat(day) + dt.timedelta(days=1), dt.time(), dt.UTC)
    return int(end.timestamp()) * 10**9


@dataclass(frozen=True)
class BudgetLimits:
    """Per UTC day: most order actions (creates + cancels) and most notional created (quote currency)."""

    max_actions: int
    max_notional: float

    def __post_init__(self) -> None:
        if self.max_actions < 0 or not (math.isfinite(self.max_notional) and self.max_notional >= 0):
            raise ConfigError(
                f"budget limits must be >= 0, got {self.max_actions} actions, {self.max_notional} notional"
            )


class DailyBudget:
    """What today's budget has left; `allows` asks, `charge` spends and records it on disk."""

    def __init__(self, path: Path, limits: BudgetLimits, max_delay_s: float | None = 1.0):
        """Open the budget in `path`; `max_delay_s` is its journal's (None: fsynced only on `sync_soon`)."""
        self.path, self.limits = Path(path), limits
        self._lock = ProcessLock(self.path)  # two processes charging one file would lose spend
        self.day, self.actions, self.notional = "", 0, 0.0
        self._day_end_ns = 0  # first ns of the UTC day after `day` (0: no day yet); charges before it stay in it
        if self.path.exists():
            # Complete lines end with a newline; a last piece without one was cut short by a power loss.
            lines = self.path.read_text().split("\n")[:-1]
            if lines:
                try:
                    data = json.loads(lines[-1])
                    self.day, self.actions, self.notional = (
                        str(data["day"]),
                        int(data["actions"]),
                        float(data["notional"]),
                    )
                    if self.actions < 0 or not (math.isfinite(self.notional) and self.notional >= 0):
                        raise ValueError("negative or non-finite spend")
                    dt.date.fromisoformat(self.day)  # ValueError unless YYYY-MM-DD
                except (ValueError, KeyError, TypeError) as e:
                    self._lock.release()
                    raise LiveError(
                        f"{self.path}: damaged budget file ({e}); refusing to start with an unknown spend"
                    ) from None
            write_atomic(self.path, self._line() + "\n" if lines else "", durable=True, mode=0o600)  # compacted
            if self.day:
                self._day_end_ns = _day_end_ns(self.day)
        self._journal = Journal(self.path, max_delay_s)

    def _line(self) -> str:
        # What json.dumps writes for these three (a day is YYYY-MM-DD, a finite float prints as its
        # repr), formatted directly: it runs before every order leaves (decision 012).
        return f'{{"day": "{self.day}", "actions": {self.actions}, "notional": {self.notional!r}}}'

    def _roll(self, now_ns: int) -> None:
        # Only forward: a clock stepped back over midnight keeps today's spend. The day's end is kept,
        # so a charge within the day does not turn its time into a date.
        if now_ns < self._day_end_ns:
            return
        day = utc_day(now_ns)
        if day > self.day:
            self.day, self.actions, self.notional = day, 0, 0.0
            self._day_end_ns = _day_end_ns(day)

    def allows(self, now_ns: int, notional: float = 0.0) -> str | None:
        """None if one more action with this notional fits today's budget, else the reason it does not."""
        if not (math.isfinite(notional) and notional >= 0):
            raise ValueError(f"notional must be a finite amount >= 0, got {notional}")
        self._roll(now_ns)
        if self.actions + 1 > self.limits.max_actions:
            return f"daily order actions used up ({self.actions}/{self.limits.max_actions})"
        if self.notional + notional > self.limits.max_notional:
            return f"daily notional used up ({self.notional:.2f} + {notional:.2f} > {self.limits.max_notional:.2f})"
        return None

    def remaining(self, now_ns: int) -> tuple[int, float]:
        """Order actions and notional left today at `now_ns`, never below 0; asks only (nothing rolls or is written).

        Cancels are charged even past the limit: the actions used can exceed it, and 0 is left then.
        """
        if now_ns >= self._day_end_ns and utc_day(now_ns) > self.day:  # a new day: the whole budget
            return self.limits.max_actions, self.limits.max_notional
        return max(0, self.limits.max_actions - self.actions), max(0.0, self.limits.max_notional - self.notional)

    @property
    def error(self) -> OSError | None:
        """Why the spend stopped being recorded (disk full, I/O error), or None."""
        return self._journal.error

    def charge(self, now_ns: int, notional: float = 0.0, always: bool = False) -> None:
        """Spend one action (and its notional) and record it; refused if it does not fit, unless `always`.

        Cancels are charged `always`: they only lower risk and are never held back, even once
        today's actions are used up or the journal can no longer be written.
        """
        reason = self.allows(now_ns, notional)
        if reason is not None and not always:
            raise LiveError(f"budget: {reason}")
        self.actions, self.notional = self.actions + 1, self.notional + float(notional)  # a plain float's repr
        self._journal.append(self._line())

    def prewarm(self) -> None:
        """Warm the write path for the next charge without recording one (see Journal.prewarm)."""
        self._journal.prewarm()

    def sync_soon(self) -> None:
        """Have the charges so far fsynced in the background, now."""
        self._journal.sync_soon()

    def close(self) -> None:
        """Flush the journal to disk and release the file for another process."""
        self._journal.close()
        self._lock.release()
