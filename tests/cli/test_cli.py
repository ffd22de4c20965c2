"""End-to-end tests of the `grinder` command: real process, real files, exit codes and messages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, write_capture


def grinder(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "grinder", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)  # fmt: skip


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    dst = tmp_path_factory.mktemp("sample") / "lake"
    shutil.copytree(REPO / "data" / "sample" / "lake", dst)
    return dst


def test_ls_and_check_on_bundled_sample(sample):
    r = grinder("data", "ls", "--root", sample)
    assert r.returncode == 0, r.stderr
    assert "BTCUSDT" in r.stdout and "445,174" in r.stdout and "21,313" in r.stdout
    r = grinder("data", "check", "--root", sample, "--symbol", "BTCUSDT")
    assert r.returncode == 0, r.stderr
    facts = json.loads(r.stdout.strip().splitlines()[-1])
    assert facts == {"events": 466_576, "crossed": 0, "bbo_checked": 629, "bbo_matched": 629}


def test_query_formats(sample):
    r = grinder("data", "query", "select side, count(*) as n from trades group by side order by side",
                "--root", sample, "--format", "csv")  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "side,n" and len(lines) == 3
    assert sum(int(x.split(",")[1]) for x in lines[1:]) == 21_313


def test_ingest_then_ls(real_lines, tmp_path):
    path = write_capture(tmp_path / "btcusdt_cli.gz", real_lines)
    root = tmp_path / "lake"
    r = grinder("data", "ingest", "binance", path, "--root", root)
    assert r.returncode == 0, r.stderr
    assert "ingested binance-usdm/BTCUSDT" in r.stdout
    assert "skipped" in r.stdout  # pre-snapshot diffs are reported, not silently dropped
    r = grinder("data", "ls", "--root", root)
    assert r.returncode == 0 and "BTCUSDT" in r.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["data", "ingest", "binance", "/nonexistent/btcusdt_x.gz"], "/nonexistent/btcusdt_x.gz: no such file"),
        (["data", "ingest", "binance", "{bad}"], "cannot tell the symbol"),
        (["data", "ingest", "binance", "{bad}", "--symbol", "DOGEUSDT"], "no built-in rules for binance-usdm/DOGEUSDT"),
        (["data", "ingest", "binance", "{bad}", "--symbol", "BTCUSDT", "--tick-size", "-1"], "invalid tick_size"),
        (["data", "ingest", "binance", "{bad}", "--symbol", "BTCUSDT"], "x.gz: corrupt or truncated gzip"),
        (["data", "ingest", "binance", "{bad}", "--symbol", "BTCUSDT", "--compression", "gzip"], "unknown compression"),
        (["data", "query", "select nope from book", "--root", "{sample}"], "query failed: Binder Error"),
        (["data", "ls", "--root", "{empty}"], "holds no data"),
        (["data", "check", "--symbol", "BTCUSDT", "--root", "{sample}", "--start", "yesterday"], "cannot read time"),
        (
            [
                "data",
                "check",
                "--symbol",
                "BTCUSDT",
                "--root",
                "{sample}",
                "--start",
                "2020-01-01",
                "--end",
                "2020-01-02",
            ],
            "no book or trade rows",
        ),  # fmt: skip
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, sample, tmp_path):
    bad = tmp_path / "x.gz"
    bad.write_bytes(b"\x1f\x8b\x08 not really gzip\n")
    subst = {"{bad}": str(bad), "{sample}": str(sample), "{empty}": str(tmp_path / "empty")}
    r = grinder(*[subst.get(a, a) for a in args])
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_malformed_file_reports_file_and_line(real_lines, tmp_path):
    lines = list(real_lines[:200])
    lines[120] = lines[120][:50] + b"\n"
    path = write_capture(tmp_path / "btcusdt_bad.gz", lines)
    r = grinder("data", "ingest", "binance", path, "--root", tmp_path / "lake")
    assert r.returncode == 2
    assert f"{path}:121: malformed JSON" in r.stderr
    assert not (tmp_path / "lake" / "book").exists()


def test_synth_then_check(tmp_path):
    root = tmp_path / "lake"
    r = grinder("data", "synth", "--events", "50000", "--seed", "3", "--root", root)
    assert r.returncode == 0, r.stderr
    assert "generated synthetic/SYNTHUSDT seed 3" in r.stdout
    r = grinder("data", "check", "--venue", "synthetic", "--symbol", "SYNTHUSDT", "--root", root)
    assert r.returncode == 0, r.stderr
    facts = json.loads(r.stdout.strip().splitlines()[-1])
    assert facts["crossed"] == 0 and facts["bbo_checked"] == facts["bbo_matched"] > 0
