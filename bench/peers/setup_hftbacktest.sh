#!/usr/bin/env bash
# Create an isolated virtual environment holding hftbacktest 2.4.4, the peer engine
# Grinder's backtester is compared against.  It pins numpy<2.3, which conflicts with
# Grinder's own dependencies, so it must never be installed into .venv.
#
# Usage: bash bench/peers/setup_hftbacktest.sh          (idempotent; fast when done)
#        FORCE=1 bash bench/peers/setup_hftbacktest.sh  (recreate the venv from scratch)
#        PYTHON=python3.11 bash ...                     (choose the base interpreter)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv-hftbacktest"
PY="${PYTHON:-python3}"
HFT_VERSION="2.4.4"
# hftbacktest 2.4.4 requires numba, numpy<2.3, polars, matplotlib and holoviews (pip resolves
# them); numpy<2.3 is repeated here so a future resolver change cannot pull numpy>=2.3.
# Tested with: numpy 2.2.6, numba 0.68.1, llvmlite 0.50.0, polars 2.1.0 (see README.md).
REQS=("hftbacktest==${HFT_VERSION}" "numpy<2.3")

report() {
    "$VENV/bin/python" - <<'PY'
import importlib.metadata as md, sys
print(f"python      {sys.version.split()[0]}  ({sys.executable})")
for name in ("hftbacktest", "numpy", "numba", "llvmlite", "polars"):
    try:
        print(f"{name:<11} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name:<11} (not installed)")
PY
}

installed_ok() {
    [[ -x "$VENV/bin/python" ]] || return 1
    "$VENV/bin/python" - "$HFT_VERSION" <<'PY' >/dev/null 2>&1
import sys, importlib.metadata as md
assert md.version("hftbacktest") == sys.argv[1]
import numpy
assert tuple(int(x) for x in numpy.__version__.split(".")[:2]) < (2, 3)
import numba, hftbacktest  # noqa: F401  (import check, incl. the Rust extension)
from hftbacktest.data.utils import binancefutures  # noqa: F401
PY
}

start=$(date +%s)
if [[ "${FORCE:-0}" == "1" && -d "$VENV" ]]; then
    echo "FORCE=1: removing $VENV"
    rm -rf "$VENV"
fi

if installed_ok; then
    echo "hftbacktest ${HFT_VERSION} already set up in $VENV"
else
    if [[ ! -x "$VENV/bin/python" ]]; then
        echo "creating $VENV with $($PY --version 2>&1)"
        "$PY" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install --disable-pip-version-check "${REQS[@]}"
    if ! installed_ok; then
        echo "ERROR: hftbacktest ${HFT_VERSION} did not import cleanly in $VENV" >&2
        exit 1
    fi
fi
report
echo "setup took $(( $(date +%s) - start )) s"
