"""The report's plotly figures: price with our quotes and fills, inventory, equity, drawdown; time per mode."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from grinder.report.downsample import change_indices, even_indices, minmax_indices
from grinder.report.load import Run

MAX_POINTS = 5_000  # per line trace
MAX_FILL_MARKERS = 5_000  # over both sides
TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%L"
GREEN, RED, GREY, BLUE, PURPLE, ORANGE = "#2ca02c", "#d62728", "#7f7f7f", "#1f77b4", "#9467bd", "#ff7f0e"


def drawdown(equity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(equity, its running peak), NaN equity carried forward from the last known value."""
    eq = equity.copy()
    known = ~np.isnan(eq)
    # Carry the last known value over NaN rows (rows before the first value stay NaN).
    last = np.maximum.accumulate(np.where(known, np.arange(len(eq)), -1))
    eq = np.where(last >= 0, eq[np.maximum(last, 0)], np.nan)
    return eq, np.fmax.accumulate(eq)


def _line(x_ms: np.ndarray, y: np.ndarray, name: str, color: str, **kw) -> go.Scatter:
    """A line trace thinned to at most MAX_POINTS points, keeping each bucket's extremes.

    A step line (line_shape "hv") first drops the points that repeat the one before: the line drawn is the same.
    """
    if kw.get("line_shape") == "hv":
        steps = change_indices(y)
        keep = steps[minmax_indices(y[steps], MAX_POINTS)]
    else:
        keep = minmax_indices(y, MAX_POINTS)
    return go.Scatter(
        x=x_ms[keep], y=y[keep], name=name, mode="lines", line={"color": color, "width": 1.2}, connectgaps=False, **kw
    )


def _fills(run: Run, x_ms: np.ndarray, fig: go.Figure) -> str | None:
    """Add buy and sell markers (evenly sampled when there are many); returns a note when sampled."""
    f = run.fills
    n = len(f["qty"])
    keep = even_indices(n, MAX_FILL_MARKERS)
    for side, name, color, symbol in ((1, "buy fills", GREEN, "triangle-up"), (-1, "sell fills", RED, "triangle-down")):
        rows = keep[f["side"][keep] == side]
        custom = np.column_stack([f["qty"][rows], f["fee"][rows]])
        fig.add_trace(
            go.Scatter(
                x=x_ms[rows],
                y=f["price"][rows],
                name=name,
                mode="markers",
                marker={"color": color, "symbol": symbol, "size": 7, "line": {"width": 0.5, "color": "black"}},
                customdata=custom,
                hovertemplate=(
                    f"%{{x|{TIME_FORMAT}}} UTC (exchange)<br>price %{{y:.10~g}}<br>qty %{{customdata[0]:.10~g}}"
                    f"<br>fee %{{customdata[1]:.6g}} {run.settle}<extra>{name}</extra>"
                ),
            ),
            row=1,
            col=1,
        )
    if n > len(keep):
        return f"{n:,} fills: markers show {len(keep):,} of them, evenly spaced in time order."
    return None


def main_figure(run: Run) -> tuple[go.Figure, list[str]]:
    """Price with our quotes and fills, inventory, equity and drawdown on one shared time axis; plus notes."""
    s, settle, cap = run.steps, run.settle, run.explicit_capital
    x = s["ts"] / 1e6  # plotly reads numbers on a date axis as ms since the epoch, UTC; compact in the file
    fig = make_subplots(
        rows=4,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.05,
        row_heights=[0.4, 0.2, 0.2, 0.2],
        subplot_titles=("Price: mid, our quotes, fills", "Inventory (position)", f"Equity ({settle})", "Drawdown"),
        specs=[[{}], [{}], [{}], [{"secondary_y": cap is not None}]],
    )
    notes = []
    fig.add_trace(_line(x, s["mid"], "mid", GREY), row=1, col=1)
    for side, col, color in (("bid", "quote_bid", GREEN), ("ask", "quote_ask", RED)):
        if np.isfinite(s[col]).any():
            fig.add_trace(_line(x, s[col], f"our {side}", color, line_shape="hv", opacity=0.7), row=1, col=1)
        else:
            notes.append(f"No {side} of ours was resting at any decision.")
    fill_x = run.fills["ts_exch"] / 1e6
    sampled = _fills(run, fill_x, fig)
    if sampled:
        notes.append(sampled)
    if len(run.fills["qty"]) == 0:
        notes.append("No fills.")
    fig.add_trace(_line(x, s["position"], "position", BLUE, line_shape="hv"), row=2, col=1)
    eq, peak = drawdown(s["equity"])
    fig.add_trace(_line(x, s["equity"], "equity", PURPLE), row=3, col=1)
    fig.add_trace(_line(x, eq - peak, f"drawdown ({settle})", RED, fill="tozeroy"), row=4, col=1)
    quote = run.assets[1]
    for row, title in enumerate((f"price ({quote})", f"position ({run.position_unit})", f"equity ({settle})",
                                 f"drawdown ({settle})"), start=1):  # fmt: skip
        fig.update_yaxes(title_text=title, row=row, col=1, secondary_y=False)
    if cap is not None:
        pct = ((cap + eq) / (cap + peak) - 1.0) * 100.0
        fig.add_trace(
            _line(x, pct, "drawdown (% of peak capital + equity)", GREY, line_dash="dot"),
            row=4,
            col=1,
            secondary_y=True,
        )
        fig.update_yaxes(title_text="drawdown (% of peak)", row=4, col=1, secondary_y=True)
    n = len(x)
    if n > MAX_POINTS:
        notes.append(
            f"{n:,} steps: each line shows the first, last, lowest and highest step of equal buckets "
            f"(at most {MAX_POINTS:,} points), so spikes stay visible; statistics use every step."
        )
    fig.update_xaxes(type="date", hoverformat=TIME_FORMAT)
    fig.update_xaxes(title_text="time (UTC)", row=4, col=1)
    fig.update_layout(template="plotly_white", height=1100, hovermode="closest", margin={"t": 40, "b": 40})
    return fig, notes


