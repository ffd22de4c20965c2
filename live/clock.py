"""A decision clock a driver steps by hand: the adapter decides when, and at the time, the driver says.

The live adapter's own clock is the wall clock: it decides every `step_ms` of local time and stamps
everything with `time.time_ns`. `SteppedClock` replaces both for a driver that holds the venue in
its hand too (`live.parity`'s lock-step against the emulator's stepped replay): the time is the
exchange time the driver sets, and a decision happens only when the driver releases a tick, one at
a time, so where a decision falls never depends on how busy the machine is.
"""

from __future__ import annotations

import asyncio


class SteppedClock:
    """Exchange time set by a driver (ns since the epoch) and decision ticks it releases one at a time.

    The adapter awaits `next_tick()` before each decision and calls `tick_done()` after it; the
    driver calls `release()` and awaits the decision's end. `monotonic()` is the same time in
    seconds: a book's age is measured in the driver's time, as the backtest measures it.
    """

    def __init__(self, now_ns: int):
        self.now_ns = int(now_ns)
        self.released = 0  # ticks released by the driver
        self.taken = 0  # ticks the adapter has started
        self.done = 0  # ticks whose decision has finished
        self._changed = asyncio.Condition()

    def time_ns(self) -> int:
        """The driver's time, ns since the epoch (the adapter's `clock_ns`)."""
        return self.now_ns

    def monotonic(self) -> float:
        """The driver's time in seconds (what the adapter measures a book's age on)."""
        return self.now_ns / 1e9

    async def next_tick(self) -> None:
        """Adapter side: wait until the driver releases the next tick."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.released > self.taken)
            self.taken += 1

    async def tick_done(self) -> None:
        """Adapter side: the decision of the tick taken last has finished (its requests answered)."""
        async with self._changed:
            self.done = self.taken
            self._changed.notify_all()

    async def release(self) -> None:
        """Driver side: let the adapter take one decision; returns when it has finished."""
        async with self._changed:
            self.released += 1
            target = self.released
            self._changed.notify_all()
            await self._changed.wait_for(lambda: self.done >= target)
