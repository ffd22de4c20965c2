"""`grinder venue serve`: serves the sample over loopback, refuses missing credentials, stops on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request

from tests.conftest import REPO

SAMPLE = REPO / "data" / "sample" / "lake"


def test_serve_answers_then_stops_cleanly_on_sigterm():
    env = {**os.environ, "GRINDER_VENUE_API_KEY": "k", "GRINDER_VENUE_SECRET": "s"}
    p = subprocess.Popen([sys.executable, "-m", "grinder", "venue", "serve", "--root", str(SAMPLE), "--speed", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)  # fmt: skip
    try:
        line = p.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert m, line + p.stderr.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/fapi/v1/exchangeInfo", timeout=10) as r:
            assert json.load(r)["symbols"][0]["symbol"] == "BTCUSDT"
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 0
        assert "stopping" in p.stdout.read()
    finally:
        if p.poll() is None:
            p.kill()


def test_serve_without_credentials_is_one_line_and_exit_2():
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRINDER_VENUE_")}
    r = subprocess.run([sys.executable, "-m", "grinder", "venue", "serve", "--root", str(SAMPLE)],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "GRINDER_VENUE_API_KEY" in r.stderr and "Traceback" not in r.stderr
