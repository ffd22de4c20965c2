"""When to try an exchange request again, and when to stop sending orders at all.

`Backoff` gives the wait before each retry: exponential with full jitter (a random wait between 0
and base * 2**attempt, capped), never shorter than a Retry-After the venue sent. `CircuitBreaker`
opens after `threshold` failures in a row: no new orders for `cooldown_s`, then one trial request
(half open) closes it on success or opens it again on failure. Asking (`allows`) and letting a
request through (`acquire`) are apart: only a request that is sent takes the trial. Both classes
take the time and the random generator from the caller, so they are tested without sleeping.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Retry waits in seconds; `max_attempts` tries in all (the first one included)."""

    base_s: float = 0.2
    cap_s: float = 10.0
    max_attempts: int = 4

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s or self.max_attempts < 1:
            raise ValueError(f"bad backoff {self}")

    def delay(self, attempt: int, rng: random.Random, retry_after_s: float | None = None) -> float:
        """Seconds to wait after failed try number `attempt` (1 = the first try) before the next one."""
        jitter = rng.uniform(0.0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))
        return max(jitter, retry_after_s or 0.0)

    def gives_up(self, attempt: int) -> bool:
        """True once `attempt` tries have been made and no more are allowed."""
        return attempt >= self.max_attempts


CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass
class CircuitBreaker:
    """Stops new orders after `threshold` consecutive failures, for `cooldown_s` seconds at a time."""

    threshold: int = 5
    cooldown_s: float = 30.0
    state: str = CLOSED
    failures: int = 0
    opened_at_s: float = 0.0
    trial_out: bool = False  # half open: the one trial request has been let through ...
    trial_at_s: float = 0.0  # ... at this time; a trial never reported back expires after cooldown_s

    def __post_init__(self) -> None:
        if self.threshold < 1 or self.cooldown_s < 0:
            raise ValueError(f"bad circuit breaker {self}")

    def allows(self, now_s: float) -> bool:
        """Whether a request would be let through now; asks only (the half-open trial is not taken)."""
        if self.state == OPEN:
            return now_s - self.opened_at_s >= self.cooldown_s
        if self.state == HALF_OPEN:
            return not self.trial_out or now_s - self.trial_at_s >= self.cooldown_s
        return True

    def acquire(self, now_s: float) -> bool:
        """Let one request through if `allows`; half open (after the cool-down) it is the single trial.

        Only a request that is really sent may acquire: anything else (a warm-up, a check) asks
        `allows`, or it would use up the trial and keep the breaker from ever closing.
        """
        if not self.allows(now_s):
            return False
        if self.state != CLOSED:
            self.state, self.trial_out, self.trial_at_s = HALF_OPEN, True, now_s
        return True

    def success(self) -> None:
        """A request went through: close; ignored while open (a late reply to a request sent before it opened)."""
        if self.state == OPEN:
            return
        self.state, self.failures, self.trial_out = CLOSED, 0, False

    def failure(self, now_s: float) -> None:
        """A request failed (a retryable error or a timeout): count it; open at the threshold or on a failed trial."""
        self.failures += 1
        if self.state == HALF_OPEN or self.failures >= self.threshold:
            self.state, self.opened_at_s, self.trial_out = OPEN, now_s, False
