"""Signed requests are checked as Binance checks them: key, HMAC over the exact parameters, timestamp window."""

from __future__ import annotations

import pytest

from grinder.venue.auth import Credentials, check_signed, sign

CREDS = Credentials("key123", "secret456")
NOW = 1_700_000_000_000


def signed(params: str, secret: str = CREDS.secret) -> str:
    return f"{params}&signature={sign(secret, params)}"


def test_a_well_signed_request_passes_and_its_params_come_back_without_the_signature():
    q = signed(f"symbol=BTCUSDT&side=BUY&quantity=0.002&timestamp={NOW}")
    params, err = check_signed(CREDS, "key123", q, "", NOW + 10)
    assert err is None and params == {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002", "timestamp": str(NOW)}


def test_the_signature_is_hex_in_any_case():
    params = f"symbol=BTCUSDT&timestamp={NOW}"
    assert check_signed(CREDS, "key123", f"{params}&signature={sign(CREDS.secret, params).upper()}", "", NOW)[1] is None


def test_the_signature_may_come_in_the_body():
    body = signed(f"symbol=BTCUSDT&timestamp={NOW}")
    assert check_signed(CREDS, "key123", "", body, NOW)[1] is None


def test_known_signature_from_binances_documentation():
    # The example of Binance's API docs (SIGNED endpoint security).
    secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
    payload = ("symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000"
               "&timestamp=1499827319559")  # fmt: skip
    assert sign(secret, payload) == "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"


@pytest.mark.parametrize(
    ("key", "query", "now", "code"),
    [
        ("wrong", signed(f"timestamp={NOW}"), NOW, -2015),
        (None, signed(f"timestamp={NOW}"), NOW, -2015),
        ("key123", signed(f"timestamp={NOW}", "other"), NOW, -1022),
        ("key123", signed(f"timestamp={NOW}") + "0", NOW, -1022),
        ("key123", f"timestamp={NOW}", NOW, -1102),
        ("key123", signed("symbol=BTCUSDT"), NOW, -1102),
        ("key123", signed(f"timestamp={NOW}"), NOW + 5001, -1021),
        ("key123", signed(f"timestamp={NOW + 1000}"), NOW, -1021),
        ("key123", signed(f"timestamp={NOW}") + "&side=SELL", NOW, -1022),  # a parameter added after signing
        ("key123", signed(f"timestamp={NOW}&recvWindow=60001"), NOW, -1131),
    ],
)
def test_bad_requests_get_binances_error_code(key, query, now, code):
    _, err = check_signed(CREDS, key, query, "", now)
    assert err is not None and err[0] == code
