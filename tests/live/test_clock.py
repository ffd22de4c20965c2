"""The stepped decision clock: time set by a driver, one decision per tick it releases."""

from __future__ import annotations

import asyncio

import pytest

from grinder.live.clock import SteppedClock


def test_the_time_is_the_drivers_in_ns_and_in_seconds():
    c = SteppedClock(1_723_161_256_322_000_000)
    c.now_ns += 100_000_000
    assert c.time_ns() == 1_723_161_256_422_000_000 and c.monotonic() == pytest.approx(1_723_161_256.422, abs=1e-6)


def test_a_tick_is_taken_only_once_released_and_release_returns_once_its_decision_is_done():
    async def main():
        c = SteppedClock(0)
        seen = []

        async def adapter():
            for _ in range(3):
                await c.next_tick()
                seen.append(("decide", c.now_ns))
                await asyncio.sleep(0)  # the decision's requests: other tasks run meanwhile
                seen.append(("done", c.now_ns))
                await c.tick_done()

        task = asyncio.create_task(adapter())
        for _ in range(5):
            await asyncio.sleep(0)
        assert seen == [] and c.taken == 0  # nothing happens before a release
        for k in (1, 2, 3):
            c.now_ns = k
            await c.release()
            assert seen[-2:] == [("decide", k), ("done", k)] and c.done == k
        await task
        assert len(seen) == 6

    asyncio.run(main())
