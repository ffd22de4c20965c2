"""Instrument rules: the bundled exchangeInfo snapshot, refusals, `grinder data instruments` and its refresh.

Hostile paths first: a contract under the wrong venue, an inverse contract with no contract size, a COIN-M
file name, a corrupt snapshot, a refresh that fails or answers the wrong venue family each stop with one
`error:` line, exit 2 and nothing written. Then the registry's contents and the refresh against the
emulator (`grinder venue serve`) and a local COIN-M server.
"""

from __future__ import annotations

import gzip
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from grinder.data import instruments as I
from grinder.data.instruments import Instrument, resolve_instrument
from grinder.errors import ConfigError, DataError
from tests.conftest import REPO

SAMPLE = REPO / "data" / "sample" / "lake"
# The rules of the three instruments Grinder knew before the registry: ingests of them must not change.
BEFORE = {
    ("binance-usdm", "BTCUSDT"): dict(contract="linear", base="BTC", quote="USDT", settle="USDT", tick_size=0.1,
                                      lot_size=0.001, min_notional=100.0, maker_fee=0.0002, taker_fee=0.0005),
    ("binance-usdm", "ETHUSDT"): dict(contract="linear", base="ETH", quote="USDT", settle="USDT", tick_size=0.01,
                                      lot_size=0.001, min_notional=20.0, maker_fee=0.0002, taker_fee=0.0005),
    ("binance-coinm", "BTCUSD_PERP"): dict(contract="inverse", base="BTC", quote="USD", settle="BTC", tick_size=0.1,
                                           lot_size=1.0, contract_size=100.0, min_notional=0.0, maker_fee=0.0002,
                                           taker_fee=0.0005),
}  # fmt: skip


@pytest.fixture(autouse=True)
def no_refreshed_snapshots(tmp_path, monkeypatch):
    """Lookups see the bundled snapshot only, whatever data/instruments holds on this machine."""
    monkeypatch.setenv("GRINDER_INSTRUMENTS", str(tmp_path / "no-instruments"))


