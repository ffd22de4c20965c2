"""A first session: the README's two commands and the shipped example config trade and stop clean; a dead venue ends it.

The commands are read from README.md and the config from deploy/live-emulator.toml as shipped; only the
port (a free one) and the state folder (a temporary one) are swapped, so the test fails when either
stops working as written.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from grinder.live.client import GrinderBinance, client_options
from tests.conftest import REPO
from tests.live.test_live_cli import events, wait_for
from tests.venue.test_serve_cli import free_port, procs  # noqa: F401 - procs is a fixture
from tests.venue.test_server import SYMBOL

EXAMPLE = REPO / "deploy" / "live-emulator.toml"


def readme_command(program: str) -> tuple[dict, list[str]]:
    """(environment, argv) of the README's shell line running `grinder <program> ...`, as a process here runs it."""
    lines = [x for x in (REPO / "README.md").read_text().splitlines() if f"bin/grinder {program} " in x]
    assert len(lines) == 1, lines
    words = shlex.split(lines[0])
    env = {}
    while "=" in words[0]:
        k, v = words.pop(0).split("=", 1)
        env[k] = v
    assert words[0] == ".venv/bin/grinder", words
    return env, [sys.executable, "-m", "grinder", *words[1:]]


def swapped(argv: list[str], option: str, value: str) -> list[str]:
    i = argv.index(option)
    return [*argv[: i + 1], value, *argv[i + 2 :]]


def example_config(tmp_path: Path, port: int, replace: dict | None = None) -> tuple[Path, Path]:
    """The shipped example, the port and the state folder swapped (and the lines in `replace`); (path, state)."""
    text = EXAMPLE.read_text()
    state = tmp_path / "state"
    lines = {'api_url = "http://127.0.0.1:8765"': f'api_url = "http://127.0.0.1:{port}"',
             'state_dir = "live_state/emulator"': f'state_dir = "{state}"', **(replace or {})}  # fmt: skip
    for old, new in lines.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / "live.toml"
    path.write_text(text)
    return path, state


def open_orders(port: int, key: str, secret: str) -> list[str]:
    async def go():
        ex = GrinderBinance(client_options(f"http://127.0.0.1:{port}", key, secret))
        try:
            return sorted(o["clientOrderId"] for o in await ex.fetch_open_orders(SYMBOL))
        finally:
            await ex.close()

    return asyncio.run(go())


def start_venue(procs: list, port: int) -> subprocess.Popen:  # noqa: F811
    env, argv = readme_command("venue serve")
    argv = swapped(argv, "--port", str(port))  # 8765 may be taken on this machine
    venue = subprocess.Popen(argv, env={**os.environ, **env}, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)  # fmt: skip
    procs.append(venue)
    line = venue.stdout.readline()
    assert f"127.0.0.1:{port}" in line, line + venue.stderr.read()
    return venue


def start_live(procs: list, config: Path) -> subprocess.Popen:  # noqa: F811
    env, argv = readme_command("live")
    argv = swapped(argv, "--config", str(config))
    live = subprocess.Popen(argv, env={**os.environ, **env}, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    procs.append(live)
    return live


def test_the_readme_commands_with_the_example_config_trade_and_stop_clean(tmp_path, procs):  # noqa: F811
    port = free_port()
    venue = start_venue(procs, port)
    config, state = example_config(tmp_path, port)
    live = start_live(procs, config)
    wait_for(lambda: sum(e["event"] == "created" for e in events(state)) >= 4 or live.poll() is not None, 90.0)
    assert live.poll() is None, live.stderr.read()
    live.send_signal(signal.SIGTERM)
    assert live.wait(60) == 0, live.stderr.read()
    got = events(state)
    kinds = [e["event"] for e in got]
    assert kinds[:2] == ["run_folder", "start"] and kinds[-1] == "stop" and "venue_down" not in kinds
    created = [e for e in got if e["event"] == "created"]
    assert {e["side"] for e in got if e["event"] == "create"} == {"buy", "sell"} and len(created) >= 4
    env, _ = readme_command("live")
    assert open_orders(port, env["GRINDER_API_KEY"], env["GRINDER_API_SECRET"]) == []  # every order cancelled
    assert "stopped:" in live.stdout.read()
    venue.send_signal(signal.SIGTERM)
    assert venue.wait(30) == 0


def test_a_venue_that_dies_mid_session_ends_it_with_exit_3_after_venue_down_exit_s(tmp_path, procs):  # noqa: F811
    port = free_port()
    venue = start_venue(procs, port)
    config, state = example_config(tmp_path, port, {"venue_down_exit_s = 120": "venue_down_exit_s = 3"})
    live = start_live(procs, config)
    wait_for(lambda: sum(e["event"] == "created" for e in events(state)) >= 2 or live.poll() is not None, 90.0)
    assert live.poll() is None, live.stderr.read()
    venue.send_signal(signal.SIGTERM)  # gone: sockets closed, connections refused from now on
    assert venue.wait(30) == 0
    code = live.wait(120)
    err = live.stderr.read()
    assert code == 3, err
    # One line saying why (the last), after the one live.shutdown writes when orders of ours may be left on the dead
    # venue (exit 3, the cause, over its 4).
    said = err.strip().splitlines()
    assert "Traceback" not in err and 1 <= len(said) <= 2 and all(x.startswith("error: ") for x in said), err
    assert "down for" in said[-1] and "venue_down_exit_s = 3" in said[-1]
    got = events(state)
    kinds = [e["event"] for e in got]
    assert kinds[-1] == "stop" and kinds.count("venue_down") == 1
    down = got[kinds.index("venue_down")]
    assert down["silent_s"] >= 3 and down["venue_down_exit_s"] == 3  # not before the limit
    assert kinds.index("venue_down") > max(i for i, k in enumerate(kinds) if k == "created")
