"""One error hierarchy: every kind is a GrinderError, says where in one line, and ends a command with exit 2."""

from __future__ import annotations

import ast
import socket

import pytest
from typer.testing import CliRunner

from grinder.cli.main import app
from grinder.errors import ConfigError, DataError, GrinderError, LiveError, TrackingError, VenueError
from grinder.live.shutdown import DeadManLost
from grinder.live.venue_watch import EXIT_VENUE_DOWN, VenueDown
from tests.conftest import REPO

KINDS = (DataError, ConfigError, TrackingError, VenueError, LiveError)
STATIC_GRID = ["--param", "half_spread=2", "--param", "order_qty=0.1", "--param", "max_position=5"]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_every_kind_is_a_grinder_error_with_exit_code_2(kind):
    assert issubclass(kind, GrinderError) and issubclass(kind, Exception)
    assert kind.exit_code == 2 and kind("x").exit_code == 2
    assert not any(issubclass(kind, other) for other in KINDS if other is not kind)  # siblings, not layers


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_the_message_names_path_and_line_in_one_line(kind):
    e = kind("bad tick_size", "conf/live.toml", 12)
    assert str(e) == "conf/live.toml:12: bad tick_size"
    assert (e.message, e.path, e.line) == ("bad tick_size", "conf/live.toml", 12)
    assert str(kind("missing", "runs/a/summary.json")) == "runs/a/summary.json: missing"
    assert str(kind("no values")) == "no values"
    with pytest.raises(GrinderError, match=r"^a\.csv:3: bad$"):
        raise kind("bad", "a.csv", 3)


def test_a_session_the_venue_ended_is_a_venue_error_with_exit_code_3():
    for cls in (VenueDown, DeadManLost):
        assert issubclass(cls, VenueError)
        assert cls.exit_code == EXIT_VENUE_DOWN == 3 and cls("gone").exit_code == 3


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data_error(tmp_path):
    return ["data", "check", "--root", tmp_path / "lake", "--symbol", "DOGEUSDT"], "no data for binance-usdm/DOGEUSDT"


def _config_error(tmp_path):
    args = ["backtest", "static_grid", "--param", "bogus=1", "--no-track", "--root", tmp_path / "lake",
            "--out", tmp_path / "runs"]  # fmt: skip
    return args, "unknown parameter(s) bogus for strategy static_grid"


def _tracking_error(tmp_path):
    r = CliRunner().invoke(app, ["data", "synth", "--events", "3000", "--root", str(tmp_path / "lake")])
    assert r.exit_code == 0, r.output
    store = tmp_path / "mlruns"
    store.write_text("")  # a file where the store's folder should be
    args = ["sweep", "run", "static_grid", "--grid", "interval=1,2", *STATIC_GRID, "--venue", "synthetic",
            "--symbol", "SYNTHUSDT", "--root", tmp_path / "lake", "--mlruns", store, "--min-events", "1",
            "--workers", "1", "--no-report", "--out", tmp_path / "sweeps"]  # fmt: skip
    return args, "cannot open the MLflow store"


def _venue_error(tmp_path):
    args = ["record", "--symbol", "BTCUSDT", "--api-url", f"http://127.0.0.1:{_closed_port()}", "--seconds", "1",
            "--out", tmp_path / "raw", "--no-ingest"]  # fmt: skip
    return args, "cannot reach the venue at http://127.0.0.1:"


def _live_error(tmp_path):
    config = tmp_path / "live.toml"
    config.write_text(f'strategy = "static_grid"\nsymbol = "BTCUSDT"\nmode = "paper"\n'
                      f'state_dir = "{tmp_path / "no-state"}"\n[params]\n')  # fmt: skip
    return ["live", "kill", "--config", config], "no such state folder"


@pytest.mark.parametrize(
    ("kind", "case"),
    [(DataError, _data_error), (ConfigError, _config_error), (TrackingError, _tracking_error),
     (VenueError, _venue_error), (LiveError, _live_error)],
    ids=lambda x: x.__name__,
)  # fmt: skip
def test_each_kind_ends_a_command_with_exit_2_and_one_error_line(tmp_path, kind, case):
    args, message = case(tmp_path)
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.stderr + r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    raised = r.exception  # SystemExit <- typer's Exit <- the error the command raised
    while raised is not None and not isinstance(raised, GrinderError):
        raised = raised.__context__
    assert type(raised) is kind, repr(raised)


def test_no_module_defines_a_kind_of_its_own():
    names = {"GrinderError", *(k.__name__ for k in KINDS)}
    found = []
    for top in ("grinder", "live", "strategies"):
        for path in sorted((REPO / top).rglob("*.py")):
            if path == REPO / "grinder" / "errors.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, ast.ClassDef) and node.name in names:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: class {node.name}")
    assert found == []
