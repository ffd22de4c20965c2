"""The HTML report of a sweep: what to decide (warning, baselines, in vs out of sample, parameter importance),
best sets in- vs out-of-sample, each set's range over the windows, links to the best sets' runs, a heatmap,
parallel coordinates, equity curves."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from grinder.io.atomic import write_atomic
from grinder.report.html import STYLE, _num, _table

BEST_CURVES = 5  # equity curves drawn per window: the best sets by the ranking
BEST_RUNS = 5  # sets listed with links to their run folders
RANGE_SETS = 20  # sets drawn in the figure of ranges over the windows
RUNS_BEGIN, RUNS_END = "<!-- grinder:best-runs -->", "<!-- /grinder:best-runs -->"
MONEY = frozenset({"equity", "realized", "unrealized", "fees", "funding_paid", "max_drawdown"})
COUNTS = frozenset({"fills", "placed", "cancelled", "rejected", "expired", "blocked"})


def metric_label(metric: str, summary: dict, suffix: str = "") -> str:
    """A metric with its unit, for an axis: "equity, out of sample (USDT)"; `suffix` after the name."""
    name = metric + suffix
    if metric in MONEY:
        return f"{name} ({summary.get('settle') or 'settle currency'})"
    if metric in COUNTS:
        return f"{name} (count)"
    if metric == "sharpe":
        return f"{name} (annualised, no unit)"
    if metric == "return_over_drawdown":
        return f"{name} (equity / max drawdown)"
    if metric == "position":
        from grinder.report.load import assets_of

        return f"{name} ({assets_of(summary)[0]})"
    return name


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
    return f"<div style='overflow-x:auto'><table><tr>{head}</tr>{''.join(body)}</table></div>"


def write_sweep_report(folder: Path, study, summary: dict, top: int = 20, run_ids: dict | None = None) -> Path:
    """Write folder/report.html for a StudyResult (atomically); returns its path.

    `run_ids` maps a run folder's name under folder/best to its MLflow run id, for the best sets' links
    (`link_best_runs` redoes that section once the child runs exist).
    """
    import plotly.graph_objects as go

    from grinder.report.plotlyjs import figure_div, plotly_script

    axes = summary["axes"]
    ranking: pd.DataFrame = study.ranking
    key = ranking.attrs.get("rank_key", f"{study.rank_by}_in")
    metric = study.rank_by
    key_label = metric_label(metric, summary, key.removeprefix(metric))
    in_out = _in_out_figure(ranking, metric, summary)
    ranges, ranges_note = _ranges_figure(study.results, ranking, metric, summary)
    figs = [f for f in (_importance_figure(summary),) if f is not None]
    # Heatmap of the ranking metric over the first two axes (the mean over the others).
    if len(axes) >= 2:
        a, b = axes[0], axes[1]
        piv = ranking.pivot_table(index=b, columns=a, values=key, aggfunc="mean")
        fig = go.Figure(go.Heatmap(z=piv.values, x=[str(x) for x in piv.columns], y=[str(y) for y in piv.index],
                                   colorscale="RdYlGn", colorbar={"title": key_label}))  # fmt: skip
        fig.update_layout(title=f"{key} by {a} and {b} (mean over the other parameters)", xaxis_title=a,
                          yaxis_title=b, height=480)  # fmt: skip
        figs.append(fig)
    elif axes:
        a = axes[0]
        fig = go.Figure()
        for col in (f"{metric}_in", f"{metric}_out"):
            if col in ranking:
                s = ranking.sort_values(a)
                fig.add_trace(go.Scatter(x=s[a], y=s[col], mode="lines+markers", name=col))
        fig.update_layout(title=f"{metric} by {a}", xaxis_title=a, yaxis_title=metric_label(metric, summary),
                          height=420)  # fmt: skip
        figs.append(fig)
    numeric_axes = [x for x in axes if pd.api.types.is_numeric_dtype(ranking[x])]
    if numeric_axes:
        dims = [{"label": x, "values": ranking[x]} for x in numeric_axes]
        dims.append({"label": key_label, "values": ranking[key].fillna(ranking[key].min())})
        fig = go.Figure(go.Parcoords(line={"color": ranking[key].fillna(ranking[key].min()), "colorscale": "RdYlGn",
                                           "showscale": True}, dimensions=dims))  # fmt: skip
        fig.update_layout(title="Every parameter set (parallel coordinates)", height=460)
        figs.append(fig)
    best = ranking["set"].head(BEST_CURVES).tolist()
    for name, (grid_ns, equity) in study.equity.items():
        fig = go.Figure()
        x = np.asarray(grid_ns) / 1e6  # ms since the epoch on a date axis: compact in the page (not date strings)
        for s in best:
            fig.add_trace(go.Scatter(x=x, y=equity[:, s], mode="lines", name=f"set {s}: {_params(ranking, axes, s)}"))
        fig.update_layout(title=f"Equity of the best {len(best)} sets, window {name}", height=380,
                          xaxis={"title": "time (UTC)", "type": "date"},
                          yaxis_title=metric_label("equity", summary))  # fmt: skip
        figs.append(fig)
    ids = iter(range(1_000))  # fixed div ids: identical input, identical page
    parts = [figure_div(fig, f"grinder-sweep-{next(ids)}") for fig in figs]
    all_figs = [f for f in (in_out, ranges) if f is not None] + figs
    if in_out is not None:
        in_out_html = figure_div(in_out, f"grinder-sweep-{next(ids)}")
    else:
        in_out_html = ("<h2>In sample against out of sample</h2><p class='note'>This sweep has no out-of-sample "
                       "window (no --train or --walk-forward): every window is in sample, so there is no in- against "
                       "out-of-sample comparison. The ranking uses the in-sample means.</p>")  # fmt: skip
    ranges_html = "<h2>Each set over its windows</h2>"
    if ranges is not None:
        ranges_html += figure_div(ranges, f"grinder-sweep-{next(ids)}")
    ranges_html += f"<p class='note'>{html.escape(ranges_note)}</p>"
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
        + f"</title><style>{STYLE}</style>"
        + plotly_script(all_figs)
        + "</head><body>"
        + f"<h1>Sweep of {html.escape(summary['strategy'])} on {html.escape(summary['selection']['symbol'])}</h1>"
        + _table(facts)
        + _decision_html(summary)
        + in_out_html
        + f"<h2>Best {min(top, len(ranking))} sets, in-sample (_in) and out-of-sample (_out) side by side</h2>"
        + _rows_table(ranking[show].head(top))
        + ranges_html
        + best_runs_html(Path(folder), ranking, axes, summary.get("sweep_id"), run_ids)
        + "".join(parts)
        + "<p class='note'>Every set's metrics per window are in results.parquet; the ranking in ranking.parquet.</p>"
        + "</body></html>"
    )
    out = Path(folder) / "report.html"
    write_atomic(out, page)
    return out


def _params(ranking: pd.DataFrame, axes: list[str], set_no: int) -> str:
    """A set's swept values, "a=1, b=2"."""
    row = ranking.loc[ranking["set"] == set_no]
    return ", ".join(f"{a}={row[a].iloc[0]}" for a in axes) if len(row) else ""


