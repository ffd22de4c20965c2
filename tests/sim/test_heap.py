"""The heap policy: after keep_freed_memory, large blocks come from the heap and stay there when freed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

PROBE = r"""
import ctypes, sys
import numpy as np
from grinder.sim.heap import keep_freed_memory

class MallInfo2(ctypes.Structure):
    names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(n, ctypes.c_size_t) for n in names.split()]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2

def mapped_during(nbytes):
    a = np.ones(nbytes // 8)
    return libc.mallinfo2().hblkhd


def heap_after(blocks, nbytes):
    arrays = [np.ones(nbytes // 8) for _ in range(blocks)]
    del arrays
    return libc.mallinfo2().arena


if sys.argv[1] == "keep":
    assert keep_freed_memory() and keep_freed_memory()
mapped = mapped_during(8 << 20)
kept = heap_after(8, 8 << 20)
print(mapped >= 8 << 20, kept >= 64 << 20)
"""


def _glibc() -> tuple[int, ...]:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # "glibc 2.36"
    except (AttributeError, ValueError, OSError):
        return ()
    return tuple(int(x) for x in version.split(".")) if name == "glibc" else ()


def _probe(mode: str) -> str:
    # The allocator's own settings from the environment would decide the default case.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.skipif(_glibc() < (2, 33), reason="glibc's mallopt, and mallinfo2 (2.33) to look")
def test_large_blocks_come_from_the_heap_and_are_kept_once_asked():
    # By default glibc maps a fresh 8 MB block, and hands 64 MB freed at the top of its heap back.
    assert _probe("default") == ["True", "False"]
    assert _probe("keep") == ["False", "True"]  # from the heap, which keeps them after the free