def grinder(*args, env=None):
    return subprocess.run([sys.executable, "-m", "grinder", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env={**os.environ, **(env or {})})  # fmt: skip


def one_error(r: subprocess.CompletedProcess, message: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("error: ") and message in r.stderr, r.stderr


def coinm_capture(path: Path, symbol: str = "BTCUSD_PERP") -> Path:
    """A small COIN-M raw capture: a stale diff, the REST snapshot, a bridging diff and a trade (sizes in contracts)."""
    t0, s = 1723161600000, symbol.lower()

    def line(us, obj):
        return f"{us} {json.dumps(obj, separators=(',', ':'))}\n".encode()

    def diff(t, first, last, prev, b, a):
        return {"stream": f"{s}@depth@0ms", "data": {"e": "depthUpdate", "E": t, "T": t, "s": symbol, "ps": "BTCUSD",
                                                     "U": first, "u": last, "pu": prev, "b": b, "a": a}}  # fmt: skip

    book = {"bids": [["60000.0", "5"], ["59999.9", "7"]], "asks": [["60000.1", "3"], ["60000.2", "4"]]}
    trade = {"e": "trade", "E": t0 + 4, "T": t0 + 4, "s": symbol, "t": 1, "p": "60000.1", "q": "2", "X": "MARKET"}
    lines = [
        line(t0 * 1000 + 1000, diff(t0 + 1, 97, 99, 96, [["60000.0", "5"]], [])),
        line(t0 * 1000 + 2000, {"lastUpdateId": 100, "E": t0 + 2, "T": t0 + 2, **book}),
        line(t0 * 1000 + 3000, diff(t0 + 3, 101, 102, 100, [["60000.0", "6"]], [])),
        line(t0 * 1000 + 4000, {"stream": f"{s}@trade", "data": {**trade, "m": False}}),
    ]
    path.write_bytes(gzip.compress(b"".join(lines)))
    return path


def dapi_row(symbol, tick, size, status="TRADING", kind="PERPETUAL"):
    base = symbol.split("USD_")[0]
    filters = [{"filterType": "PRICE_FILTER", "minPrice": "1", "maxPrice": "9", "tickSize": tick},
               {"filterType": "LOT_SIZE", "minQty": "1", "maxQty": "9", "stepSize": "1"}]  # fmt: skip
    return {"symbol": symbol, "pair": symbol.split("_")[0], "contractType": kind, "deliveryDate": 4133404800000,
            "contractStatus": status, "baseAsset": base, "quoteAsset": "USD", "marginAsset": base,
            "contractSize": size, "filters": filters}  # fmt: skip


class Server:
    """A loopback HTTP server answering GET `path` with `body` (bytes), in a thread."""

    def __init__(self, routes: dict[str, bytes]):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the stdlib's name)
                body = routes.get(self.path.split("?")[0])
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body if body is not None else b'{"code":-1,"msg":"not found"}')

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def exchange_info(rows, server_time=1790000000000):
    return json.dumps({"timezone": "UTC", "serverTime": server_time, "rateLimits": [], "exchangeFilters": [],
                       "symbols": rows}).encode()  # fmt: skip


# --- hostile: contracts under the wrong venue, inverse contracts without a size -----------------


@pytest.mark.parametrize("symbol", ["BTCUSD_PERP", "ETHUSD_PERP", "ETHUSD_250627"])
def test_a_coin_m_symbol_under_binance_usdm_is_refused(symbol):
    with pytest.raises(ConfigError, match=f"{symbol} is a COIN-M contract.*pass --venue binance-coinm"):
        resolve_instrument("binance-usdm", symbol, {"contract": "inverse", "tick_size": 0.01, "lot_size": 1})


@pytest.mark.parametrize("symbol", ["BTCUSDT", "BTCUSDT_250328", "ETHBTC", "DOGEUSDT"])
def test_a_usdm_symbol_under_binance_coinm_is_refused(symbol):
    with pytest.raises(ConfigError, match=f"{symbol} is not a binance-coinm contract.*--venue binance-usdm"):
        resolve_instrument("binance-coinm", symbol, {"tick_size": 0.1, "lot_size": 1, "contract_size": 10})


def test_a_bare_coin_m_pair_is_refused_on_both_venues_with_the_perpetual_named():
    # The old guess from a COIN-M file name, and the old advice (--tick-size) that made a linear ingest of it.
    with pytest.raises(ConfigError, match="--venue binance-coinm --symbol BTCUSD_PERP"):
        resolve_instrument("binance-usdm", "BTCUSD", {"tick_size": 0.1, "lot_size": 1})
    with pytest.raises(ConfigError, match="a COIN-M pair, not a contract: the perpetual is --symbol ETHUSD_PERP"):
        resolve_instrument("binance-coinm", "ETHUSD", {"tick_size": 0.01, "lot_size": 1, "contract_size": 10})


def test_an_inverse_contract_without_a_contract_size_is_refused():
    # ETHUSD_PERP is in no bundled snapshot: its contract size (10 USD) must be stated, never taken as 1.
    with pytest.raises(ConfigError, match=r"no built-in rules for binance-coinm/ETHUSD_PERP.*--refresh --venue "
                                          r"binance-coinm.*pass --contract-size$"):  # fmt: skip
        resolve_instrument("binance-coinm", "ETHUSD_PERP", {"tick_size": 0.01, "lot_size": 1})
    with pytest.raises(ConfigError, match="pass --tick-size and --lot-size and --contract-size"):
        resolve_instrument("binance-coinm", "ETHUSD_PERP")
    # Any venue: an inverse contract needs its size.
    with pytest.raises(ConfigError, match="no built-in rules for myvenue/XBTUSD: pass --contract-size"):
        resolve_instrument("myvenue", "XBTUSD", {"contract": "inverse", "tick_size": 0.5, "lot_size": 1})
    inst = resolve_instrument("binance-coinm", "ETHUSD_PERP", {"tick_size": 0.01, "lot_size": 1, "contract_size": 10})
    assert (inst.contract, inst.contract_size, inst.base, inst.settle) == ("inverse", 10.0, "ETH", "ETH")
    assert (inst.maker_fee, inst.taker_fee) == (0.0002, 0.0005)  # the venue's VIP 0, not zero


@pytest.mark.parametrize(
    "venue,symbol,contract",
    [("binance-usdm", "ETHUSDT", "inverse"), ("binance-coinm", "BTCUSD_PERP", "linear"),
     ("binance-usdm", "NEWUSDT", "inverse")],
)  # fmt: skip
def test_a_contract_type_against_the_venue_is_refused(venue, symbol, contract):
    with pytest.raises(ConfigError, match=f"every {venue} contract is .*: --contract {contract} does not apply"):
        resolve_instrument(venue, symbol, {"contract": contract, "tick_size": 0.1, "lot_size": 1, "contract_size": 10})


def test_a_contract_size_for_a_linear_contract_is_refused():
    with pytest.raises(ConfigError, match="binance-usdm/ETHUSDT is linear: --contract-size applies to inverse"):
        resolve_instrument("binance-usdm", "ETHUSDT", {"contract_size": 10})
    with pytest.raises(ConfigError, match="myvenue/X is linear"):
        resolve_instrument("myvenue", "X", {"tick_size": 1, "lot_size": 1, "contract_size": 10})


def test_an_unlisted_symbol_needs_tick_and_lot_and_names_the_refresh():
    with pytest.raises(ConfigError, match=r"no built-in rules for binance-usdm/NOSUCHUSDT: no snapshot lists it "
                                          r"\(newest: 2025-01-09T08:58:49.786Z\); refresh them with `grinder data "
                                          r"instruments --refresh --venue binance-usdm`, or pass --tick-size and "
                                          r"--lot-size"):  # fmt: skip
        resolve_instrument("binance-usdm", "NOSUCHUSDT")
    inst = resolve_instrument("binance-usdm", "NOSUCHUSDT", {"tick_size": 0.001, "lot_size": 1})
    assert (inst.contract, inst.base, inst.quote, inst.settle) == ("linear", "NOSUCH", "USDT", "USDT")
    assert (inst.maker_fee, inst.taker_fee) == (0.0002, 0.0005)


def test_a_fee_tier_outside_the_schedule_is_refused():
    with pytest.raises(ConfigError, match=r"--fee-tier 1: the fee schedule of binance-coinm has VIP 0 \.\. 0"):
        resolve_instrument("binance-coinm", "BTCUSD_PERP", fee_tier=1)
    with pytest.raises(ConfigError, match=r"--fee-tier 10: the fee schedule of binance-usdm has VIP 0 \.\. 9"):
        resolve_instrument("binance-usdm", "BTCUSDT", fee_tier=10)
    vip3 = resolve_instrument("binance-usdm", "BTCUSDT", fee_tier=3)
    assert (vip3.maker_fee, vip3.taker_fee) == (0.00012, 0.00032)
    # Explicit fees win over the tier.
    own = resolve_instrument("binance-usdm", "BTCUSDT", {"maker_fee": -0.0001}, fee_tier=3)
    assert (own.maker_fee, own.taker_fee) == (-0.0001, 0.00032)


# --- hostile: snapshot files -------------------------------------------------------------------

GOOD = I.render_snapshots([I.Snapshot("binance-usdm", "2026-01-01T00:00:00.000Z", 1767225600000, "test", "",
                                      I.Fees(((0.0001, 0.0004),)),
                                      {"BTCUSDT": ("TRADING", "PERPETUAL", "BTC", "USDT", "USDT", "0.5", "0.01",
                                                   "50", "1")})])  # fmt: skip


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda t: t.replace("format = 1", "format = 2"), "format = 2, expected 1"),
        (lambda t: t + "\n[[oops", "not TOML"),
        (lambda t: t.replace('"0.5"', '"0"'), "BTCUSDT: tick size '0' is not a positive decimal"),
        (lambda t: t.replace('"0.5"', '"5e-1"'), "tick size '5e-1' is not a positive decimal"),
        (lambda t: t.replace('"50"', '"-1"'), "min notional '-1' is not a decimal"),
        (lambda t: t.replace('"BTCUSDT" =', '"BTCUSD_PERP" ='), "BTCUSD_PERP is a COIN-M contract"),
        (lambda t: t.replace('"BTCUSDT" =', '"../x" ='), "../x: symbol is not a lake-safe name"),
        (lambda t: t.replace('"BTC", "USDT"', '"btc", "USDT"'), "asset names 'btc'"),
        (lambda t: t.replace('"1"]', '"1", "extra"]'), "not a list of 9 strings"),
        (lambda t: t.replace("[0.0001, 0.0004]", "[0.5, 0.0004]"), "vip[0] = [0.5, 0.0004]"),
        (lambda t: t.replace("[binance-usdm", "[kraken"), "[kraken]: not a venue Grinder keeps snapshots of"),
        (lambda t: t.replace('"status", ', ""), "columns = "),
        (lambda t: t.replace("server_time_ms = 1767225600000", "server_time_ms = -1"), "needs taken"),
    ],
)  # fmt: skip
def test_a_corrupt_snapshot_is_refused_naming_its_file(tmp_path, edit, message):
    p = tmp_path / "binance-usdm-x.toml"
    p.write_text(edit(GOOD))
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        resolve_instrument("binance-usdm", "BTCUSDT", directory=tmp_path)
    assert str(e.value).startswith(f"{p}: instrument snapshot: ")


