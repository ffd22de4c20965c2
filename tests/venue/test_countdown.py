"""The emulator's countdown cancel-all (Binance's dead-man's switch) through the real ccxt.pro client."""

from __future__ import annotations

import asyncio

import ccxt
import pytest

from tests.venue.test_server import SYMBOL, scenario, tape  # noqa: F401 - tape is a fixture


async def _two_orders(srv, ex) -> None:
    """One order of the adapter's and one an operator placed by hand, resting deep in the book."""
    await ex.load_markets()
    bb, _ = srv.x.best()
    for cid, depth in (("grinder_static_grid:BTCUSDT:1", 50), ("web_keep_me", 60)):
        await ex.create_order(SYMBOL, "limit", "buy", 0.002, (bb - depth) * 0.1,
                              {"postOnly": True, "clientOrderId": cid})  # fmt: skip


def _arm(ex, ms: int, symbol: str = "BTCUSDT"):
    return ex.fapiPrivatePostCountdownCancelAll({"symbol": symbol, "countdownTime": ms})


def test_a_countdown_that_runs_out_cancels_every_open_order_of_the_symbol_with_user_stream_events(tape):  # noqa: F811
    async def body(srv, ex):
        cancelled: set[str] = set()

        async def watch():
            while len(cancelled) < 2:  # ours and the hand-placed one: the switch takes all of the symbol's
                for o in await ex.watch_orders(SYMBOL):
                    if o["status"] == "canceled":
                        cancelled.add(o["clientOrderId"])

        watching = asyncio.create_task(watch())
        await asyncio.sleep(0.3)  # subscribed: the cancels must come as events
        await _two_orders(srv, ex)
        reply = await _arm(ex, 300)
        assert reply == {"symbol": "BTCUSDT", "countdownTime": "300"} and srv.countdown_ms == 300
        await asyncio.wait_for(watching, 10)
        assert cancelled == {"grinder_static_grid:BTCUSDT:1", "web_keep_me"}
        assert srv.x.open_orders() == [] and srv.countdowns_fired == 1 and srv.countdown_ms == 0

    scenario(tape, body)


def test_re_arming_replaces_the_countdown_and_zero_cancels_it(tape):  # noqa: F811
    async def body(srv, ex):
        await _two_orders(srv, ex)
        await _arm(ex, 1000)
        await _arm(ex, 600_000)  # re-armed before it ran out: the new countdown counts from now
        await asyncio.sleep(2.0)  # past the first one
        assert len(srv.x.open_orders()) == 2 and srv.countdowns_fired == 0
        assert await _arm(ex, 0) == {"symbol": "BTCUSDT", "countdownTime": "0"}  # disarmed
        await asyncio.sleep(0.1)
        assert srv.countdown_ms == 0 and srv._countdown is None and len(srv.x.open_orders()) == 2

    scenario(tape, body)


def test_a_disarmed_countdown_never_fires(tape):  # noqa: F811
    async def body(srv, ex):
        await _two_orders(srv, ex)
        await _arm(ex, 1000)
        await _arm(ex, 0)
        await asyncio.sleep(2.0)  # past the countdown that was cancelled
        assert len(srv.x.open_orders()) == 2 and srv.countdowns_fired == 0

    scenario(tape, body)


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"symbol": "BTCUSDT"}, ccxt.BadRequest),  # no countdownTime
        ({"symbol": "BTCUSDT", "countdownTime": -1}, ccxt.BadRequest),
        ({"symbol": "BTCUSDT", "countdownTime": "soon"}, ccxt.BadRequest),
        ({"countdownTime": 1000}, ccxt.BadRequest),  # no symbol
        ({"symbol": "ETHUSDT", "countdownTime": 1000}, ccxt.BadSymbol),  # not this venue's symbol
    ],
)
def test_a_malformed_countdown_is_refused_and_arms_nothing(tape, params, error):  # noqa: F811
    async def body(srv, ex):
        await ex.load_markets()
        with pytest.raises(error):
            await ex.fapiPrivatePostCountdownCancelAll(params)
        assert srv._countdown is None and srv.countdown_ms == 0

    scenario(tape, body)


def test_an_unsigned_countdown_is_refused(tape):  # noqa: F811
    async def body(srv, ex):
        await ex.load_markets()
        ex.secret = "not-the-secret"
        with pytest.raises(ccxt.AuthenticationError):
            await _arm(ex, 1000)
        assert srv._countdown is None

    scenario(tape, body)


def test_the_countdown_fails_with_the_private_rest_fault_like_any_signed_request(tape):  # noqa: F811
    async def body(srv, ex):
        await ex.load_markets()
        srv.faults.http_status, srv.faults.http_count = 503, 1
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await _arm(ex, 1000)
        assert srv._countdown is None
        await _arm(ex, 600_000)  # the venue is back
        assert srv.countdown_ms == 600_000 and srv._countdown is not None

    scenario(tape, body)