def mode_figure(run: Run) -> go.Figure:
    """Share of decisions spent in each controller mode (every mode named in the summary, even at 0 %)."""
    codes, counts = np.unique(run.steps["mode"], return_counts=True)
    share = dict(zip(codes.tolist(), (100.0 * counts / counts.sum()).tolist(), strict=True))
    names = run.summary.get("mode_names") or []
    all_codes = sorted(set(range(len(names))) | set(share))
    y = [share.get(c, 0.0) for c in all_codes]
    fig = go.Figure(
        go.Bar(
            x=[run.mode_name(c) for c in all_codes],
            y=y,
            text=[f"{v:.1f} %" for v in y],
            textposition="auto",
            marker_color=BLUE,
            name="time in mode",
            hovertemplate="%{x}: %{y:.2f} % of decisions<extra></extra>",
        )
    )
    fig.update_layout(
        template="plotly_white",
        title="Time in each controller mode (share of decisions)",
        xaxis_title="controller mode",
        yaxis_title="decisions (%)",
        height=360,
        width=560,
        margin={"t": 50, "b": 40},
    )
    return fig


QR_COLORS = {"ufr": BLUE, "gtc_cancel": RED, "expire": PURPLE, "dust": GREEN, "orders_10s": BLUE,
             "orders_1m": RED, "orders_1d": PURPLE}  # fmt: skip
QR_LABELS = {"ufr": "unfilled ratio (UFR)", "gtc_cancel": "GTC cancel ratio (ICR)", "expire": "IOC/FOK expire ratio",
             "dust": "dust ratio", "orders_10s": "orders / 10 s", "orders_1m": "orders / min",
             "orders_1d": "orders / UTC day"}  # fmt: skip


def qrules_figure(run: Run) -> go.Figure:
    """Binance's quantitative rules over the run: the ratios, the order counts, each with its threshold dotted."""
    qr, metrics = run.qrules, run.summary["quant_rules"]["metrics"]
    x = qr["ts"] / 1e6
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07, row_heights=[0.5, 0.3, 0.2],
                        subplot_titles=("Ratios over the rolling window (blank: too few orders to apply)",
                                        "Orders per 10 s and per minute", "Orders in the UTC day"))  # fmt: skip
    rows = {"ufr": 1, "gtc_cancel": 1, "expire": 1, "dust": 1, "orders_10s": 2, "orders_1m": 2, "orders_1d": 3}
    for name, row in rows.items():
        color = QR_COLORS[name]
        fig.add_trace(_line(x, qr[name], QR_LABELS[name], color, line_shape="hv"), row=row, col=1)
        thr = metrics[name]["threshold"]
        if thr is not None and len(x):
            fig.add_trace(
                go.Scatter(x=[x[0], x[-1]], y=[thr, thr], mode="lines", name=f"{QR_LABELS[name]} threshold",
                           line={"color": color, "dash": "dot", "width": 1}, hoverinfo="name+y"),
                row=row, col=1,
            )  # fmt: skip
    fig.update_yaxes(range=[0, 1.05], title_text="ratio (0-1)", row=1, col=1)
    fig.update_yaxes(title_text="orders", row=2, col=1)
    fig.update_yaxes(title_text="orders", row=3, col=1)
    fig.update_xaxes(type="date", hoverformat=TIME_FORMAT)
    fig.update_xaxes(title_text="time (UTC)", row=3, col=1)
    fig.update_layout(template="plotly_white", height=700, hovermode="closest", margin={"t": 40, "b": 40})
    return fig