def test_a_corrupt_snapshot_stops_an_ingest_with_one_line(tmp_path, real_lines):
    from tests.conftest import write_capture

    (tmp_path / "inst").mkdir()
    (tmp_path / "inst" / "bad.toml").write_text("format = 1\n[binance-usdm]\n")
    path = write_capture(tmp_path / "btcusdt_x.gz", real_lines[:50])
    r = grinder("data", "ingest", "binance", path, "--root", tmp_path / "lake", "--instruments", tmp_path / "inst")
    one_error(r, f"{tmp_path / 'inst' / 'bad.toml'}: instrument snapshot: [binance-usdm] columns")
    assert not (tmp_path / "lake").exists()


# --- hostile: exchangeInfo answers -------------------------------------------------------------


@pytest.mark.parametrize(
    "venue,info,message",
    [
        ("binance-usdm", [], "not an exchangeInfo object with a symbols list"),
        ("binance-usdm", {"serverTime": 1}, "not an exchangeInfo object with a symbols list"),
        ("binance-usdm", {"symbols": [], "serverTime": "1"}, "no serverTime in ms"),
        ("binance-usdm", {"symbols": [], "serverTime": 1}, "lists no valid contract"),
        ("binance-usdm", {"symbols": [dapi_row("BTCUSD_PERP", "0.1", 100)], "serverTime": 1},
         "lists BTCUSD_PERP, a contract of binance-coinm, not of binance-usdm: is --venue binance-coinm meant?"),
        ("binance-coinm", json.loads(exchange_info([{"symbol": "BTCUSDT", "status": "TRADING"}])),
         "lists BTCUSDT, a contract of binance-usdm, not of binance-coinm"),
    ],
)  # fmt: skip
def test_an_answer_that_is_not_this_venues_exchange_info_is_refused(venue, info, message):
    with pytest.raises(DataError, match=re.escape(message)):
        I.compact_exchange_info(venue, info)


