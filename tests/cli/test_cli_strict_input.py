"""Hostile input at the command line: one line naming the culprit, exit code 2, and nothing written."""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil

import pytest
from typer.testing import CliRunner

from grinder.cli.main import app
from tests.conftest import write_capture


def run(*args) -> tuple[int, str]:
    """Exit code and stderr of `grinder *args`, run in-process."""
    r = CliRunner().invoke(app, [str(a) for a in args])
    return r.exit_code, r.stderr + r.stdout


def one_line_error(code: int, output: str, message: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) == 1, output
    assert message in output, output


def tree(root) -> dict[str, str]:
    """Every file under root (hidden ones too), by relative path, with its content hash."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def lake_template(real_lines, tmp_path_factory):
    """A lake holding one good ingest of the first 300 lines of btcusdt_20240808."""
    d = tmp_path_factory.mktemp("good")
    root = d / "lake"
    code, output = run(
        "data", "ingest", "binance", write_capture(d / "btcusdt_good.gz", real_lines[:300]), "--root", root
    )
    assert code == 0, output
    return root


@pytest.fixture
def lake(lake_template, tmp_path):
    root = tmp_path / "lake"
    shutil.copytree(lake_template, root)
    return root


def _edit(lines, needle: bytes, pattern: bytes, repl: bytes):
    out = list(lines)
    i = next(k for k, line in enumerate(out) if needle in line and k > 60)
    out[i] = re.sub(pattern, repl, out[i], count=1)
    return out, i + 1


@pytest.mark.parametrize(
    ("needle", "pattern", "repl", "message"),
    [
        (b"@trade", rb'"p":"[^"]*"', b'"p":"6.18002e4"', "trade: exponent in number '6.18002e4'"),
        (b"@trade", rb'"p":"[^"]*"', b'"p":"6_1800.20"', "trade: '_' in number '6_1800.20'"),
        (b"@trade", rb'"p":"[^"]*"', '"p":"٦١٨٠٠.٢٠"'.encode(), "trade: non-ASCII character in number"),
        (b"@depth", rb'"b":\[\["[^"]*"', b'"b":[[61800.2', "depth level: JSON number 61800.2 where the venue sends"),
        (b"@trade", rb'"T":(\d+)', rb'"T":"\1"', "field 'T' is a string ('1723161256671'), not an integer"),
        (b"@trade", rb'"t":\d+', b'"t":9223372036854775808', "field 't' = 9223372036854775808 is outside 0 .. 2**63-1"),
        (b"@depth", rb',"pu":\d+', b"", "message lacks field 'pu'"),
        (b"@trade", rb'"T":\d+', b'"T":1000', "trade exchange time T (ms) 1000 is outside the sane range"),
        (b"@trade", rb'"T":\d+', b'"T":4102444800000', "trade exchange time T (ms) 4102444800000 is outside"),
        (b"@depth", rb'"b":\[', b'"b":[["99999.90","1.000"],', "book crossed: best bid >= best ask"),
    ],
)
def test_hostile_capture_is_one_line_exit_2_and_leaves_the_lake_as_it_was(
    real_lines, tmp_path, lake, needle, pattern, repl, message
):
    lines, ln = _edit(real_lines[:300], needle, pattern, repl)
    path = write_capture(tmp_path / "btcusdt_bad.gz", lines)
    before = tree(lake)
    code, output = run("data", "ingest", "binance", path, "--root", lake)
    one_line_error(code, output, f"{path}:{ln}: {message}")
    assert tree(lake) == before


def test_wrong_symbol_is_refused_and_leaves_the_lake_as_it_was(real_lines, tmp_path, lake):
    path = write_capture(tmp_path / "btcusdt_again.gz", real_lines[:300])
    before = tree(lake)
    code, output = run("data", "ingest", "binance", path, "--symbol", "ETHUSDT", "--root", lake)
    one_line_error(
        code,
        output,
        f"{path}:55: depth snapshot (which names no symbol) in a capture whose depth diffs are for BTCUSDT, "
        "none for ETHUSDT: is --symbol BTCUSDT meant?",
    )
    assert tree(lake) == before


# --- backtest settings: latencies and the config file ---------------------------------------------


STRATEGY = "[strategy]\nlevels = 2\ninterval = 1.0\nhalf_spread = 2.0\norder_qty = 0.1\nmax_position = 5.0\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--entry-latency-ms", "nan"], "--entry-latency-ms: nan is not a finite number of ms within int64 ns"),
        (["--entry-latency-ms", "inf"], "--entry-latency-ms: inf is not a finite number of ms within int64 ns"),
        (["--response-latency-ms", "-inf"], "--response-latency-ms: -inf is not a finite number of ms"),
        (["--step-ms", "1e300"], "--step-ms: 1e+300 is not a finite number of ms within int64 ns"),
    ],
)
def test_nan_or_inf_latency_option_is_one_line_exit_2(tmp_path, args, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(STRATEGY)
    code, output = run("backtest", "static_grid", "--config", cfg, *args, "--no-track", "--root", tmp_path / "no-lake")
    one_line_error(code, output, message)


@pytest.mark.parametrize(
    ("venue", "message"),
    [
        ("entry_latency_ns = 9223372036854775807", "venue: entry_latency_ns: Input should be less than or equal to"),
    ],
)
def test_huge_latency_in_the_config_is_one_line_exit_2(tmp_path, venue, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"{STRATEGY}[venue]\n{venue}\n")
    code, output = run("backtest", "static_grid", "--config", cfg, "--no-track", "--root", tmp_path / "no-lake")
    one_line_error(code, output, message)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("0,1e30,5", "latency column entry_ns has values beyond int64"),
        ("0,3600000000001,5", "latencies must not exceed an hour"),
    ],
)
def test_huge_latency_file_is_one_line_exit_2(tmp_path, rows, message):
    lat = tmp_path / "lat.csv"
    lat.write_text(f"ts,entry_ns,response_ns\n{rows}\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(STRATEGY)
    code, output = run(
        "backtest", "static_grid", "--config", cfg, "--latency-file", lat, "--no-track", "--root", tmp_path / "x"
    )
    one_line_error(code, output, f"{lat}: {message}")


def test_gzip_or_binary_config_is_one_line_exit_2(tmp_path):
    for name, data in (("c.toml.gz", gzip.compress(STRATEGY.encode())), ("c.bin", bytes(range(256)))):
        cfg = tmp_path / name
        cfg.write_bytes(data)
        code, output = run("backtest", "static_grid", "--config", cfg, "--no-track", "--root", tmp_path / "no-lake")
        one_line_error(code, output, f"{cfg}: not a TOML text file (not UTF-8: binary or compressed?)")
