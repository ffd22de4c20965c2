"""Signed requests as Binance checks them: HMAC-SHA256 over the parameters, a fresh timestamp, a known key.

The signature covers the query string followed by the form body, exactly as sent (the order of
parameters matters); it is the hex HMAC-SHA256 of that text under the API secret and is sent as
the last parameter, `signature`. The request's `timestamp` (ms) must be less than 1 s ahead
of the server's clock and no older than `recvWindow` ms (default 5000, at most 60000).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import parse_qsl

# Binance error codes the checks return (code, message).
BAD_API_KEY = (-2015, "Invalid API-key, IP, or permissions for action.")
BAD_SIGNATURE = (-1022, "Signature for this request is not valid.")
BAD_TIMESTAMP = (-1021, "Timestamp for this request is outside of the recvWindow.")
MISSING_PARAM = (-1102, "Mandatory parameter '{}' was not sent, was empty/null, or malformed.")
BAD_RECV_WINDOW = (-1131, "recvWindow must be less than 60000")


def sign(secret: str, payload: str) -> str:
    """The hex HMAC-SHA256 of payload under secret (what a client appends as `signature`)."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Credentials:
    """One account's API key and secret."""

    api_key: str
    secret: str


def check_signed(
    creds: Credentials, api_key: str | None, query: str, body: str, now_ms: int
) -> tuple[dict[str, str], tuple[int, str] | None]:
    """The request's parameters, and None if it passes Binance's checks, else (code, message) of the first failure."""
    params = dict(parse_qsl(query, keep_blank_values=True))
    params.update(parse_qsl(body, keep_blank_values=True))
    if not api_key or not hmac.compare_digest(api_key, creds.api_key):
        return params, BAD_API_KEY
    total = query + body
    # The signature is the last parameter: it signs everything before "&signature=", and nothing
    # may follow it (a parameter added after signing would go unchecked). Hex, any case.
    head, sep, sig = total.rpartition("signature=")
    if not sep or not sig:
        return params, (MISSING_PARAM[0], MISSING_PARAM[1].format("signature"))
    if "&" in sig or (head and not head.endswith("&")):
        return params, BAD_SIGNATURE
    if not hmac.compare_digest(sign(creds.secret, head[:-1]), sig.lower()):
        return params, BAD_SIGNATURE
    try:
        ts = int(params["timestamp"])
    except (KeyError, ValueError):
        return params, (MISSING_PARAM[0], MISSING_PARAM[1].format("timestamp"))
    try:
        window = int(params.get("recvWindow", "5000"))
    except ValueError:
        return params, (MISSING_PARAM[0], MISSING_PARAM[1].format("recvWindow"))
    if window > 60000 or window <= 0:
        return params, BAD_RECV_WINDOW
    if ts >= now_ms + 1000 or now_ms - ts > window:
        return params, BAD_TIMESTAMP
    params.pop("signature", None)
    return params, None
