"""What a long library call says while it runs: the stage it is in, a count of work done, warnings.

The library calls (`backtest_job`, `sweep_job`, `portfolio_job`) take a `Progress`. The default
keeps stages quiet and hands warnings to Python's `warnings` (a notebook shows them under the
cell); the CLI passes one that draws stages as spinners and counts as a bar with the time remaining
on stderr, when it is a terminal (grinder.cli.common.ConsoleProgress). Work that can be counted
(backtests, sweeps, portfolios, `grinder data ingest` and `check`) is reported through `count`
with its total, so a long command says what it does at once and how long it has left.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator


class GrinderWarning(UserWarning):
    """Something a result's reader should know: a window too small to rank, a gap jumped, a rule broken."""


class Progress:
    """Quiet stages; warnings as `GrinderWarning`."""

    @contextlib.contextmanager
    def stage(self, text: str) -> Iterator[Callable[[str], None]]:
        """A stage of the work, described by `text`; yields a function that replaces the description."""
        yield lambda _text: None

    @contextlib.contextmanager
    def count(self, text: str, total: int) -> Iterator[Callable[[int, int], None] | None]:
        """Work counted in units (`total` of them); yields `update(done, total)`, or None when not shown."""
        yield None

    def warn(self, text: str) -> None:
        """A warning about the result (one line)."""
        warnings.warn(text, GrinderWarning, stacklevel=3)
