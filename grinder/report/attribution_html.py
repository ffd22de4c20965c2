"""The report's "Where the money went" section: PnL attribution over time and in total, markouts, fills per level."""

from __future__ import annotations

import html

from grinder.report.attribution import attribute, markouts, per_level, read_inputs
from grinder.report.load import Run
from grinder.report.stats import covered_s

LABELS = {
    "spread": "spread capture (maker fills)",
    "taking": "taking (taker fills' edge against the mid: IOC, market, flatten)",
    "inventory": "inventory (position through mid moves)",
    "fees": "fees (minus; rebates plus)",
    "funding": "funding (minus paid)",
}
QUEUE_NOTE = (
    "Mean queue time (order placement to fill) is not shown: the run folder records no order placement "
    "times, only each fill's order id."
)


def attribution_section(run: Run, figs: list | None = None) -> str:
    """HTML of the section (figure without plotly.js: the page embeds it once); its figure is appended to `figs`."""
    steps, fills, why = read_inputs(run.path)
    head = "<h2>Where the money went</h2>"
    if why:
        return f"{head}<p class='note'>{_e(why)}</p>"
    inverse = run.summary.get("contract") == "inverse" or run.summary.get("inverse") is True
    size = float(run.summary.get("contract_size") or 1.0)
    a = attribute(steps, fills, run.funding, inverse, size)
    settle = run.settle
    from grinder.report.plotlyjs import figure_div

    figure = attribution_figure(a, settle)
    if figs is not None:
        figs.append(figure)
    fig = figure_div(figure, "grinder-attribution")
    tot = a.totals()
    rows = "".join(
        f"<tr><th>{_e(LABELS[k])}</th><td class='num' data-value='{tot[k]!r}'>{tot[k]:,.6g}</td></tr>" for k in LABELS
    )
    rows += f"<tr><th>equity (sum)</th><td class='num' data-value='{tot['equity']!r}'>{tot['equity']:,.6g}</td></tr>"
    note = (
        "Spread capture: each fill's edge against the mid at the fill, buy (mid - price) x qty, sell (price - mid) x "
        "qty (inverse contracts through the ledger's value, contract_size / price); the mid at a fill is the steps' "
        "mid at the last decision at or before the fill's exchange time. Taking: the same edge for taker fills, a "
        "cost. Inventory: the position carried through mid moves, from the fill's mid on. The five add up to equity "
        "at every step (docs/report.md)."
    )
    return "".join([
        head, fig,
        f"<div class='cols'><div><h3>Totals ({_e(settle)})</h3><table class='attribution'>{rows}</table>",
        f"<p class='note'>{_e(note)}</p></div>",
        f"<div><h3>Markouts after fills</h3>{_markout_table(markouts(steps, fills, inverse, size), settle)}</div>",
        f"<div><h3>Fills per grid level</h3>{_level_table(fills, run)}</div></div>",
    ])  # fmt: skip


def attribution_figure(a, settle: str):
    """Cumulative components and their sum (equity) over time, settle currency."""
    import plotly.graph_objects as go

    from grinder.report.figures import BLUE, GREEN, GREY, ORANGE, PURPLE, RED, TIME_FORMAT, _line

    x = a.ts / 1e6
    fig = go.Figure()
    for k, color in (("spread", GREEN), ("taking", ORANGE), ("inventory", BLUE), ("fees", RED), ("funding", GREY)):
        fig.add_trace(_line(x, getattr(a, k), LABELS[k], color))
    fig.add_trace(_line(x, a.total, "equity (sum)", PURPLE, line_dash="dot"))
    fig.update_xaxes(type="date", hoverformat=TIME_FORMAT, title_text="time (UTC)")
    fig.update_yaxes(title_text=f"cumulative PnL ({settle})")
    fig.update_layout(template="plotly_white", height=420, hovermode="x unified", margin={"t": 40, "b": 40},
                      title="PnL attribution over time")  # fmt: skip
    return fig


def _markout_table(rows: list[dict], settle: str) -> str:
    """One row per horizon and side."""
    head = (f"<tr><th>after</th><th>side</th><th>fills</th><th>past the end</th><th>mean (bps)</th>"
            f"<th>mean ({_e(settle)})</th><th>total ({_e(settle)})</th></tr>")  # fmt: skip
    body = []
    for r in rows:
        cells = "".join(
            "<td class='num'>—</td>" if r[k] is None else f"<td class='num'>{r[k]:,.4g}</td>"
            for k in ("mean_bps", "mean_settle", "total_settle")
        )
        body.append(f"<tr><td>{r['horizon_s']} s</td><td>{r['side']}</td><td class='num'>{r['fills']:,}</td>"
                    f"<td class='num'>{r['past_end']:,}</td>{cells}</tr>")  # fmt: skip
    note = (
        "side x (mid at fill time + horizon - fill price), from the steps' mid (last decision at or before then), in "
        "bps of the price and in money; includes the spread captured. Fills whose horizon runs past the last step are "
        "left out of the mean and counted under 'past the end'."
    )
    return f"<table class='markouts'>{head}{''.join(body)}</table><p class='note'>{_e(note)}</p>"


def _level_table(fills: dict, run: Run) -> str:
    """Fill count, sides, quantity, share and rate per hour of covered market time, per grid level."""
    if "level" not in fills:
        return f"<p class='note'>fills.parquet has no level column. {_e(QUEUE_NOTE)}</p>"
    if len(fills["qty"]) == 0:
        return f"<p class='note'>No fills. {_e(QUEUE_NOTE)}</p>"
    hours = covered_s(run.steps["ts"])
    head = ("<tr><th>level</th><th>fills</th><th>buys</th><th>sells</th><th>qty</th><th>share</th>"
            "<th>fills / hour</th></tr>")  # fmt: skip
    body = "".join(
        f"<tr><td class='num'>{r['level']}</td><td class='num'>{r['fills']:,}</td><td class='num'>{r['buys']:,}</td>"
        f"<td class='num'>{r['sells']:,}</td><td class='num'>{r['qty']:.6g}</td>"
        f"<td class='num'>{100 * r['share']:.1f} %</td>"
        f"<td class='num'>{'—' if r['per_hour'] is None else format(r['per_hour'], ',.4g')}</td></tr>"
        for r in per_level(fills, hours)
    )
    note = "Rate per hour of market time the steps cover (coverage gaps left out). " + QUEUE_NOTE
    return f"<table class='levels'>{head}{body}</table><p class='note'>{_e(note)}</p>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)
