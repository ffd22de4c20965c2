"""`grinder sweep --rules-ok` on the sample: sets that broke Binance's quantitative rules rank last and are marked."""

from __future__ import annotations

import json

import pandas as pd

from tests.cli.test_cli import SWEEP, grinder, sample  # noqa: F401 - the sample lake fixture


def sweep(sample, out, *extra):  # noqa: F811
    r = grinder("sweep", "static_grid", "--root", sample, *SWEEP, "--train", "0.6", "--no-track", "--rank-by",
                "fills", "--out", out, *extra)  # fmt: skip
    assert r.returncode == 0, r.stderr
    folder = next(out.iterdir())
    return r, json.loads((folder / "summary.json").read_text()), pd.read_parquet(folder / "ranking.parquet"), folder


def test_rules_ok_ranks_the_sets_within_the_rules_first_and_marks_the_others(sample, tmp_path):  # noqa: F811
    _, plain, by_fills, _ = sweep(sample, tmp_path / "plain")
    # Without the gate, a 1 s grid sends more than the venue's 300 orders in 10 s on the sample.
    assert not by_fills["rules_ok"].all() and by_fills["rules_ok"].any()
    assert (by_fills["qr_orders_10s_max"] > 300).tolist() == (~by_fills["rules_ok"].astype(bool)).tolist()
    assert by_fills["rules_ok"].iloc[0] == False  # noqa: E712 - by fills alone a breaching set is best
    r, summary, ranked, folder = sweep(sample, tmp_path / "ok", "--rules-ok")
    ok = ranked["rules_ok"].astype(bool).tolist()
    assert ok == sorted(ok, reverse=True) and summary["sets_within_rules"] == sum(ok) == plain["sets_within_rules"]
    top = [x for x in r.stdout.splitlines() if x.strip().startswith("#")]
    assert ["breaks the quantitative rules" in x for x in top] == [not x for x in ok]
    assert "<th>rules_ok</th>" in (folder / "report.html").read_text()


def test_with_the_rules_gate_on_every_set_keeps_the_rules(sample, tmp_path):  # noqa: F811
    cfg = tmp_path / "gates.toml"
    cfg.write_text("[gates]\nquant_rules = true\n")
    _, summary, ranked, _ = sweep(sample, tmp_path / "gated", "--rules-ok", "--config", cfg)
    assert summary["sets_within_rules"] == len(ranked) == 4
    assert (ranked["qr_orders_10s_max"] <= 300 * 0.95).all()  # the gate stops at the margin
