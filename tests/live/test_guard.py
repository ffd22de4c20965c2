"""The mainnet guard: every mode x api_url x environment; nothing is sent where it must not be.

The real hosts are never contacted (this machine has no internet, and a test must not try): for
them the assertion is the refusal, before any client exists. Loopback venues that are allowed are
a local recording server, which counts what reaches it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import grinder.live.client as live_client
from grinder.errors import ConfigError
from grinder.live.client import make_client
from grinder.live.config import LiveConfig
from grinder.live.guard import parse_api_url

PARAMS = {"levels": 1, "interval": 0.5, "half_spread": 0.1, "order_qty": 0.002, "max_position": 0.01}

# URLs a config may carry, and what they are: "loopback" (orders go freely), "remote" (gated).
LOOPBACK = ["http://127.0.0.1:{port}", "http://localhost:{port}", "http://LOCALHOST:{port}/", "http://[::1]:{port}",
            "HTTP://127.0.0.1:{port}"]  # fmt: skip
REMOTE = ["https://fapi.binance.com", "https://testnet.binancefuture.com", "http://127.0.0.1.evil.com",
          "http://127.0.0.1.nip.io:{port}", "http://[::ffff:127.0.0.1]:{port}", "http://localhost.evil.com",
          "http://xn--lcalhost-9wf.com", "https://fapi.binance.com:443", "http://10.0.0.1:8080",
          "http://evil-127.0.0.1.com"]  # fmt: skip
# Refused by config validation whatever the mode: garbage, and hosts resolvers read in more than one way.
GARBAGE = ["http://localhost@evil.com", "http://user:pass@127.0.0.1:8080", "http://0x7f000001", "http://2130706433",
           "http://0177.0.0.1", "http://127.1", "http://127.0.0.1.", "http://localhost.", "ftp://127.0.0.1",
           "ws://127.0.0.1:8080", "http://127.0.0.1:8080/fapi/v1", "http://127.0.0.1:8080?x=1",
           "http://127.0.0.1:8080#@evil.com", "http://evil.com#@127.0.0.1", "http://127.0.0.1\\@evil.com",
           "http://lоcalhost", "http://127.0.0.1:99999", "http://127.0.0.1:x", "127.0.0.1:8080", "http://",
           "http:///127.0.0.1", "http://[::1%25lo]:8080", "http://[127.0.0.1]", "http:// 127.0.0.1",
           "http://exa_mple.com", "not a url", ""]  # fmt: skip
ENVS = {"unset": None, "0": "0", "1": "1"}


class _Recorder(BaseHTTPRequestHandler):
    hits: list = []

    def _any(self):
        type(self).hits.append((self.command, self.path))
        self.send_response(503)
        self.end_headers()

    do_GET = do_POST = do_DELETE = do_PUT = _any

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def recorder():
    """A loopback HTTP server on IPv4 and IPv6 (if the machine has it) that records every request."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    port = srv.server_address[1]
    servers = [srv]
    try:

        class V6(ThreadingHTTPServer):
            address_family = socket.AF_INET6

        servers.append(V6(("::1", port), _Recorder))
    except OSError:
        pass
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield port
    for s in servers:
        s.shutdown()


