"""The HTML report of a sweep: what to decide (warning, baselines, in vs out of sample, parameter importance),
best sets in- vs out-of-sample, a heatmap, parallel coordinates, equity curves."""

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
            if v is None or (isinstance(v, float | np.floating) and np.isnan(v)):  # a figure a row does not have
                cells.append("<td></td>")
                continue
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
    figs = [f for f in (_in_out_figure(ranking, metric, summary), _importance_figure(summary)) if f is not None]
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
    show += [c for c in ("rules_ok", "qr_ufr_max", "qr_gtc_cancel_max", "qr_orders_1m_max") if c in ranking]
    show = list(dict.fromkeys(show))
    facts = [
        ("strategy", summary["strategy"]),
        ("market", f"{summary['selection']['venue']}/{summary['selection']['symbol']}"),
        ("parameter sets", summary["sets"]),
        ("windows", ", ".join(f"{w['name']} ({w['sample']})" for w in summary["windows"])),
        (
            "ranked by",
            f"{key} ({'lower' if summary['lower_is_better'] else 'higher'} is better)"
            + (", sets within Binance's quantitative rules first (--rules-ok)" if summary.get("rules_ok") else ""),
        ),
        ("sets within the quantitative rules", summary.get("sets_within_rules")),
        ("backtests", summary["backtests"]),
        ("seconds", summary["seconds"]),
    ]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        + html.escape(f"sweep {summary['strategy']}")
        + f"</title><style>{STYLE}</style></head><body>"
        + f"<h1>Sweep of {html.escape(summary['strategy'])} on {html.escape(summary['selection']['symbol'])}</h1>"
        + _table(facts)
        + _decision_html(summary)
        + f"<h2>Best {min(top, len(ranking))} sets, in-sample (_in) and out-of-sample (_out) side by side</h2>"
        + _rows_table(ranking[show].head(top))
        + "".join(parts)
        + "<p class='note'>Every set's metrics per window are in results.parquet; the ranking in ranking.parquet.</p>"
        + "</body></html>"
    )
    out = Path(folder) / "report.html"
    write_atomic(out, page)
    return out


def _decision_html(summary: dict) -> str:
    """The warning (every set lost money), the baselines and the in- vs out-of-sample table, from summary.json."""
    parts = []
    if summary.get("warning"):
        box = "color:#a00000;border:1px solid #a00000;padding:6px"
        parts.append(f"<p style='{box}'><b>Warning:</b> {html.escape(summary['warning'])}</p>")
    if summary.get("baselines"):
        parts.append("<h2>Against the baselines (same windows, venue and gates)</h2>")
        parts.append(_rows_table(pd.DataFrame(summary["baselines"])))
    if summary.get("in_vs_out"):
        parts.append("<h2>In sample against out of sample</h2>")
        parts.append("<p class='note'>spearman: rank correlation of the sets' in- and out-of-sample values; "
                     "positive: share of sets above 0; best_in_rank_out: the out-of-sample rank of the best "
                     "in-sample set.</p>")  # fmt: skip
        parts.append(_rows_table(pd.DataFrame(summary["in_vs_out"])))
    imp = {k: v for k, v in (summary.get("importance") or {}).items() if v}
    if imp:
        parts.append("<h2>Parameter importance (Optuna fANOVA, share of variance)</h2>")
        rows = [{"parameter": p, **{k: v.get(p) for k, v in imp.items()}} for p in dict.fromkeys(x for v in imp.values()
                                                                                               for x in v)]  # fmt: skip
        parts.append(_rows_table(pd.DataFrame(rows)))
    return "".join(parts)


def _in_out_figure(ranking: pd.DataFrame, metric: str, summary: dict):
    """Each set's in-sample against its out-of-sample value of the ranking metric, the baselines as markers."""
    import plotly.graph_objects as go

    a, b = f"{metric}_in", f"{metric}_out"
    if a not in ranking or b not in ranking:
        return None
    axes = summary["axes"]
    text = [", ".join(f"{x}={r[x]}" for x in axes) + f" (set {r['set']}, rank {r['rank']})"
            for r in ranking.to_dict(orient="records")]  # fmt: skip
    fig = go.Figure(go.Scatter(x=ranking[a], y=ranking[b], mode="markers", name="parameter sets", text=text,
                               marker={"color": ranking["rank"], "colorscale": "RdYlGn_r", "showscale": True,
                                       "colorbar": {"title": "rank"}}))  # fmt: skip
    for base in summary.get("baselines") or []:
        if base.get(a) is not None and base.get(b) is not None and not base["name"].startswith("best"):
            fig.add_trace(go.Scatter(x=[base[a]], y=[base[b]], mode="markers", name=base["name"],
                                     marker={"symbol": "x", "size": 12}))  # fmt: skip
    finite = pd.concat([ranking[a], ranking[b]]).replace([np.inf, -np.inf], np.nan).dropna()
    if len(finite):
        lo, hi = float(finite.min()), float(finite.max())
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="out = in",
                                 line={"dash": "dot", "color": "#888"}))  # fmt: skip
    fig.update_layout(title=f"{metric}: in sample against out of sample, one point per set", xaxis_title=a,
                      yaxis_title=b, height=480)  # fmt: skip
    return fig


def _importance_figure(summary: dict):
    """A bar per swept parameter: its share of the variance of the ranking key (and of its in-sample twin)."""
    import plotly.graph_objects as go

    imp = {k: v for k, v in (summary.get("importance") or {}).items() if v}
    if not imp:
        return None
    fig = go.Figure([go.Bar(x=list(v), y=list(v.values()), name=k) for k, v in imp.items()])
    fig.update_layout(title="Parameter importance (fANOVA)", yaxis_title="share of variance", barmode="group",
                      height=380)  # fmt: skip
    return fig
