"""A sweep's own peak memory."""

from __future__ import annotations

import subprocess
import sys

import numpy as np


def test_the_peak_is_this_processes_own_not_the_one_of_the_process_that_started_it():
    parent = np.ones(300 * 2**20 // 8)  # 300 MB resident here: a large test runner starting a sweep
    code = "from grinder.sweep.memory import peak_rss_bytes; print(peak_rss_bytes())"
    child = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert parent.sum() > 0 and child < 200 * 2**20  # getrusage's ru_maxrss would say >= 300 MB