def cfg(mode: str, url: str | None, allow: tuple[str, ...], tmp_path) -> LiveConfig:
    return LiveConfig(strategy="static_grid", params=PARAMS, symbol="BTCUSDT", mode=mode, api_url=url,
                      mainnet_allowlist=allow, state_dir=tmp_path / "state")  # fmt: skip


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection (DNS included) fails the test: the guard must refuse before."""

    def boom(*a, **k):
        raise AssertionError(f"network I/O attempted: {a[:2]}")

    monkeypatch.setattr(socket, "getaddrinfo", boom)
    monkeypatch.setattr(socket.socket, "connect", boom)
    monkeypatch.setattr(socket, "create_connection", boom)


@pytest.mark.parametrize("env", list(ENVS))
@pytest.mark.parametrize("listed", [True, False], ids=["allowlisted", "not-allowlisted"])
@pytest.mark.parametrize("url", [None, *REMOTE], ids=lambda u: str(u))
@pytest.mark.parametrize("mode", ["live", "testnet", "paper"])
def test_a_venue_that_is_not_loopback_needs_both_keys_and_is_refused_before_any_io(
    mode, url, listed, env, tmp_path, monkeypatch, no_network, recorder
):
    url = url.format(port=recorder) if url else url
    if ENVS[env] is None:
        monkeypatch.delenv("ALLOW_MAINNET_TRADE", raising=False)
    else:
        monkeypatch.setenv("ALLOW_MAINNET_TRADE", ENVS[env])
    c = cfg(mode, url, ("BTCUSDT",) if listed else ("ETHUSDT",), tmp_path)
    hits = len(_Recorder.hits)
    if mode == "paper" or (env == "1" and listed):
        ex = make_client(c, "k", "s") if mode != "paper" else make_client(c)
        hosts = live_client._hosts(ex.urls["api"])
        if url:  # every endpoint on the configured host, none elsewhere (testnet is never rewritten)
            assert hosts == {parse_api_url(url).host}
        elif mode == "testnet":
            assert hosts <= live_client.TESTNET_HOSTS
        if mode == "paper":
            assert not ex.apiKey  # paper signs nothing: its orders never leave
        asyncio.run(ex.close())
    else:
        with pytest.raises(ConfigError, match="ALLOW_MAINNET_TRADE=1" if env != "1" else "not in mainnet_allowlist"):
            make_client(c, "k", "s")
    assert len(_Recorder.hits) == hits  # nothing reached the look-alikes that lead here


@pytest.mark.parametrize("env", list(ENVS))
@pytest.mark.parametrize("url", LOOPBACK)
@pytest.mark.parametrize("mode", ["live", "testnet", "paper"])
def test_a_loopback_emulator_needs_no_keys_and_gets_every_request(mode, url, env, tmp_path, monkeypatch, recorder):
    url = url.format(port=recorder)
    if ENVS[env] is None:
        monkeypatch.delenv("ALLOW_MAINNET_TRADE", raising=False)
    else:
        monkeypatch.setenv("ALLOW_MAINNET_TRADE", ENVS[env])
    c = cfg(mode, url, (), tmp_path)
    ex = make_client(c, "k", "s") if mode != "paper" else make_client(c)
    assert live_client._hosts(ex.urls["api"]) == {parse_api_url(url).host}

    async def ask():
        try:
            await ex.fetch_time()
        except Exception:  # noqa: BLE001 - the recorder answers 503; only where the request went matters
            pass
        finally:
            await ex.close()

    hits = len(_Recorder.hits)
    asyncio.run(ask())
    if "[::1]" in url and not socket.has_ipv6:
        return
    assert len(_Recorder.hits) > hits and _Recorder.hits[-1][1].startswith("/fapi/v1/time")


@pytest.mark.parametrize("url", GARBAGE)
def test_garbage_and_ambiguous_urls_are_refused_by_config_validation_in_one_line(url, tmp_path):
    from grinder.live.config import load_config

    path = tmp_path / "live.toml"
    path.write_text(f'strategy = "static_grid"\nsymbol = "BTCUSDT"\napi_url = "{url.replace(chr(92), chr(92) * 2)}"\n'
                    "params = {}\n")  # fmt: skip
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: api_url: ")


def test_loopback_is_read_from_the_url_as_written_never_resolved():
    assert all(parse_api_url(u).loopback for u in ("http://127.8.9.1", "http://127.255.255.254:1", "http://[::1]"))
    assert not any(parse_api_url(u.format(port=1)).loopback for u in REMOTE)
    assert parse_api_url("HTTP://LocalHost:8080/").base == "http://localhost:8080"


def test_missing_credentials_are_refused_before_any_io(tmp_path, monkeypatch, no_network, recorder):
    monkeypatch.delenv("ALLOW_MAINNET_TRADE", raising=False)
    for mode in ("live", "testnet"):
        with pytest.raises(ConfigError, match=f"{mode} mode needs credentials"):
            make_client(cfg(mode, f"http://127.0.0.1:{recorder}", (), tmp_path), "", "")
