"""The HTML report of a sweep: best sets in- vs out-of-sample, a heatmap, parallel coordinates, equity curves."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from grinder.io.atomic import write_atomic
from grinder.report.html import STYLE, _num, _table

BEST_CURVES = 5  # equity curves drawn per window: the best sets by the ranking


def _rows_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for _, r in df.iterrows():
        cells = []
        for v in r.tolist():
            num = isinstance(v, int | float | np.number) and not isinstance(v, bool)
            cells.append(f"<td class='num'>{_num(v)}</td>" if num else f"<td>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def write_sweep_report(folder: Path, study, summary: dict, top: int = 20) -> Path:
    """Write folder/report.html for a StudyResult (atomically); returns its path."""
    import plotly.graph_objects as go

    axes = summary["axes"]
    ranking: pd.DataFrame = study.ranking
    key = ranking.attrs.get("rank_key", f"{study.rank_by}_in")
    metric = study.rank_by
    figs = []
    # Heatmap of the ranking metric over the first two axes (the mean over the others).
    if len(axes) >= 2:
        a, b = axes[0], axes[1]
        piv = ranking.pivot_table(index=b, columns=a, values=key, aggfunc="mean")
        fig = go.Figure(go.Heatmap(z=piv.values, x=[str(x) for x in piv.columns], y=[str(y) for y in piv.index],
                                   colorscale="RdYlGn", colorbar={"title": key}))  # fmt: skip
        fig.update_layout(title=f"{key} by {a} and {b}", xaxis_title=a, yaxis_title=b, height=480)
        figs.append(fig)
    elif axes:
        a = axes[0]
        fig = go.Figure()
        for col in (f"{metric}_in", f"{metric}_out"):
            if col in ranking:
                s = ranking.sort_values(a)
                fig.add_trace(go.Scatter(x=s[a], y=s[col], mode="lines+markers", name=col))
        fig.update_layout(title=f"{metric} by {a}", xaxis_title=a, height=420)
        figs.append(fig)
    numeric_axes = [x for x in axes if pd.api.types.is_numeric_dtype(ranking[x])]
    if numeric_axes:
        dims = [{"label": x, "values": ranking[x]} for x in numeric_axes]
        dims.append({"label": key, "values": ranking[key].fillna(ranking[key].min())})
        fig = go.Figure(go.Parcoords(line={"color": ranking[key].fillna(ranking[key].min()), "colorscale": "RdYlGn",
                                           "showscale": True}, dimensions=dims))  # fmt: skip
        fig.update_layout(title="Every parameter set (parallel coordinates)", height=460)
        figs.append(fig)
    best = ranking["set"].head(BEST_CURVES).tolist()
    for name, (grid_ns, equity) in study.equity.items():
        fig = go.Figure()
        x = pd.to_datetime(grid_ns, unit="ns")
        for s in best:
            label = ", ".join(f"{a}={ranking.loc[ranking['set'] == s, a].iloc[0]}" for a in axes)
            fig.add_trace(go.Scatter(x=x, y=equity[:, s], mode="lines", name=f"set {s}: {label}"))
        fig.update_layout(title=f"Equity of the best {len(best)} sets, window {name}", height=380,
                          yaxis_title=summary.get("settle", ""))  # fmt: skip
        figs.append(fig)
    parts = []
    for k, fig in enumerate(figs):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(k == 0), div_id=f"grinder-sweep-{k}",
                                 config={"displaylogo": False}))  # fmt: skip
    shown_metrics = (f"{metric}_", "equity_", "max_drawdown_", "sharpe_", "fills_")
    show = ["rank", "set", *axes] + [c for c in ranking.columns if c.startswith(shown_metrics)]
    show = list(dict.fromkeys(show))
    facts = [
        ("strategy", summary["strategy"]),
        ("market", f"{summary['selection']['venue']}/{summary['selection']['symbol']}"),
        ("parameter sets", summary["sets"]),
        ("windows", ", ".join(f"{w['name']} ({w['sample']})" for w in summary["windows"])),
        ("ranked by", f"{key} ({'lower' if summary['lower_is_better'] else 'higher'} is better)"),
        ("backtests", summary["backtests"]),
        ("seconds", summary["seconds"]),
    ]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        + html.escape(f"sweep {summary['strategy']}")
        + f"</title><style>{STYLE}</style></head><body>"
        + f"<h1>Sweep of {html.escape(summary['strategy'])} on {html.escape(summary['selection']['symbol'])}</h1>"
        + _table(facts)
        + f"<h2>Best {min(top, len(ranking))} sets, in-sample (_in) and out-of-sample (_out) side by side</h2>"
        + _rows_table(ranking[show].head(top))
        + "".join(parts)
        + "<p class='note'>Every set's metrics per window are in results.parquet; the ranking in ranking.parquet.</p>"
        + "</body></html>"
    )
    out = Path(folder) / "report.html"
    write_atomic(out, page)
    return out