def test_bad_rows_of_an_answer_are_skipped_and_counted():
    rows = [dapi_row("BTCUSD_PERP", "0.1", 100), dapi_row("ETHUSD_PERP", "0.01", 10),
            dapi_row("BTCUSD_PERP", "0.1", 100), dapi_row("XRPUSD_PERP", "0", 10), dapi_row("ADAUSD_PERP", "0.0001", 0),
            {"nosymbol": 1}, "junk", dapi_row("币安USD_PERP", "0.1", 10)]  # fmt: skip
    out, ms, skipped = I.compact_exchange_info("binance-coinm", json.loads(exchange_info(rows)))
    assert set(out) == {"BTCUSD_PERP", "ETHUSD_PERP"} and ms == 1790000000000
    assert skipped == {"BTCUSD_PERP: listed twice": 1, "XRPUSD_PERP: tick size '0' is not a positive decimal": 1,
                       "ADAUSD_PERP: contract size '0' is not a positive decimal": 1, "entry without a symbol": 2,
                       "币安USD_PERP: symbol is not a lake-safe name": 1}  # fmt: skip


# --- hostile: the CLI --------------------------------------------------------------------------


def test_the_issue_ethusd_perp_as_linear_or_unsized_is_refused(tmp_path):
    """Issue #24: ETHUSD_PERP with --contract inverse took a contract size of 1 and zero fees."""
    path = coinm_capture(tmp_path / "ethusd_perp_20240809.gz", "ETHUSD_PERP")
    lake = tmp_path / "lake"
    one_error(grinder("data", "ingest", "binance", path, "--contract", "inverse", "--root", lake),
              "ETHUSD_PERP is a COIN-M contract (inverse, margined in the coin), not one of binance-usdm: "
              "pass --venue binance-coinm")  # fmt: skip
    one_error(grinder("data", "ingest", "binance", path, "--venue", "binance-coinm", "--root", lake),
              "no built-in rules for binance-coinm/ETHUSD_PERP")  # fmt: skip
    one_error(grinder("data", "ingest", "binance", path, "--venue", "binance-coinm", "--tick-size", "0.01",
                      "--lot-size", "1", "--root", lake), "or pass --contract-size")  # fmt: skip
    assert not lake.exists()
    r = grinder("data", "ingest", "binance", path, "--venue", "binance-coinm", "--tick-size", "0.1", "--lot-size", "1",
                "--contract-size", "10", "--root", lake)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "rules: inverse, tick 0.1, lot 1, contract size 10, settled in ETH, fees 0.0002/0.0005 from the command " \
           "line and the binance-coinm fee schedule at VIP 0" in r.stdout  # fmt: skip
    row = pq.read_table(lake / "instruments/venue=binance-coinm/symbol=ETHUSD_PERP/instrument.parquet").to_pylist()
    assert row[0]["contract_size"] == 10.0 and row[0]["settle"] == "ETH" and row[0]["taker_fee"] == 0.0005


