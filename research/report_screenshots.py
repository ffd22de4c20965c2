"""Screenshots of the HTML reports for the docs: docs/img/report-backtest.png and docs/img/report-sweep.png.

Runs the sample backtest (`make run`'s: static_grid, strategies/static_grid.toml, data/sample/lake) and a
walk-forward sweep of the sample (tracked in a temporary MLflow store, the best sets re-run as child runs
and linked from the report) into a temporary folder, then shoots each report.html with headless Chromium
(after the page's script has drawn the figures) and shrinks the PNGs with pngquant when it is installed.

    .venv/bin/python research/report_screenshots.py            # writes docs/img/report-*.png
    .venv/bin/python research/report_screenshots.py --out /tmp/shots --keep

Needs `chromium` (Debian: apt-get install chromium; pngquant is optional). Prints each file and its size.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRINDER = [sys.executable, "-m", "grinder"]
BACKTEST = ["backtest", "static_grid", "--root", "data/sample/lake", "--config", "strategies/static_grid.toml"]
SWEEP = ["sweep", "static_grid", "-g", "interval=0.5:2:0.5", "-g", "half_spread=1,2,4", "-p", "order_qty=0.1",
         "-p", "max_position=5", "--walk-forward", "3", "--root", "data/sample/lake",
         "--children", "2"]  # fmt: skip
# (file name, command, window size): tall enough for the figures that matter, small enough for the docs.
SHOTS = (("report-backtest.png", BACKTEST, "1400,2300"), ("report-sweep.png", SWEEP, "1400,3300"))


def run(args: list[str], tmp: Path) -> str:
    """Run a grinder command from the repository's root; its stdout (raises with its output on failure)."""
    env_args = ["--out", str(tmp / "out"), "--mlruns", str(tmp / "mlruns")]
    done = subprocess.run([*GRINDER, *args, *env_args], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(args[:2])} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


def shoot(html: Path, png: Path, size: str) -> None:
    """A PNG of the page as a browser window of `size` shows it, after its scripts ran."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("error: no chromium on the PATH (Debian: apt-get install chromium)")
    cmd = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--virtual-time-budget=10000",
           f"--window-size={size}", f"--screenshot={png}", html.resolve().as_uri()]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    if shutil.which("pngquant"):
        subprocess.run(["pngquant", "--force", "--quality=60-90", "--skip-if-larger", "--output", str(png), str(png)],
                       check=False, capture_output=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img", help="folder for the PNGs (docs/img)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary runs and print where they are")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="grinder-shots-"))
    try:
        for name, args, size in SHOTS:
            stdout = run(args + (["--track"] if args is SWEEP else ["--no-track"]), tmp)
            report = Path(re.search(r"report: (\S+)", stdout).group(1))
            shoot(report, a.out / name, size)
            print(f"{a.out / name}  {(a.out / name).stat().st_size / 1024:.0f} KB  (from {report})")
    finally:
        if a.keep:
            print(f"runs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