def _ranges_figure(results: pd.DataFrame, ranking: pd.DataFrame, metric: str, summary: dict):
    """(figure or None, note): the best sets' ranking metric in each window, per sample: every window's value, and
    the mean with a bar from the lowest to the highest window. None when no sample has two windows to compare."""
    import plotly.graph_objects as go

    need = {"set", "window", "sample", metric}
    if results is None or not need <= set(results.columns) or results.empty:
        return None, "results.parquet holds no per-window values of the ranking metric for this report."
    rows = results[["set", "window", "sample", metric]].replace([np.inf, -np.inf], np.nan)
    per_sample = rows.groupby("sample")["window"].nunique()
    if per_sample.max() < 2:
        return None, (f"One window per sample ({', '.join(f'{k}: {v}' for k, v in per_sample.items())}): no range "
                      "across windows to show. --walk-forward K runs K folds, each with its own in- and out-of-sample "
                      "window.")  # fmt: skip
    sets = ranking["set"].head(RANGE_SETS).tolist()
    pos = {s: i for i, s in enumerate(sets)}
    rows = rows[rows["set"].isin(pos)]
    fig = go.Figure()
    samples = [x for x in ("in", "out") if x in per_sample.index]
    colors = {"in": "#1f77b4", "out": "#d62728"}
    for k, smp in enumerate(samples):
        sub = rows[rows["sample"] == smp]
        shift = (k - (len(samples) - 1) / 2) * 0.25
        agg = sub.groupby("set")[metric].agg(["mean", "min", "max", "count"]).reindex(sets)
        x = np.arange(len(sets)) + shift
        word = "in sample" if smp == "in" else "out of sample"
        fig.add_trace(go.Scatter(
            x=x, y=agg["mean"], mode="markers", name=f"{word}: mean, lowest to highest window",
            marker={"color": colors[smp], "size": 9, "symbol": "diamond"},
            error_y={"type": "data", "symmetric": False, "array": agg["max"] - agg["mean"],
                     "arrayminus": agg["mean"] - agg["min"], "color": colors[smp], "thickness": 1.5, "width": 4},
            customdata=np.column_stack([agg["min"], agg["max"], agg["count"]]),
            hovertemplate=(f"{word}: mean %{{y:.6g}}, lowest %{{customdata[0]:.6g}}, highest %{{customdata[1]:.6g}} "
                           f"over %{{customdata[2]}} window(s)<extra></extra>"),
        ))  # fmt: skip
        fig.add_trace(go.Scatter(
            x=sub["set"].map(pos).to_numpy() + shift, y=sub[metric], mode="markers", name=f"{word}: each window",
            marker={"color": colors[smp], "size": 5, "opacity": 0.45}, text=sub["window"],
            hovertemplate=f"window %{{text}} ({word}): %{{y:.6g}}<extra></extra>",
        ))  # fmt: skip
    fig.update_layout(
        title=f"{metric} of the best {len(sets)} sets in each window",
        xaxis={"title": "parameter set (best first)", "tickmode": "array", "tickvals": list(range(len(sets))),
               "ticktext": [f"#{i + 1} set {s}" for i, s in enumerate(sets)]},
        yaxis_title=metric_label(metric, summary, " in a window"), height=460,
    )  # fmt: skip
    windows = ", ".join(f"{v} {'in-sample' if k == 'in' else 'out-of-sample'}" for k, v in per_sample.items())
    note = (f"Windows: {windows}. Each diamond is the set's mean over its windows of that sample (what the ranking "
            "uses), its bar runs from the lowest to the highest window; the dots are the windows one by one. A set "
            "whose bar is long won in some windows and lost in others.")  # fmt: skip
    return fig, note


