"""A sweep's folder: results.parquet (set x window), ranking.parquet, summary.json and report.html.

Written into a hidden temporary folder and renamed into place, like a backtest's run folder: a
failed or interrupted sweep leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from grinder.sim.run_folder import atomic_folder
from grinder.sweep.study import StudyResult


def sweep_id(study: StudyResult) -> str:
    """sha256 over every backtest digest in set and window order: identical sweeps get identical ids."""
    h = hashlib.sha256()
    for d in study.results.sort_values(["window", "set"])["digest"]:
        h.update(d.encode())
    return h.hexdigest()


def write_sweep(out: Path, name: str, study: StudyResult, summary: dict, report: bool = True) -> Path:
    """Write the sweep folder `out/<UTC stamp>-<name>-<id[:8]>` atomically; returns its path."""
    with atomic_folder(out, name, summary["sweep_id"]) as (tmp, folder):
        study.results.to_parquet(tmp / "results.parquet", index=False)
        study.ranking.to_parquet(tmp / "ranking.parquet", index=False)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        if report:
            from grinder.report.sweep_html import write_sweep_report

            write_sweep_report(tmp, study, summary)
    return folder