def test_a_coin_m_file_name_maps_to_the_perpetual_and_never_to_a_linear_ingest(tmp_path):
    """Issue #24: `btcusd_...` guessed BTCUSD, and the advice to pass --tick-size ingested it as linear."""
    lake = tmp_path / "lake"
    bare = coinm_capture(tmp_path / "btcusd_20240809.gz")
    advice = "the COIN-M perpetual is BTCUSD_PERP: pass --venue binance-coinm --symbol BTCUSD_PERP"
    one_error(grinder("data", "ingest", "binance", bare, "--root", lake), advice)
    one_error(grinder("data", "ingest", "binance", bare, "--tick-size", "0.1", "--lot-size", "1", "--root", lake),
              advice)  # fmt: skip
    one_error(grinder("data", "ingest", "binance", coinm_capture(tmp_path / "btcusd_perp_20240809.gz"), "--root", lake),
              "BTCUSD_PERP is a COIN-M contract")  # fmt: skip
    assert not lake.exists()
    # Following the advice: the bare name maps to the perpetual under binance-coinm, with its bundled rules.
    r = grinder("data", "ingest", "binance", bare, "--venue", "binance-coinm", "--root", lake)
    assert r.returncode == 0, r.stderr
    assert "ingested binance-coinm/BTCUSD_PERP" in r.stdout and "book" in r.stdout and "trades" in r.stdout
    assert "rules: inverse, tick 0.1, lot 1, contract size 100, settled in BTC, fees 0.0002/0.0005 from the " \
           "binance-coinm snapshot of 2026-11-25T16:03:16.000Z (bundled)" in r.stdout  # fmt: skip
    row = pq.read_table(lake / "instruments/venue=binance-coinm/symbol=BTCUSD_PERP/instrument.parquet").to_pylist()[0]
    assert {k: row[k] for k in BEFORE[("binance-coinm", "BTCUSD_PERP")]} == BEFORE[("binance-coinm", "BTCUSD_PERP")]


