"""A portfolio run's folder: summary.json, features.parquet, equity.parquet and report.html, written atomically."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pandas as pd

from grinder.portfolio.study import PortfolioRun
from grinder.sim.run_folder import atomic_folder


def portfolio_id(run: PortfolioRun) -> str:
    """sha256 over the picks' backtest digests and the allocated equity: identical runs, identical ids."""
    h = hashlib.sha256()
    for sym, r in run.results.items():
        h.update(f"{sym}:{r.digest}".encode())
    h.update(run.portfolio.equity.tobytes())
    return h.hexdigest()


def tables(run: PortfolioRun) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(features per candidate with its rank / exclusion, equity per grid time)."""
    ranks = {p.symbol: (i + 1, p.score) for i, p in enumerate(run.selection.ranked)}
    why = dict(run.selection.excluded)
    feats = pd.DataFrame([dataclasses.asdict(f) for f in run.features])
    feats["rank"] = [ranks.get(s, (None, None))[0] for s in feats["symbol"]]
    feats["score"] = [ranks.get(s, (None, None))[1] for s in feats["symbol"]]
    feats["chosen"] = feats["symbol"].isin(run.selection.symbols)
    feats["excluded_because"] = [why.get(s) for s in feats["symbol"]]
    eq = pd.DataFrame({"ts": run.grid_ns, "portfolio_equity": run.portfolio.equity,
                       "portfolio_drawdown": run.portfolio.drawdown})  # fmt: skip
    for j, sym in enumerate(run.results):
        eq[f"{sym}_full"] = run.full_equity[:, j]
        eq[f"{sym}_allocated"] = run.portfolio.symbol_equity[:, j]
        eq[f"{sym}_budget"] = run.portfolio.budgets[:, j]
    return feats, eq


def write_portfolio(out: Path, name: str, run: PortfolioRun, summary: dict, report: bool = True) -> Path:
    """Write `out/<UTC stamp>-<name>-<id[:8]>` atomically; returns its path."""
    with atomic_folder(out, name, summary["portfolio_id"]) as (tmp, folder):
        feats, eq = tables(run)
        feats.to_parquet(tmp / "features.parquet", index=False)
        eq.to_parquet(tmp / "equity.parquet", index=False)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        if report:
            from grinder.report.portfolio_html import write_portfolio_report

            write_portfolio_report(tmp, feats, eq, summary)
    return folder
