"""write_report: one self-contained HTML page (plotly.js inline, opens offline) describing a run folder."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from grinder.io.atomic import write_atomic
from grinder.report.load import Run, load_run
from grinder.report.stats import Stats, run_stats

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 10px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.cols { display: flex; flex-wrap: wrap; gap: 2em; } .cols > div { flex: 1 1 420px; }
.cols > div.fig { flex: 0 0 auto; }
.note { color: #555; font-size: 0.9em; }
"""
MODE_WIDTH = 560  # px; a fixed width keeps the bar chart from spilling over the tables beside it


def write_report(run_dir: Path) -> Path:
    """Write run_dir/report.html (atomically) from the run folder's files and return its path."""
    run = load_run(Path(run_dir))
    page = render(run, run_stats(run))
    out = run.path / "report.html"
    write_atomic(out, page)
    return out


def render(run: Run, stats: Stats) -> str:
    """The whole page as a string."""
    from grinder.report.attribution_html import attribution_section
    from grinder.report.figures import main_figure, mode_figure  # plotly is imported only for a report
    from grinder.report.plotlyjs import figure_div, plotly_script

    fig, notes = main_figure(run)
    modes = mode_figure(run)
    figs = [fig, modes]
    # Fixed div ids keep the page identical for identical input; plotly.js is embedded once, in the head.
    main_div = figure_div(fig, "grinder-main")
    mode_div = figure_div(modes, "grinder-modes", default_width=f"{MODE_WIDTH}px")
    money = attribution_section(run, figs)
    quant = _qrules_html(run, figs)
    s = run.summary
    sel = s.get("selection") or {}
    title = f"{s.get('strategy', 'backtest')} on {sel.get('venue', '?')}/{sel.get('symbol', '?')}"
    counters = s.get("counters") or {}
    blocked = {k.removeprefix("blocked_"): v for k, v in counters.items() if k.startswith("blocked_")}
    orders = {k: v for k, v in counters.items() if not k.startswith("blocked_")}
    parts = [
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{_e(title)}</title>",
        f"<style>{STYLE}</style>",
        plotly_script(figs),
        "</head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p class='note'>Money in {_e(run.settle)}; times in UTC.</p>",
        main_div,
        "".join(f"<p class='note'>{_e(n)}</p>" for n in notes),
        money,
        "<div class='cols'><div>",
        "<h2>Returns statistics (vectorbt)</h2>",
        _stats_table(stats),
        f"<p class='note'>{_e(stats.note)}</p>",
        "</div><div><h2>Run</h2>",
        _table(_facts(run, stats)),
        "</div></div>",
        "<div class='cols'><div class='fig'>",
        mode_div,
        "</div><div><h2>Counters</h2>",
        _table(orders.items()),
        "<h2>Blocked by gates</h2>",
        _table(blocked.items()) if blocked else "<p class='note'>No gate counters in summary.json.</p>",
        "</div></div>",
        quant,
        "<div class='cols'>",
        *(
            f"<div><h2>{_e(k.capitalize())}</h2>{_table(_flat(s.get(k)).items())}</div>"
            for k in ("params", "venue", "gates")
        ),
        "</div></body></html>\n",
    ]
    return "\n".join(parts)


def _qrules_html(run: Run, figs: list) -> str:
    """Binance's quantitative rules: each rule's threshold and worst value, and a figure over time ("" if untracked);
    the figure is appended to `figs`."""
    qr = run.summary.get("quant_rules")
    if not qr:
        return ""
    from grinder.report.figures import QR_LABELS, qrules_figure

    verdict = "Every rule kept." if qr["rules_ok"] else "Breached: " + ", ".join(QR_LABELS[b] for b in qr["breaches"])
    head = ("<tr><th>rule</th><th>threshold</th><th>applies from (orders)</th><th>max</th><th>at (UTC)</th>"
            "<th>decisions in breach</th><th>decisions where it applied</th></tr>")  # fmt: skip
    rows = []
    for name, m in qr["metrics"].items():
        at = "—" if m["max_at_ns"] is None else f"{pd.Timestamp(m['max_at_ns'], unit='ns'):%Y-%m-%d %H:%M:%S.%f}"[:-3]
        cells = [m["threshold"], m.get("min_orders"), m["max"]]
        nums = "".join("<td>—</td>" if v is None else f"<td class='num'>{_num(v)}</td>" for v in cells)
        shares = "".join(f"<td class='num'>{100 * m[k]:.2f} %</td>" for k in ("share_breached", "share_applied"))
        bad = " style='color:#a00000'" if name in qr["breaches"] else ""
        rows.append(f"<tr{bad}><th>{_e(QR_LABELS.get(name, name))}</th>{nums}<td>{at}</td>{shares}</tr>")
    fig = ""
    if run.qrules is not None:
        from grinder.report.plotlyjs import figure_div

        figs.append(qrules_figure(run))
        fig = figure_div(figs[-1], "grinder-qrules")
    return (f"<h2>Binance quantitative rules</h2><p class='note'>{_e(verdict)} Rules {_e(str(qr.get('version')))}; "
            "a ratio breaks its rule at or above its threshold, a count above it.</p>"
            f"<table class='qrules'>{head}{''.join(rows)}</table>{fig}")  # fmt: skip