def test_a_tardis_file_of_the_other_venue_is_refused(tmp_path):
    path = tmp_path / "binance-delivery_trades_2024-08-08_BTCUSD_PERP.csv.gz"
    path.write_bytes(gzip.compress(b"exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"))
    r = grinder("data", "ingest", "tardis", path, "--root", tmp_path / "lake")
    one_error(r, f"{path.name} is a Tardis binance-delivery file, a binance-coinm contract: pass --venue binance-coinm")
    assert not (tmp_path / "lake").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--url", "http://127.0.0.1:9"], "--url is where --refresh fetches from: pass --refresh too"),
        (["--refresh", "--url", "http://127.0.0.1:9"], "--url serves one venue's API: pass --venue"),
        (["--venue", "kraken"], "--venue kraken: instrument snapshots are kept for binance-usdm, binance-coinm"),
        (["--refresh", "--venue", "binance-usdm", "--url", "ftp://x"], "--url 'ftp://x': expected http(s)://"),
        (["--refresh", "--venue", "binance-usdm", "--symbol", "BTCUSDT"], "--refresh takes every contract"),
        (["--symbol", "NOPE*"], "no contract of binance-usdm or binance-coinm matches NOPE*"),
        (["--venue", "binance-coinm", "--symbol", "ETHUSD_PERP"], "no contract of binance-coinm matches ETHUSD_PERP"),
    ],
)  # fmt: skip
def test_bad_instruments_commands_are_one_line_and_exit_2(tmp_path, args, message):
    r = grinder("data", "instruments", "--instruments", tmp_path / "inst", *args)
    one_error(r, message)
    assert not (tmp_path / "inst").exists()


def test_a_refresh_that_cannot_reach_the_venue_writes_nothing(tmp_path):
    with Server({}) as srv:
        url = srv.url
    r = grinder("data", "instruments", "--refresh", "--venue", "binance-usdm", "--url", url,
                "--instruments", tmp_path / "inst")  # fmt: skip
    one_error(r, f"cannot fetch /fapi/v1/exchangeInfo from {url}: ")
    assert "(nothing written)" in r.stderr and not (tmp_path / "inst").exists()


def test_a_snapshot_folder_that_is_a_file_is_refused(tmp_path):
    not_a_folder = tmp_path / "inst"
    not_a_folder.write_text("x")
    with Server({"/fapi/v1/exchangeInfo": exchange_info([{"symbol": "BTCUSDT"}])}) as srv:
        r = grinder("data", "instruments", "--refresh", "--venue", "binance-usdm", "--url", srv.url,
                    "--instruments", not_a_folder)  # fmt: skip
    one_error(r, f"{not_a_folder}: the instrument snapshot folder is not a folder")
    one_error(grinder("data", "instruments", "--instruments", not_a_folder), "is not a folder")
    assert not_a_folder.read_text() == "x"


@pytest.mark.parametrize(
    "venue,body,message",
    [
        ("binance-usdm", exchange_info([dapi_row("BTCUSD_PERP", "0.1", 100)]),
         "lists BTCUSD_PERP, a contract of binance-coinm, not of binance-usdm"),
        ("binance-coinm", b'{"symbols": "all of them", "serverTime": 1}', "not an exchangeInfo object"),
        ("binance-coinm", exchange_info([dapi_row("BTCUSD_PERP", "0.1", 0)]), "lists no valid contract"),
    ],
)  # fmt: skip
def test_a_refresh_answered_with_the_wrong_family_or_nonsense_writes_nothing(tmp_path, venue, body, message):
    prefix = "/fapi/v1" if venue == "binance-usdm" else "/dapi/v1"
    with Server({f"{prefix}/exchangeInfo": body}) as srv:
        r = grinder("data", "instruments", "--refresh", "--venue", venue, "--url", srv.url,
                    "--instruments", tmp_path / "inst")  # fmt: skip
    one_error(r, message)
    assert not (tmp_path / "inst").exists()


