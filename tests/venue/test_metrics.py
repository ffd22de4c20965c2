"""The emulator's /metrics: orders accepted and rejected, fills, faults injected, replay lag; loopback peers only."""

from __future__ import annotations

import asyncio

import ccxt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from grinder.core.ledger import N_FILLS
from grinder.venue.server import VenueServer
from tests.venue.test_serve_cli import from_outside, http
from tests.venue.test_server import CREDS, SYMBOL, scenario, tape  # noqa: F401 - tape is a fixture


def values(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, its labels less symbol): value}; every sample is labelled symbol=BTCUSDT."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            assert s.labels.pop("symbol") == "BTCUSDT", s
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def get(got: dict, name: str, **labels) -> float:
    return got[(name, frozenset(labels.items()))]


def test_metrics_count_orders_rejections_fills_and_faults_as_the_venue_served_them(tape):  # noqa: F811
    async def body(srv, ex):
        await ex.load_markets()
        loop = asyncio.get_running_loop()
        before = values((await loop.run_in_executor(None, http, srv_port(srv), "/metrics"))[1])
        bb, ba = srv.x.best()
        # Two quotes rest; a post-only buy through the ask would take: rejected (-5022).
        await ex.create_order(SYMBOL, "limit", "buy", 0.002, (bb - 10) * 0.1, {"postOnly": True})
        await ex.create_order(SYMBOL, "limit", "sell", 0.002, (ba + 10) * 0.1, {"postOnly": True})
        with pytest.raises(ccxt.BaseError):
            await ex.create_order(SYMBOL, "limit", "buy", 0.002, (ba + 5) * 0.1, {"postOnly": True})
        srv.faults.set({"http_status": 503, "http_count": 2})
        for _ in range(2):
            with pytest.raises(ccxt.BaseError):
                await ex.fetch_open_orders(SYMBOL)
        await srv.run_replay(until_row=srv.row + 20_000)  # the book moves through a quote: fills
        status, text = await loop.run_in_executor(None, http, srv_port(srv), "/metrics")
        return before, status, text, srv

    before, status, text, srv = scenario(tape, body)
    assert get(before, "grinder_venue_orders_accepted_total") == 0
    got = values(text)
    assert status == 200
    assert get(got, "grinder_venue_orders_accepted_total") == 2
    assert get(got, "grinder_venue_orders_rejected_total", code="-5022") == 1
    assert get(got, "grinder_venue_faults_injected_total", fault="http_status") == 2
    assert get(got, "grinder_venue_faults_injected_total", fault="seq_gap") == 0
    assert get(got, "grinder_venue_fills_total") == srv.x.led[N_FILLS] >= 1
    assert get(got, "grinder_venue_open_orders") == len(srv.x.open_orders())
    assert get(got, "grinder_venue_replay_lag_seconds") >= 0
    assert get(got, "grinder_venue_exchange_time_seconds") == pytest.approx(srv.now_ns / 1e9)
    # Scrapes are the operator's: not client requests, never faulted.
    assert ("GET", "/metrics") not in srv.faults.requests


def srv_port(srv: VenueServer) -> int:
    return srv._runner.addresses[0][1]


def test_the_metrics_endpoint_refuses_a_peer_that_is_not_loopback():
    ip, (refused,), (own,), _ = from_outside([("/metrics", None)])
    assert refused[0] == 403 and ip in refused[1]["error"]
    assert own[0] == 200 and "grinder_venue_orders_accepted_total" in own[1]
