"""plotly.js for the reports: inlined once per page (no CDN, the page opens offline), as small as the figures allow.

The backtest and portfolio reports draw only scatter and bar traces, which plotly.js's official partial
bundle "basic" covers (1.2 MB against 4.8 MB for the full library). It is vendored in `vendor/` at the
plotly.js version the Python plotly package embeds. A page with any other trace type (the sweep report's
heatmap and parallel coordinates) gets the full library from the Python plotly package.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

VENDOR = Path(__file__).with_name("vendor")
BASIC_FILE = VENDOR / "plotly-basic.min.js"
BASIC_TRACES = frozenset({"bar", "pie", "scatter"})  # the bundle's trace modules (its README)
# Before the library: plotly.py's own preamble (MathJax is never loaded).
CONFIG = "<script type='text/javascript'>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"


def bundle_version(text: str) -> str | None:
    """The plotly.js version in a bundle's header comment ("plotly.js (basic - minified) v4.1.1")."""
    m = re.search(r"plotly\.js[^\n]*? v(\d+\.\d+\.\d+)", text[:500])
    return m.group(1) if m else None


@cache
def basic_bundle() -> str:
    """The vendored basic bundle's text."""
    return BASIC_FILE.read_text(encoding="utf-8")


def trace_types(figs) -> set[str]:
    """Every trace type the figures use."""
    return {t.type for f in figs for t in f.data}


def choose_bundle(figs) -> str:
    """Which bundle a page of these figures needs: "basic" when the vendored one draws every trace, else "full"."""
    from plotly.offline import get_plotlyjs_version

    if not trace_types(figs) <= BASIC_TRACES:
        return "full"
    # A basic bundle of another plotly.js version than the one the figures are written for: the full one.
    return "basic" if bundle_version(basic_bundle()) == get_plotlyjs_version() else "full"


def plotly_script(figs) -> str:
    """<script> elements that define Plotly for the figures: put before the first figure's div."""
    if choose_bundle(figs) == "basic":
        text = basic_bundle()
    else:
        from plotly.offline import get_plotlyjs

        text = get_plotlyjs()
    return f"{CONFIG}\n<script type='text/javascript'>{text}</script>"


def figure_div(fig, div_id: str, **kw) -> str:
    """A figure's div and its Plotly.newPlot call, without the library (plotly_script defines it)."""
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False}, **kw)
