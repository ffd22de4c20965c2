"""deploy/prometheus: the alert rules pass promtool's check and unit tests (one test per alert), each alert links to a
runbook section that exists, and reads only metrics the adapter exports."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.conftest import REPO
from tests.deploy.conftest import binary
from tests.deploy.promql import exported_names, metric_names

PROM = REPO / "deploy" / "prometheus"
RULES = PROM / "grinder-alerts.yml"
RULE_TESTS = PROM / "grinder-alerts.test.yml"
RUNBOOK = REPO / "docs" / "runbook.md"
# Issue 22's list, by the names the rules give them.
REQUIRED = {"GrinderBudgetExhausted", "GrinderBreakerOpen", "GrinderBookStale", "GrinderNoLeader",
            "GrinderTwoLeaders", "GrinderPositionDrift", "GrinderQuantRuleNearLimit", "GrinderKillSwitchEngaged",
            "GrinderNoDecisions"}  # fmt: skip


def alerts() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary("promtool"), *args], capture_output=True, text=True, cwd=PROM, timeout=120)


def slug(heading: str) -> str:
    """A Markdown heading's anchor as GitHub makes it."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def runbook_sections() -> dict[str, str]:
    """{anchor: the section's text up to the next heading of any level}."""
    out, anchor, body = {}, None, []
    for line in RUNBOOK.read_text().splitlines():
        m = re.match(r"^#{1,6} (.+)$", line)
        if m:
            if anchor is not None:
                out[anchor] = "\n".join(body).strip()
            anchor, body = slug(m.group(1)), []
        else:
            body.append(line)
    if anchor is not None:
        out[anchor] = "\n".join(body).strip()
    return out


def test_the_rules_pass_promtools_check():
    r = promtool("check", "rules", RULES.name)
    assert r.returncode == 0 and f"SUCCESS: {len(alerts())} rules found" in r.stdout, r.stdout + r.stderr


def test_the_rules_pass_their_promtool_unit_tests():
    r = promtool("test", "rules", RULE_TESTS.name)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_the_example_prometheus_config_passes_promtools_check():
    r = promtool("check", "config", "prometheus.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_is_unit_tested_firing_and_not_firing():
    names = {a["alert"] for a in alerts()}
    assert REQUIRED <= names
    cases = [c for t in yaml.safe_load(RULE_TESTS.read_text())["tests"] for c in t["alert_rule_test"]]
    fired = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert fired == names and quiet == names


def test_every_alert_links_to_a_runbook_section_that_says_what_to_do():
    sections = runbook_sections()
    for a in alerts():
        link = a["annotations"]["runbook"]
        path, _, anchor = link.partition("#")
        assert path == "docs/runbook.md" and anchor in sections, (a["alert"], link)
        text = sections[anchor]
        assert anchor == a["alert"].lower(), link  # the section is headed by the alert's name
        assert re.search(r"^\d+\. ", text, re.M), f"{a['alert']}: the runbook section has no steps"
        assert a["labels"]["severity"] in ("page", "ticket") and a["annotations"]["summary"]


def test_the_alerts_read_only_metrics_the_adapter_exports(emulator_session):
    exported = exported_names(emulator_session.scrape())
    for a in alerts():
        names = metric_names(a["expr"])
        assert names and names <= exported, (a["alert"], names - exported)
