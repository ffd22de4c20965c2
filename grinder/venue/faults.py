"""The venue emulator's fault knobs: the one place they are declared, set from tests, the CLI and the admin endpoint.

Kept apart from `grinder.venue.server` (aiohttp, the matching core) so the command line can list the
knobs as `--fault-NAME` options without importing the server. docs/venue-protocol.md says what ccxt
does with each.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field, fields

_TYPES = {"int": int, "float": float, "bool": bool}


def _knob(default, help: str):  # noqa: A002 - the name the CLI shows it under
    return field(default=default, metadata={"help": help})


@dataclass
class Faults:
    """Knobs a test or an operator turns while the server runs; `requests` is a record, not a knob."""

    http_status: int = _knob(0, "answer private REST with this status (429, 418, 5xx) while http_count lasts")
    http_count: int = _knob(0, "... for this many private requests (then back to normal)")
    retry_after_s: int = _knob(0, "Retry-After header (seconds) sent with the fault status")
    slow_s: float = _knob(0.0, "delay (seconds) before answering any REST request")
    depth_slow_s: float = _knob(0.0, "further delay (seconds) before a depth snapshot (a resync that takes a while)")
    lose_create_replies: int = _knob(0, "accept this many creates but drop the connection instead of answering")
    seq_gap: bool = _knob(False, "skip one depth update (its u) in the stream, once")
    drop_ws: bool = _knob(False, "close every public and user WebSocket once (clients must reconnect)")
    requests: list = field(default_factory=list)  # (method, path) of every REST request, in order

    @classmethod
    def knobs(cls) -> dict[str, tuple[type, object, str]]:
        """Every knob: name -> (type, default, help)."""
        return {f.name: (_TYPES[f.type], f.default, f.metadata["help"]) for f in fields(cls) if "help" in f.metadata}

    def values(self) -> dict[str, int | float | bool]:
        """The knobs' current values by name."""
        return {name: getattr(self, name) for name in self.knobs()}

    def set(self, values: dict) -> None:
        """Set knobs by name, all or none; ValueError naming the culprit (an unknown name, a wrong type or range)."""
        knobs = self.knobs()
        unknown = sorted(str(k) for k in values if k not in knobs)
        if unknown:
            raise ValueError(f"unknown fault knob(s): {', '.join(unknown)} (known: {', '.join(knobs)})")
        for name, v in values.items():
            typ = knobs[name][0]
            # bool is an int to Python, never to an operator: True is not a status code.
            ok = isinstance(v, bool) if typ is bool else isinstance(v, int | float) and not isinstance(v, bool)
            if ok and typ is int:
                ok = isinstance(v, int) and v >= 0
            if ok and typ is float:
                ok = math.isfinite(v) and v >= 0
            if not ok:
                raise ValueError(f"fault knob {name}: expected {'a non-negative ' if typ is not bool else ''}"
                                 f"{typ.__name__}, got {v!r}")  # fmt: skip
            if name == "http_status" and v and not 400 <= v <= 599:
                raise ValueError(f"fault knob http_status: expected 0 (off) or a 4xx / 5xx status, got {v}")
        for name, v in values.items():
            setattr(self, name, float(v) if knobs[name][0] is float else v)


def loopback_peer(peer: str | None) -> bool:
    """Whether a request's peer address (as aiohttp's `request.remote` gives it) is this machine's loopback.

    127.0.0.0/8 and ::1 only; an IPv4-mapped address, a name or an unknown peer (None) is not.
    """
    if not peer:
        return False
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return False
    # Python versions differ on whether a mapped 127.0.0.1 is loopback: refused on all of them.
    return ip.is_loopback and getattr(ip, "ipv4_mapped", None) is None
