"""The mainnet guard: which venue an `api_url` names, and whether orders may go there.

The rule (docs/live.md, "Where orders go"): orders go without further ado only to a loopback
emulator; every other venue (Binance itself, its testnet, any other host) needs ALLOW_MAINNET_TRADE=1
and the symbol in `mainnet_allowlist`. Paper mode sends no order anywhere and is not gated.

"Loopback" is decided on the URL as written, never by resolving it: the host must be `localhost`,
an IPv4 address in 127.0.0.0/8 in dotted-quad form, or `[::1]`. Anything else, including hosts
that resolve to loopback (`127.0.0.1.nip.io`, `[::ffff:127.0.0.1]`), is a remote venue and gated.
Hosts that resolvers read as numbers in other forms (`2130706433`, `0x7f000001`, `0177.0.0.1`,
`127.1`) are refused outright: what they name depends on the library that resolves them.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from grinder.errors import ConfigError

SCHEMES = ("http", "https")  # the REST base; the WebSocket URL is derived from it (ws / wss)
# A DNS label (letters, digits, inner hyphens); IDN hosts in their xn-- form only.
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# A last label a URL parser or resolver may read as a number (WHATWG URL's IPv4 rule; inet_aton's forms).
_NUMERIC = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")
_PRINTABLE = re.compile(r"[!-~]+")  # printable ASCII, no space


@dataclass(frozen=True)
class Venue:
    """A checked `api_url`: its scheme, lower-cased host (brackets off for IPv6), port, and the base to use."""

    scheme: str
    host: str
    port: int | None
    base: str  # scheme://host[:port], no path: what the client's endpoint URLs are built on

    @property
    def loopback(self) -> bool:
        """True for the local machine by the URL's own text (localhost, 127.0.0.0/8, ::1)."""
        if self.host == "localhost":
            return True
        try:
            ip = ipaddress.ip_address(self.host)
        except ValueError:
            return False
        # An IPv4-mapped IPv6 address is not taken for loopback: only the two canonical forms are.
        return ip.is_loopback if ip.version == 4 else ip == ipaddress.IPv6Address("::1")


def parse_api_url(url: str) -> Venue:
    """Check an `api_url` and return its parts; ValueError saying what is wrong with it.

    Accepted: http or https, a host, an optional port, and no path (a single "/" is allowed), query,
    fragment, user name or password. A host is a dotted-quad IPv4 address, a bracketed IPv6
    address, or a DNS name of ASCII labels whose last label is not numeric.
    """
    if not isinstance(url, str) or not _PRINTABLE.fullmatch(url):
        raise ValueError(f"{url!r}: only printable ASCII without spaces (write an IDN host as xn--...)")
    if "\\" in url:
        raise ValueError(f"{url!r}: a backslash is read differently by different URL parsers")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"{url!r}: scheme must be http or https (the WebSocket URL is derived from it)")
    if "@" in parts.netloc:
        raise ValueError(f"{url!r}: no user name or password in the URL (credentials come from the environment)")
    if parts.path not in ("", "/") or parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError(f"{url!r}: a base URL only (scheme://host[:port]), no path, query or fragment")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: bad port") from None
    raw = parts.netloc
    if raw.startswith("["):
        host = raw[1 : raw.find("]")] if "]" in raw else ""
        try:
            ip = ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{url!r}: {host!r} is not an IPv6 address") from None
        if ip.scope_id:
            raise ValueError(f"{url!r}: no IPv6 zone id")
        shown = f"[{ip.compressed}]"
        host = ip.compressed
    else:
        host = (parts.hostname or "").lower()
        if not host:
            raise ValueError(f"{url!r}: no host")
        labels = host.split(".")
        if _NUMERIC.fullmatch(labels[-1]):
            try:
                ipaddress.IPv4Address(host)  # dotted quad, decimal, no leading zeros
            except ValueError:
                raise ValueError(
                    f"{url!r}: {host!r} reads as a number in some resolvers; write an IPv4 address "
                    "as four decimal parts (127.0.0.1)"
                ) from None
        elif not all(_LABEL.fullmatch(x) for x in labels) or len(host) > 253:
            raise ValueError(f"{url!r}: {host!r} is not a host name (letters, digits, '-', '.')")
        shown = host
    base = f"{scheme}://{shown}" + (f":{port}" if port is not None else "")
    return Venue(scheme, host, port, base)


def check_order_venue(mode: str, symbol: str, allowlist: tuple[str, ...], where: str, loopback: bool) -> None:
    """Refuse, before anything is sent, orders to a venue that is not a loopback emulator without both keys.

    `where` names the venue for the message (its base URL or "Binance mainnet"). Paper mode sends
    no order and passes. ConfigError names the missing key.
    """
    if mode == "paper" or loopback:
        return
    if os.environ.get("ALLOW_MAINNET_TRADE") != "1":
        raise ConfigError(f"{mode} mode on {where} (not a loopback emulator) needs ALLOW_MAINNET_TRADE=1")
    if symbol not in allowlist:
        raise ConfigError(f"{mode} mode on {where}: {symbol} is not in mainnet_allowlist {list(allowlist)}")