# --- the registry ------------------------------------------------------------------------------


def test_the_three_instruments_known_before_keep_their_rules():
    for (venue, symbol), fields in BEFORE.items():
        assert resolve_instrument(venue, symbol) == Instrument(venue=venue, symbol=symbol, **fields)


def test_the_bundled_snapshot_lists_every_usdm_contract_with_its_date_and_source():
    snaps = I.bundled()
    usdm, coinm = (next(s for s in snaps if s.venue == v) for v in ("binance-usdm", "binance-coinm"))
    assert (usdm.taken, usdm.server_time_ms, len(usdm.rows)) == ("2025-01-09T08:58:49.786Z", 1736413129786, 410)
    assert "furnace-dev/furnace" in usdm.source and "dbbc6bffafa496559d1db8c5513a2462e41914b9" in usdm.source
    assert len(usdm.fees.vip) == 10 and usdm.fees.vip[9] == (0.0, 0.00017) and usdm.fees.as_of
    known = I.known_instruments()
    assert all(i.contract == "linear" for (v, _), i in known.items() if v == "binance-usdm")
    assert all(i.contract == "inverse" and i.contract_size > 1 for (v, _), i in known.items() if v == "binance-coinm")
    doge = known[("binance-usdm", "DOGEUSDT")]
    assert (doge.tick_size, doge.lot_size, doge.min_notional, doge.settle) == (0.00001, 1.0, 5.0, "USDT")
    assert known[("binance-usdm", "BTCUSDC")].settle == "USDC"
    assert known[("binance-usdm", "BTCUSDT_250328")].tick_size == 0.1  # dated contracts are listed too
    # The text reads back as it was written.
    assert I.parse_snapshots(I.render_snapshots(list(snaps)), "again") == [
        I.Snapshot(**{**s.__dict__, "origin": "again"}) for s in snaps
    ]


@pytest.mark.parametrize(
    "name,venue,symbol",
    [
        ("btcusdt_20240808.gz", "binance-usdm", "BTCUSDT"),
        ("btcusd_perp_20240808.gz", "binance-coinm", "BTCUSD_PERP"),
        ("ethusd_250627-x.gz", "binance-coinm", "ETHUSD_250627"),
        ("BTCUSD_PERP-trades-2024-08-08.csv", "binance-coinm", "BTCUSD_PERP"),
        ("btcusd_20240808.gz", "binance-coinm", "BTCUSD_PERP"),
        ("btcusd_20240808.gz", "binance-usdm", "BTCUSD"),  # refused by the registry, with the perpetual named
        ("binance-futures_trades_2024-08-08_BTCUSDT.csv.gz", "binance-usdm", "BTCUSDT"),
        ("binance-delivery_incremental_book_L2_2024-08-08_ETHUSD_PERP.csv.gz", "binance-coinm", "ETHUSD_PERP"),
    ],
)  # fmt: skip
def test_file_names_name_their_symbol(name, venue, symbol):
    from grinder.cli.data import _guess_symbol

    assert _guess_symbol([Path(name)], venue) == symbol


# --- refresh -----------------------------------------------------------------------------------


