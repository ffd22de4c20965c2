"""Heap policy for a process that runs many backtests: freed memory is kept and reused, not handed back.

glibc serves a large block (above its mmap threshold: 128 KB at first) with a fresh mapping and
unmaps it when freed, and it hands the free top of its heaps back to the kernel. Each backtest of a
sweep allocates megabytes (its per-decision records, its fills) and each window's tape and replay
tens of megabytes, so every one of them starts on pages the kernel must fault in and zero again,
a large part of a sweep's time (decision 016). With the threshold at glibc's maximum and trimming
off, a freed block goes back to the heap and the next backtest's arrays reuse its pages. The
process keeps its peak memory until it exits, which a sweep's process reaches anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper limit on 64-bit: larger blocks are always mapped
TRIM_THRESHOLD_MAX = 2**31 - 1  # mallopt takes an int

_lock = threading.Lock()
_kept: bool | None = None


def keep_freed_memory() -> bool:
    """Have glibc keep freed blocks up to 32 MB for reuse (once per process); False without glibc, or if it refused."""
    global _kept
    with _lock:
        if _kept is None:
            _kept = _mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) and _mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_MAX)
        return _kept


def _mallopt(param: int, value: int) -> bool:
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).mallopt  # glibc only: musl and macOS have no mallopt
    except (OSError, AttributeError, TypeError):
        return False
    fn.argtypes, fn.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return fn(param, value) == 1
