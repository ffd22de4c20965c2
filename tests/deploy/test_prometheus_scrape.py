"""A real Prometheus (Debian's) scrapes an adapter session against the emulator, and the budget alert fires.

Prometheus runs on loopback with a temporary config and storage, a 1 s scrape and evaluation interval, the shipped
rules with the budget alert's `for` cut to 1 s, scraping the adapter's and the emulator's /metrics. The adapter's
daily budget is tiny (tests/deploy/conftest.py), so it runs out within seconds: the alert's condition, forced.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from tests.deploy.conftest import binary
from tests.deploy.test_prometheus_rules import RULES, alerts
from tests.venue.test_serve_cli import free_port

FORCED = "GrinderBudgetExhausted"


def api(base: str, path: str, **params) -> dict:
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]


def until(pred, timeout_s: float, what: str):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        got = pred()
        if got:
            return got
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


@pytest.fixture
def prometheus(tmp_path, emulator_session):
    """Prometheus on a free loopback port scraping the session; terminated (only it) at the end."""
    exe = binary("prometheus")
    rules = yaml.safe_load(RULES.read_text())
    for g in rules["groups"]:
        for r in g["rules"]:
            if r.get("alert") == FORCED:
                r["for"] = "1s"  # the shipped 1m does not fit a test
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    s = emulator_session
    cfg = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "scrape_configs": [
            {"job_name": "grinder-live", "static_configs": [{"targets": [f"127.0.0.1:{s.metrics_port}"]}]},
            {"job_name": "grinder-venue", "static_configs": [{"targets": [f"127.0.0.1:{s.venue_port}"]}]},
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen([exe, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                             "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
        try:
            with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        until(ready, 30, "Prometheus to be ready")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_prometheus_scrapes_the_adapter_and_the_emulator_and_the_budget_alert_fires(prometheus, emulator_session):
    def value(query: str) -> float | None:
        res = api(prometheus, "/api/v1/query", query=query)["result"]
        return float(res[0]["value"][1]) if res else None

    # The series arrive: both targets up, the adapter deciding, the venue taking orders.
    until(lambda: value('up{job="grinder-live"}') == 1 and value('up{job="grinder-venue"}') == 1, 30, "both targets up")
    until(lambda: (value('grinder_decisions_total{strategy="static_grid",symbol="BTCUSDT"}') or 0) > 0, 30,
          "decisions")  # fmt: skip
    assert value('grinder_is_leader{job="grinder-live"}') == 1
    assert value('grinder_venue_orders_accepted_total{job="grinder-venue",symbol="BTCUSDT"}') >= 1
    names = {r["metric"]["__name__"] for r in api(prometheus, "/api/v1/query", query='{job="grinder-live"}')["result"]}
    assert {"grinder_budget_actions_remaining", "grinder_decision_latency_seconds_bucket",
            "grinder_orders_rejected_total", "grinder_quant_rule_ratio", "grinder_kill_switch_engaged",
            "process_cpu_seconds_total"} <= names  # fmt: skip

    # Every rule loaded and evaluated without error.
    groups = api(prometheus, "/api/v1/rules")["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(loaded) == {a["alert"] for a in alerts()}
    until(lambda: all(r.get("health") == "ok" for g in api(prometheus, "/api/v1/rules")["groups"] for r in g["rules"]),
          15, "every rule evaluated")  # fmt: skip

    # The tiny budget runs out: the alert fires with the adapter's labels, and it is the only one.
    def firing() -> list[dict]:
        return [a for a in api(prometheus, "/api/v1/alerts")["alerts"] if a["state"] == "firing"]

    fired = until(lambda: [a for a in firing() if a["labels"]["alertname"] == FORCED], 30, f"{FORCED} to fire")
    labels = fired[0]["labels"]
    assert (labels["strategy"], labels["symbol"], labels["job"], labels["severity"]) == (
        "static_grid", "BTCUSDT", "grinder-live", "page")  # fmt: skip
    assert fired[0]["annotations"]["runbook"] == "docs/runbook.md#grinderbudgetexhausted"
    assert value('grinder_budget_actions_remaining{job="grinder-live"}') == 0
    assert {a["labels"]["alertname"] for a in firing()} == {FORCED}
