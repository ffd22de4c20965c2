"""The HTML report of a portfolio run: portfolio equity and drawdown, each pick's budget and equity, the prefilter."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from grinder.io.atomic import write_atomic
from grinder.report.html import STYLE, _table
from grinder.report.sweep_html import _rows_table


def write_portfolio_report(folder: Path, feats: pd.DataFrame, eq: pd.DataFrame, summary: dict) -> Path:
    """Write folder/report.html (atomically); returns its path."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    x = pd.to_datetime(eq["ts"], unit="ns")
    picks = summary["picks"]
    cur = summary.get("settle") or ""
    fig = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.05,
                        subplot_titles=("Portfolio equity", "Portfolio drawdown", "Each pick at its allocated size",
                                        "Budgets"))  # fmt: skip
    fig.add_trace(go.Scatter(x=x, y=eq["portfolio_equity"], name="portfolio", line={"color": "#222"}), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=-eq["portfolio_drawdown"], name="drawdown", fill="tozeroy",
                             line={"color": "#c0392b"}), 2, 1)  # fmt: skip
    for sym in picks:
        fig.add_trace(go.Scatter(x=x, y=eq[f"{sym}_allocated"], name=f"{sym} allocated"), 3, 1)
        fig.add_trace(go.Scatter(x=x, y=eq[f"{sym}_full"], name=f"{sym} full size", line={"dash": "dot"}), 3, 1)
        fig.add_trace(go.Scatter(x=x, y=eq[f"{sym}_budget"], name=f"{sym} budget"), 4, 1)
    fig.update_layout(height=1100, margin={"t": 40})
    unit = f" ({cur})" if cur else ""
    for r, what in enumerate(("equity", "drawdown", "equity", "budget"), start=1):
        fig.update_yaxes(title_text=what + unit, row=r, col=1)
    fig.update_xaxes(title_text="time (UTC)", row=4, col=1)
    from grinder.report.plotlyjs import figure_div, plotly_script

    div = plotly_script([fig]) + figure_div(fig, "grinder-portfolio")
    facts = [
        ("strategy", summary["strategy"]),
        ("venue", summary["venue_name"]),
        ("candidates", ", ".join(summary["candidates"])),
        ("chosen (best first)", ", ".join(picks)),
        ("look-back (prefilter)", f"{summary['lookback_s']:g} s from {summary['start']}"),
        ("traded", f"{summary['trade_start']} -> {summary['end']}"),
        ("budget", f"{summary['budget']:,.2f} {cur}"),
        (
            "drawdown rule",
            f"budget falls linearly to {summary['rule']['floor']:g} of base at a drawdown of "
            f"{summary['rule']['max_drawdown']:g} x base",
        ),  # fmt: skip
        ("final portfolio equity", summary["equity"]),
        ("max portfolio drawdown", summary["max_drawdown"]),
        ("full-size equity (no allocation)", summary["full_size_equity"]),
        ("portfolio id", summary["portfolio_id"]),
    ]
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>portfolio {html.escape(summary['strategy'])}"
        f"</title><style>{STYLE}</style></head><body><h1>Portfolio of {html.escape(summary['strategy'])}</h1>"
        + _table(facts)
        + "<h2>Prefilter on the look-back</h2>"
        + _rows_table(feats)
        + div
        + "<p class='note'>Allocated equity scales each pick's full-size PnL increments by budget / base budget "
        "(docs/portfolio.md explains the approximation).</p></body></html>"
    )
    out = Path(folder) / "report.html"
    write_atomic(out, page)
    return out