def find_best_runs(folder: Path, sweep_id: str | None = None) -> dict[int, list[dict]]:
    """The run folders under folder/best, by the swept set they re-ran (their summary.json's "sweep" block);
    each {"name", "path" (relative to folder), "report" (bool), "rank", "mlflow_run_id" (if its summary has one)}."""
    out: dict[int, list[dict]] = {}
    best = Path(folder) / "best"
    if not best.is_dir():
        return out
    for d in sorted(p for p in best.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            s = json.loads((d / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        sw = s.get("sweep") if isinstance(s, dict) else None
        if not isinstance(sw, dict) or "set" not in sw or (sweep_id and sw.get("sweep_id") not in (None, sweep_id)):
            continue
        out.setdefault(int(sw["set"]), []).append({
            "name": d.name, "path": f"best/{d.name}", "report": (d / "report.html").is_file(), "rank": sw.get("rank"),
            "mlflow_run_id": s.get("mlflow_run_id"),
        })  # fmt: skip
    return out


def best_runs_html(folder: Path, ranking: pd.DataFrame, axes: list[str], sweep_id: str | None = None,
                   run_ids: dict | None = None) -> str:  # fmt: skip
    """The section linking the best sets to their run folders (relative links) and MLflow runs, between markers
    that `link_best_runs` replaces."""
    runs = find_best_runs(folder, sweep_id)
    run_ids = run_ids or {}
    head = "<h2>Runs of the best sets</h2>"
    if not runs:
        body = ("<p class='note'>No run folders of the best sets under best/ when this report was written. A tracked "
                "sweep re-runs its best --children sets over the whole selection into best/ (one folder per set and "
                "covered span, <code>&lt;stamp&gt;-rank&lt;R&gt;-set&lt;S&gt;-…</code>) and logs each as an MLflow "
                "child run of the sweep's run.</p>")  # fmt: skip
        return RUNS_BEGIN + head + body + RUNS_END
    rows = []
    for r in ranking.itertuples():
        found = runs.get(int(r.set), [])
        if not found and r.rank > BEST_RUNS:
            continue
        links = [
            f"<a href='{html.escape(x['path'] + ('/report.html' if x['report'] else '/'), quote=True)}'>"
            f"{html.escape(x['name'])}</a>" + ("" if x["report"] else " (folder; no report.html)")
            for x in found
        ]
        ids = [str(i) for i in (run_ids.get(x["name"]) or x["mlflow_run_id"] for x in found) if i]
        cells = [f"<td class='num'>{r.rank}</td><td class='num'>{r.set}</td>",
                 f"<td>{html.escape(_params(ranking, axes, int(r.set)))}</td>",
                 f"<td>{'<br>'.join(links) or 'not re-run'}</td>",
                 f"<td>{'<br>'.join(html.escape(i) for i in ids) or 'not recorded'}</td>"]  # fmt: skip
        rows.append("<tr>" + "".join(cells) + "</tr>")
    table = ("<table class='best-runs'><tr><th>rank</th><th>set</th><th>parameters</th><th>run folder</th>"
             f"<th>MLflow run id</th></tr>{''.join(rows)}</table>")  # fmt: skip
    note = ("<p class='note'>Links are relative to this report's folder. Each run re-ran the set over one covered "
            "span of the whole selection (in- and out-of-sample windows together).</p>")  # fmt: skip
    return RUNS_BEGIN + head + table + note + RUNS_END


def link_best_runs(folder: Path, run_ids: dict | None = None) -> Path:
    """Redo the best runs' section of an existing folder/report.html from the run folders now under folder/best
    (a tracked sweep writes them after the report); `run_ids`: run folder name -> MLflow run id."""
    folder = Path(folder)
    out = folder / "report.html"
    page = out.read_text(encoding="utf-8")
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    ranking = pd.read_parquet(folder / "ranking.parquet")
    section = best_runs_html(folder, ranking, summary["axes"], summary.get("sweep_id"), run_ids)
    pattern = re.compile(re.escape(RUNS_BEGIN) + ".*?" + re.escape(RUNS_END), re.S)
    if not pattern.search(page):
        raise ValueError(f"{out} has no section of the best sets' runs to replace")
    write_atomic(out, pattern.sub(lambda _: section, page, count=1))
    return out


def _decision_html(summary: dict) -> str:
    """The warning (every set lost money), the baselines and the in- vs out-of-sample table, from summary.json."""
    parts = []
    if summary.get("warning"):
        box = "color:#a00000;border:1px solid #a00000;padding:6px"
        parts.append(f"<p style='{box}'><b>Warning:</b> {html.escape(summary['warning'])}</p>")
    if summary.get("annualised_note"):
        parts.append(f"<p class='note'><b>Note:</b> {html.escape(summary['annualised_note'])}.</p>")
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
    fig.update_layout(title=f"{metric}: in sample against out of sample, one point per set",
                      xaxis_title=metric_label(metric, summary, ", in sample (mean over its windows)"),
                      yaxis_title=metric_label(metric, summary, ", out of sample (mean over its windows)"),
                      height=520, legend={"orientation": "h", "y": 1.02, "yanchor": "bottom"})  # fmt: skip
    return fig


def _importance_figure(summary: dict):
    """A bar per swept parameter: its share of the variance of the ranking key (and of its in-sample twin)."""
    import plotly.graph_objects as go

    imp = {k: v for k, v in (summary.get("importance") or {}).items() if v}
    if not imp:
        return None
    fig = go.Figure([go.Bar(x=list(v), y=list(v.values()), name=k) for k, v in imp.items()])
    fig.update_layout(title="Parameter importance (fANOVA)", xaxis_title="parameter",
                      yaxis_title="share of variance (0-1)", barmode="group", height=380)  # fmt: skip
    return fig
