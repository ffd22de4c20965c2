"""The emulator's order log: every request that changes the venue, with the fencing token it carried, and its check.

Leader election (`grinder.live.leader`, decision 041) sends the leader's fencing token with every
venue-changing request in the `X-Grinder-Fence` header. Binance ignores the header; the emulator
records it, in the order requests arrive, with what it did with each (accepted, or the error),
so tests can count what must never happen:

- a *stale* token: an action whose token is lower than one already seen (a former leader acting
  after a newer one);
- a *double execution*: a client order id taken twice, or a create accepted while an order placed
  under another token still rests (two leaders' orders live at once).

Served at `GET /admin/orders` (loopback peers only), with the check's counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

FENCE_HEADER = "X-Grinder-Fence"
# (method, path) of every request that changes the venue: orders, cancels, cancel-all, the countdown.
CHANGING = frozenset({("POST", "/fapi/v1/order"), ("DELETE", "/fapi/v1/order"), ("DELETE", "/fapi/v1/allOpenOrders"),
                      ("POST", "/fapi/v1/countdownCancelAll"), ("POST", "/fapi/v1/batchOrders"),
                      ("DELETE", "/fapi/v1/batchOrders")})  # fmt: skip


def token_of(header: str | None) -> int | None:
    """The fencing token a request carried (None: none, or not a number)."""
    try:
        return int(header) if header is not None else None
    except ValueError:
        return None


@dataclass
class OrderLog:
    """Venue-changing requests in arrival order (`entries`), and the token each resting order was created under."""

    entries: list[dict] = field(default_factory=list)
    created_under: dict[str, int | None] = field(default_factory=dict)  # client order id -> token of its create

    def record(self, method: str, path: str, client_id: str | None, token: int | None, status: int, result: str,
               open_ids: list[str] | None = None) -> dict:  # fmt: skip
        """One request (`status` the HTTP status answered, `result` what the venue did); `open_ids`, for an
        accepted create, the client ids resting besides it (their tokens are what `overlap` holds)."""
        entry = {"seq": len(self.entries), "t_ns": time.time_ns(), "method": method, "path": path,
                 "client_id": client_id, "token": token, "status": status, "result": result}  # fmt: skip
        if open_ids is not None and client_id is not None:
            # Orders of instances without a token (a person's, a tool's) are no leader's: not counted.
            entry["overlap"] = sorted({t for c in open_ids if c != client_id
                                       and (t := self.created_under.get(c)) is not None and t != token})  # fmt: skip
            self.created_under[client_id] = token
        self.entries.append(entry)
        return entry


@dataclass(frozen=True)
class FencingCheck:
    """What an order log shows: actions, stale-token actions, double executions, actions without a token."""

    actions: int
    stale: tuple[dict, ...]
    double: tuple[dict, ...]
    unfenced: int

    def as_dict(self) -> dict:
        """Counts, as /admin/orders serves them."""
        return {"actions": self.actions, "stale": len(self.stale), "double": len(self.double),
                "unfenced": self.unfenced}  # fmt: skip


def check_fencing(entries: list[dict]) -> FencingCheck:
    """Stale tokens (lower than one seen before, in arrival order) and double executions in an order log."""
    stale, double, taken = [], [], set()
    highest: int | None = None
    unfenced = 0
    for e in sorted(entries, key=lambda x: x["seq"]):
        t = e.get("token")
        if t is None:
            unfenced += 1
        elif highest is not None and t < highest:
            stale.append(e)
        else:
            highest = t
        if e["method"] == "POST" and e["path"] == "/fapi/v1/order" and e["result"] == "accepted":
            if e["client_id"] in taken or e.get("overlap"):
                double.append(e)
            taken.add(e["client_id"])
    return FencingCheck(len(entries), tuple(stale), tuple(double), unfenced)
