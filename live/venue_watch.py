"""The adapter's watch on a venue that stays down: silent for `venue_down_exit_s`, the session ends (exit 3).

Silent means no market data (a book update) and no answer to a probe: once the book has been quiet a
while, the watch asks the venue's clock (`GET /fapi/v1/time`, public, unsigned: no budget, no
order, in paper mode too), so a venue that is up but has nothing to stream (an emulator at the end
of its data, a quiet market) is not taken for one that is down. When the venue stays silent that
long the watch writes `venue_down` to the audit trail and raises `VenueDown`: the adapter runs its
stop path (its orders cancelled if the venue lets it) and the process exits with `EXIT_VENUE_DOWN`
and one line saying so; under systemd the unit's restart policy takes over (deploy/).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import ccxt

from grinder.errors import VenueError

EXIT_VENUE_DOWN = 3  # the exit code of a session the venue ended (2 is an operator's error at start)
PROBE_AFTER_S = 5.0  # the book quiet this long: ask the venue whether it is there


class VenueDown(VenueError):
    """The venue was silent (no market data, no answer) longer than `venue_down_exit_s`."""

    exit_code = EXIT_VENUE_DOWN


async def watch_venue(ex, audit, down_after_s: float, venue: str, last_data: Callable[[], float],
                      monotonic: Callable[[], float], clock_ns: Callable[[], int]) -> None:  # fmt: skip
    """Return never; raise `VenueDown` once the venue has been silent for `down_after_s` seconds.

    `last_data()` is when market data last arrived, on `monotonic` (seconds; 0: none since the book
    went stale); `venue` names the venue in the audit line and the error.
    """
    alive = monotonic()  # the start answered: the venue was there
    poll = min(1.0, down_after_s / 10)
    probe_after = min(PROBE_AFTER_S, down_after_s / 4)
    last_error = ""
    while True:
        await asyncio.sleep(poll)
        alive = max(alive, last_data())
        if monotonic() - alive >= probe_after:
            try:
                # Bounded (a venue that takes the connection and never answers is silent too), yet
                # never so short that a busy machine's slow answer reads as none.
                await asyncio.wait_for(ex.fetch_time(), max(1.0, probe_after))
                alive = monotonic()
            except (ccxt.BaseError, TimeoutError, OSError) as e:
                last_error = type(e).__name__
        silent = monotonic() - alive
        if silent >= down_after_s:
            audit.write(clock_ns(), "venue_down", silent_s=round(silent, 3), venue_down_exit_s=down_after_s,
                        probe_error=last_error)  # fmt: skip
            raise VenueDown(f"venue {venue} down for {silent:.0f} s (no market data, no answer; venue_down_exit_s = "
                            f"{down_after_s:g}): stopped")  # fmt: skip