def test_refresh_from_the_emulator_writes_a_dated_snapshot_that_wins_for_its_symbols(tmp_path):
    env = {"GRINDER_VENUE_API_KEY": "k" * 16, "GRINDER_VENUE_SECRET": "s" * 32}
    emu = subprocess.Popen([sys.executable, "-m", "grinder", "venue", "serve", "--root", SAMPLE, "--start",
                            "2024-08-08T23:54:20", "--end", "2024-08-08T23:54:23"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, **env})  # fmt: skip
    try:
        line = emu.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert m, line + emu.stderr.read()
        inst = tmp_path / "inst"
        r = grinder("data", "instruments", "--refresh", "--venue", "binance-usdm", "--url",
                    f"http://127.0.0.1:{m.group(1)}", "--instruments", inst)  # fmt: skip
    finally:
        emu.send_signal(signal.SIGTERM)
        emu.wait(timeout=30)
    assert r.returncode == 0, r.stderr
    files = list(inst.iterdir())
    assert len(files) == 1 and re.fullmatch(r"binance-usdm-\d{8}T\d{9}Z\.toml", files[0].name), files
    assert "refreshed binance-usdm: 1 contracts as of " in r.stdout and str(files[0]) in r.stdout
    # The emulator serves the lake's BTCUSDT: the same rules, so nothing changed; 409 others not listed.
    assert "0 new, 0 changed, 409 not listed" in r.stdout
    snap = I.find("binance-usdm", "BTCUSDT", inst)
    assert snap.origin == str(files[0]) and snap.fees == I.fees_of("binance-usdm")
    bundled = resolve_instrument("binance-usdm", "BTCUSDT")
    assert resolve_instrument("binance-usdm", "BTCUSDT", directory=inst) == bundled
    assert I.find("binance-usdm", "ETHUSDT", inst).origin == "bundled"  # older snapshots still answer the rest
    listing = grinder("data", "instruments", "--symbol", "BTCUSDT", "--instruments", inst)
    assert listing.returncode == 0 and str(files[0]) in listing.stdout


def test_refresh_of_coin_m_from_a_local_server_makes_its_contracts_known(tmp_path, monkeypatch):
    rows = [dapi_row("BTCUSD_PERP", "0.1", 100), dapi_row("ETHUSD_PERP", "0.01", 10),
            dapi_row("BTCUSD_261225", "0.1", 100, kind="CURRENT_QUARTER"),
            dapi_row("XRPUSD_PERP", "0", 10)]  # fmt: skip
    inst = tmp_path / "inst"
    with Server({"/dapi/v1/exchangeInfo": exchange_info(rows, 1796659200000)}) as srv:
        r = grinder("data", "instruments", "--refresh", "--venue", "binance-coinm", "--url", srv.url,
                    "--instruments", inst)  # fmt: skip
    assert r.returncode == 0, r.stderr
    path = inst / "binance-coinm-20261207T160000000Z.toml"
    assert f"refreshed binance-coinm: 3 contracts as of 2026-12-07T16:00:00.000Z, written to {path}" in r.stdout
    assert "skipped 1: XRPUSD_PERP: tick size '0' is not a positive decimal" in r.stdout
    assert [p.name for p in inst.iterdir()] == [path.name]  # no temporary file left behind
    eth = resolve_instrument("binance-coinm", "ETHUSD_PERP", directory=inst)
    assert (eth.contract, eth.contract_size, eth.tick_size, eth.lot_size, eth.settle) == ("inverse", 10.0, 0.01, 1.0,
                                                                                           "ETH")  # fmt: skip
    assert (eth.maker_fee, eth.taker_fee) == (0.0002, 0.0005)  # the fee schedule carried over
    # An ingest of ETHUSD_PERP now needs no flags, and names the snapshot it took the rules from.
    monkeypatch.setenv("GRINDER_INSTRUMENTS", str(inst))
    capture = coinm_capture(tmp_path / "ethusd_perp_20240809.gz", "ETHUSD_PERP")
    r = grinder("data", "ingest", "binance", capture, "--venue", "binance-coinm", "--root", tmp_path / "lake",
                env={"GRINDER_INSTRUMENTS": str(inst)})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"contract size 10, settled in ETH, fees 0.0002/0.0005 from the binance-coinm snapshot of " \
           f"2026-12-07T16:00:00.000Z ({path})" in r.stdout  # fmt: skip
