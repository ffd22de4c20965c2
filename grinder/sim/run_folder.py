"""A backtest's run folder: summary.json, fills / steps / funding (and the quantitative rules' series,
qrules) as Parquet, and the HTML report.

Written into a hidden temporary folder and renamed into place at the end, so a folder under
`runs/` is always complete: an interrupted or failed run leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from grinder.sim.backtest import STALE_NS, BacktestResult


def gaps_crossed(steps: dict) -> list[dict]:
    """The coverage gaps the decision clock jumped over (decision 025), each with its start and end
    (ns, the steps on either side), length (s), the position held across it and the equity change
    over it (settle currency): with a position held, a price move nobody could trade is in the PnL."""
    ts = np.asarray(steps["ts"])
    if ts.size < 2 or "position" not in steps:
        return []
    jumps = np.flatnonzero(np.diff(ts) > STALE_NS)
    pos, eq = steps["position"], steps["equity"]
    return [
        {"from_ns": int(ts[i]), "to_ns": int(ts[i + 1]), "seconds": float(ts[i + 1] - ts[i]) / 1e9,
         "position": float(pos[i]), "equity_change": float(eq[i + 1] - eq[i])}
        for i in jumps
    ]  # fmt: skip


def summarize(res: BacktestResult, meta: dict, mode_names: tuple[str, ...] = ()) -> dict:
    """The JSON summary of a result; `meta` adds what ran (strategy, params, venue, selection, timings)."""
    modes = res.steps["mode"]
    share = {}
    for m in np.unique(modes):
        name = mode_names[int(m)] if 0 <= int(m) < len(mode_names) else str(int(m))
        share[name] = float((modes == m).mean())
    out = {
        **meta,
        "settle": res.settle,
        "contract": "inverse" if res.inverse else "linear",
        "contract_size": res.contract_size,
        "fills": len(res.fills["qty"]),
        "position": res.position,
        "avg_entry": res.avg_entry,
        "balance": res.balance,
        "realized": res.realized,
        "unrealized": res.unrealized,
        "fees": res.fees,
        "funding_paid": res.funding_paid,
        "equity": res.equity,
        "counters": res.counters,
        "mode_names": list(mode_names),
        "mode_share": share,
        "coverage_gaps": gaps_crossed(res.steps),
        "digest": res.digest,
    }
    from grinder.report.attribution import summary_blocks
    from grinder.report.qrules import has_series, qr_summary, rules_of

    out.update(summary_blocks(res.steps, res.fills, res.funding, res.inverse, res.contract_size))
    if has_series(res):
        out["quant_rules"] = qr_summary(res.qrules, rules_of(meta.get("gates")))
    return out


@contextmanager
def atomic_folder(out: Path, name: str, ident: str) -> Iterator[tuple[Path, Path]]:
    """Yield (temporary folder to fill, final path `out/<UTC stamp>-<name>-<ident[:8]>`); renamed at the end.

    On any error the temporary folder is removed, so a half-written folder is never seen.
    """
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = Path(out) / f"{stamp}-{name}-{ident[:8]}"
    # The same run twice within a second (a gate judging a version against itself, a loop of
    # notebook cells) gets -2, -3, ... rather than failing on the first one's folder.
    final, n = base, 1
    while final.exists():
        n += 1
        final = base.with_name(f"{base.name}-{n}")
    tmp = Path(out) / f".{final.name}.{os.getpid()}.tmp"
    tmp.mkdir(parents=True, exist_ok=False)
    try:
        yield tmp, final
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_run(out: Path, name: str, res: BacktestResult, summary: dict, report: bool = True) -> Path:
    """Write the run folder `out/<UTC stamp>-<name>-<digest[:8]>` atomically; returns its path."""
    with atomic_folder(out, name, res.digest) as (tmp, run_dir):
        pq.write_table(pa.table(res.fills), tmp / "fills.parquet")
        pq.write_table(pa.table(res.steps), tmp / "steps.parquet")
        pq.write_table(pa.table(res.funding), tmp / "funding.parquet")
        if "ts" in res.qrules:
            pq.write_table(pa.table(res.qrules), tmp / "qrules.parquet")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
        if report:
            from grinder.report.html import write_report

            write_report(tmp)
    return run_dir
