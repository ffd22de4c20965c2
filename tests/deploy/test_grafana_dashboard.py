"""deploy/grafana: the dashboard's expressions name only metrics the adapter exports (a real scrape of an emulator
session), its panels use the provisioned datasource, and the provisioning files say where it goes."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import REPO
from tests.deploy.promql import exported_names, metric_names

GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "grinder-live.json"


def panels(dash: dict) -> list[dict]:
    """Every panel, those inside rows included, rows left out."""
    out = []
    for p in dash["panels"]:
        if p["type"] == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


def expressions(dash: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every templating query."""
    got = [(f"panel {p['title']!r} {t['refId']}", t["expr"]) for p in panels(dash) for t in p["targets"]]
    for v in dash["templating"]["list"]:
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        got.append((f"variable {v['name']}", q))
    return got


@pytest.mark.parametrize(
    "expr, names",
    [
        ('rate(grinder_decisions_total{strategy=~"$strategy"}[$__rate_interval])', {"grinder_decisions_total"}),
        ('histogram_quantile(0.99, sum by (le, strategy) (rate(x_bucket{stage="request"}[5m])))', {"x_bucket"}),
        ("a / on (rule) group_left b > 0.8 or c unless d offset 5m", {"a", "b", "c", "d"}),
        ('label_values(grinder_adapter_info{job=~"$job"}, strategy)', {"grinder_adapter_info"}),
        ("clamp_max(g, 1e-3) * 2.5e+2 + inf", {"g"}),
        ('sum without (reason) (increase(r{reason=~"a|b"}[5m])) > 0', {"r"}),
        ('{__name__="only_a_matcher"}', set()),
    ],
)
def test_the_expression_parser_finds_metric_names_only(expr, names):
    assert metric_names(expr) == names


def test_every_dashboard_expression_names_only_metrics_the_adapter_exports(emulator_session):
    exported = exported_names(emulator_session.scrape())
    assert "grinder_decision_latency_seconds_bucket" in exported and "grinder_decisions_total" in exported
    dash = json.loads(DASHBOARD.read_text())
    exprs = expressions(dash)
    assert len(exprs) >= 20
    for where, expr in exprs:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= exported, f"{where}: {sorted(names - exported)} not exported by the adapter"


def test_the_panels_use_the_provisioned_datasource_and_the_provider_has_a_folder():
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "grinder.yml").read_text())["datasources"]
    uids = {d["uid"] for d in ds if d["type"] == "prometheus"}
    dash = json.loads(DASHBOARD.read_text())
    ps = panels(dash)
    assert dash["uid"] and len({p["id"] for p in dash["panels"]}) == len(dash["panels"])  # ids unique
    for p in ps:
        assert p["datasource"]["uid"] in uids and all(t["datasource"]["uid"] in uids for t in p["targets"]), p["title"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "grinder.yml").read_text())["providers"]
    assert providers[0]["type"] == "file" and providers[0]["folder"] and providers[0]["options"]["path"]