def _facts(run: Run, stats: Stats) -> list[tuple[str, object]]:
    """Rows of the run table: what ran, on what, over which span, with which outcome."""
    s, st, f = run.summary, run.steps, run.fills
    sel = s.get("selection") or {}
    t0, t1 = (pd.Timestamp(int(t), unit="ns") for t in (st["ts"][0], st["ts"][-1]))
    buys = int((f["side"] > 0).sum())
    settle = run.settle
    return [
        ("strategy", s.get("strategy", "—")),
        ("market", f"{sel.get('venue', '—')}/{sel.get('symbol', '—')}"),
        ("span (UTC)", f"{t0:%Y-%m-%d %H:%M:%S} → {t1:%Y-%m-%d %H:%M:%S} ({t1 - t0})"),
        ("decisions", len(st["ts"])),
        ("events", s.get("events", "—")),
        ("fills", f"{len(f['qty']):,} ({buys:,} buys, {len(f['qty']) - buys:,} sells)"),
        (f"fees ({settle})", s.get("fees", "—")),
        (f"funding paid ({settle})", s.get("funding_paid", "—")),
        ("funding settlements", len(run.funding["ts"])),
        (f"final position ({run.position_unit})", s.get("position", "—")),
        (f"final equity ({settle})", s.get("equity", "—")),
        (f"capital for returns ({settle})", stats.capital.amount if stats.capital else "—"),
        ("digest", s.get("digest", "—")),
        ("backtest seconds", (s.get("seconds") or {}).get("backtest", "—")),
    ]


def _stats_table(stats: Stats) -> str:
    """vectorbt's statistics; each number also in data-value at full precision (for readers and tests)."""
    if stats.table is None:
        return "<p class='note'>No statistics.</p>"
    rows = []
    for label, v in stats.table.items():
        if isinstance(v, float | np.floating):
            cell = f"<td class='num' data-value='{float(v)!r}'>{_num(v)}</td>"
        else:
            cell = f"<td>{_e(str(v))}</td>"
        rows.append(f"<tr><th>{_e(str(label))}</th>{cell}</tr>")
    return "<table class='stats'>" + "".join(rows) + "</table>"


def _table(rows) -> str:
    """Two-column HTML table of (label, value) pairs."""
    out = []
    for k, v in rows:
        num = isinstance(v, int | float | np.number) and not isinstance(v, bool)
        text = "—" if v is None else str(v)
        cell = f"<td class='num'>{_num(v)}</td>" if num else f"<td>{_e(text)}</td>"
        out.append(f"<tr><th>{_e(str(k))}</th>{cell}</tr>")
    return "<table>" + "".join(out) + "</table>"


def _flat(d: dict | None) -> dict:
    """A settings dict with nested values shown as compact JSON."""
    return {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in (d or {}).items()}


def _num(v) -> str:
    """A number for people: integers with separators, floats to 6 significant digits (2 decimals if large)."""
    if isinstance(v, int | np.integer):
        return f"{v:,}"
    v = float(v)
    if not np.isfinite(v):
        return str(v)
    return f"{v:,.2f}" if abs(v) >= 1e5 else f"{v:.6g}"


def _e(text: str) -> str:
    """HTML-escaped text."""
    return html.escape(text, quote=True)
