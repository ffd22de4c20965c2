"""A portfolio as `grinder portfolio` runs it, as one call: prefilter, top K, drawdown allocator, folder.

`grinder portfolio` parses its options, calls `portfolio_job` and prints the outcome; a notebook
calls it with the same arguments and gets the same portfolio folder and digests.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grinder.errors import ConfigError, DataError, GrinderError
from grinder.progress import Progress
from grinder.settings import default_lake, parse_time, read_settings, validated, venue_and_gates


@dataclass(frozen=True)
class PortfolioOutcome:
    """What a portfolio job left: its folder, its summary (summary.json) and the run (picks, curves, results)."""

    folder: Path
    summary: dict
    run: Any


def portfolio_job(
    strategy: str,
    symbols: Sequence[str],
    *,
    k: int = 3,
    lookback_s: float | None = None,
    budget: float = 10_000.0,
    max_drawdown: float = 0.2,
    floor: float = 0.0,
    params: Mapping[str, Any] | None = None,
    config: Path | None = None,
    venue: str = "binance-usdm",
    start: str | int | None = None,
    end: str | int | None = None,
    report: bool = True,
    out_dir: Path = Path("portfolios"),
    root: Path | None = None,
    progress: Progress | None = None,
) -> PortfolioOutcome:
    """Rank `symbols` (SYMBOL on `venue`, or VENUE/SYMBOL) on a look-back, trade the top `k` after it.

    The look-back is `lookback_s` seconds from the start (default: a third of the span); the span is
    `start`..`end`, by default the time every candidate has data. `budget` (settle currency) is split
    equally and each pick's share shrinks with its drawdown (`max_drawdown` of the budget brings it
    to `floor`). Settings: the TOML `config`'s `[strategy]`, `[symbols.SYMBOL]` overrides, `[venue]`,
    `[gates]`, `[prefilter]`, with `params` on top of `[strategy]`. Writes a folder under `out_dir`.
    """
    import numpy as np

    from grinder.core.strategy import get
    from grinder.data.catalog import Catalog
    from grinder.portfolio.allocator import DrawdownRule
    from grinder.portfolio.folder import portfolio_id, write_portfolio
    from grinder.portfolio.prefilter import PrefilterRules
    from grinder.portfolio.study import run_portfolio

    progress = progress or Progress()
    root = Path(root) if root is not None else default_lake()
    strat = get(strategy)
    if strat.signals:  # its signals come from a model per window, which a portfolio does not take
        raise ConfigError(f"strategy {strat.name} reads a model's forecast; a portfolio does not run models: "
                          "backtest it with --model (grinder ml promote compares it out of sample)")  # fmt: skip
    cands = [x.strip() for x in symbols if x.strip()]
    if not cands:
        raise ConfigError("--symbols: no candidate symbols")
    if k < 1:
        raise ConfigError(f"--k must be at least 1, got {k}")
    cfg = read_settings(config, ("strategy", "symbols", "venue", "gates", "prefilter"), params)
    unknown = sorted(set(cfg["symbols"]) - set(cands))  # [symbols."VENUE/SYMBOL"] for other venues
    if unknown:
        raise ConfigError(f"[symbols] names symbol(s) that are not candidates: {', '.join(unknown)}")
    chosen = {}
    for sym in cands:
        override = cfg["symbols"].get(sym, {})
        if not isinstance(override, dict):
            raise ConfigError(f"[symbols.{sym}] must be a table")
        try:
            chosen[sym] = strat.validate({**cfg["strategy"], **override})
        except GrinderError as e:
            raise ConfigError(f"{sym}: {e}") from None
    venue_cfg, gates_cfg = venue_and_gates(cfg)
    rules = validated("prefilter", PrefilterRules, cfg["prefilter"])
    rule = validated("allocator", DrawdownRule, {"max_drawdown": max_drawdown, "floor": floor})
    spans = {}
    for r in Catalog(root).summary():
        name = r["symbol"] if r["venue"] == venue else f"{r['venue']}/{r['symbol']}"
        if name in cands and r["tbl"] in ("book", "trades"):
            lo_, hi_ = spans.get(name, (r["first_ns"], r["last_ns"]))
            spans[name] = (min(lo_, r["first_ns"]), max(hi_, r["last_ns"]))
    missing = [c for c in cands if c not in spans]
    if missing:
        raise DataError(f"no data for {', '.join(missing)} on {venue} in {root}")
    lo = parse_time(start) or max(a for a, _ in spans.values())
    hi = parse_time(end) or min(b for _, b in spans.values()) + 1
    if hi <= lo:
        raise DataError("the candidates have no time in common (or --end is not after --start)")
    look = int((lookback_s * 1e9) if lookback_s is not None else (hi - lo) // 3)
    t0 = time.perf_counter()
    # One unit per candidate ranked, then one per pick backtested (the total shrinks when fewer than k pass).
    total = len(cands) + min(k, len(cands))
    with progress.count(f"ranking {len(cands)} candidates and backtesting the top {k}", total) as update:
        run = run_portfolio(root, venue, cands, strat, chosen.__getitem__, lo, hi, look, k, budget, rule, venue_cfg,
                            gates_cfg, rules, progress=update)  # fmt: skip
    seconds = round(time.perf_counter() - t0, 3)
    first = next(iter(run.results.values()))
    summary = {
        "strategy": strat.name,
        "venue_name": venue,
        "candidates": cands,
        "picks": list(run.selection.symbols),
        "excluded": dict(run.selection.excluded),
        "params": {s: chosen[s].model_dump() for s in run.selection.symbols},
        "venue": venue_cfg.model_dump(),
        "gates": gates_cfg.model_dump(),
        "prefilter": rules.model_dump(),
        "rule": rule.model_dump(),
        "budget": budget,
        "settle": first.settle,
        "start": str(np.datetime64(lo, "ns")),
        "trade_start": str(np.datetime64(run.trade_start_ns, "ns")),
        "end": str(np.datetime64(hi, "ns")),
        "lookback_s": look / 1e9,
        "equity": float(run.portfolio.equity[-1]),
        "max_drawdown": run.portfolio.max_drawdown,
        "full_size_equity": float(run.full_equity[-1].sum()),
        "digests": {s: r.digest for s, r in run.results.items()},
        "portfolio_id": portfolio_id(run),
        "seconds": seconds,
    }
    with progress.stage("writing the portfolio folder and report"):
        folder = write_portfolio(Path(out_dir), f"{strat.name}-k{k}", run, summary, report=report)
    return PortfolioOutcome(folder, summary, run)
