"""An emulator session as processes (`grinder venue serve`, `grinder live` with a metrics port), shared by the
deploy/ tests, and the Prometheus binaries they need.

The adapter's daily budget is tiny (`max_actions_per_day`), so it runs out within seconds: the budget alert's
condition, forced (tests/deploy/test_prometheus_scrape.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.live.test_live_cli import config, events, serve, start, wait_for

TINY_BUDGET = 12  # order actions per day: the first grids and their cancels use it up


def binary(name: str) -> str:
    """The path of a Prometheus binary; skipped where it is missing, but never on CI (.ci/run installs it)."""
    path = shutil.which(name)
    if path is None:
        why = f"{name} is not installed (apt-get install prometheus; .ci/run does it on CI)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return path


@dataclass
class Session:
    """A running emulator and adapter: their ports, the adapter's state folder and processes."""

    venue_port: int
    metrics_port: int
    state: Path
    venue: subprocess.Popen
    live: subprocess.Popen

    def scrape(self, port: int | None = None) -> str:
        """GET /metrics of the adapter (or of the process on `port`)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{port or self.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()


@pytest.fixture(scope="package")
def emulator_session(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("session")
    running: list[subprocess.Popen] = []
    try:
        venue_port = serve(running, "--loop", "--port", "0")
        venue = running[-1]
        cfg, state = config(tmp, venue_port, f"step_ms = 100\nreconcile_s = 2\nmetrics_port = 0\n"
                                              f"max_actions_per_day = {TINY_BUDGET}\n"
                                              "params = { levels = 3, interval = 0.5, half_spread = 0.1, "
                                              "order_qty = 0.002, max_position = 0.01 }\n")  # fmt: skip
        live = start("live", "--config", str(cfg))
        running.append(live)
        serving = wait_for(lambda: [e for e in events(state) if e["event"] == "metrics_serving"] or live.poll(), 60)
        assert live.poll() is None, live.stderr.read()
        session = Session(venue_port, serving[0]["port"], state, venue, live)
        wait_for(lambda: any(e["event"] == "created" for e in events(state)) or live.poll() is not None, 60)
        assert live.poll() is None, live.stderr.read()
        yield session
        live.send_signal(signal.SIGTERM)
        assert live.wait(60) == 0, live.stderr.read()
        assert (state / "metrics.prom").is_file()  # the run's last figures, written at stop
        venue.send_signal(signal.SIGTERM)
        assert venue.wait(30) == 0
    finally:
        for p in running:
            if p.poll() is None:
                p.kill()
                p.wait()
