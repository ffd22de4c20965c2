"""A backtest's run folder: summary.json, fills / steps / funding as Parquet, and the HTML report.

Written into a hidden temporary folder and renamed into place at the end, so a folder under
`runs/` is always complete: an interrupted or failed run leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from grinder.sim.backtest import BacktestResult


def summarize(res: BacktestResult, meta: dict, mode_names: tuple[str, ...] = ()) -> dict:
    """The JSON summary of a result; `meta` adds what ran (strategy, params, venue, selection, timings)."""
    modes = res.steps["mode"]
    share = {}
    for m in np.unique(modes):
        name = mode_names[int(m)] if 0 <= int(m) < len(mode_names) else str(int(m))
        share[name] = float((modes == m).mean())
    return {
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
        "digest": res.digest,
    }


@contextmanager
def atomic_folder(out: Path, name: str, ident: str) -> Iterator[tuple[Path, Path]]:
    """Yield (temporary folder to fill, final path `out/<UTC stamp>-<name>-<ident[:8]>`); renamed at the end.

    On any error the temporary folder is removed, so a half-written folder is never seen.
    """
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    final = Path(out) / f"{stamp}-{name}-{ident[:8]}"
    tmp = Path(out) / f".{final.name}.tmp"
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
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
        if report:
            from grinder.report.html import write_report

            write_report(tmp)
    return run_dir
