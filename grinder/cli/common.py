"""What every command shares: the two consoles, the common options, one-line errors, progress on stderr."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from typer.core import TyperGroup

from grinder.errors import ConfigError, GrinderError
from grinder.progress import Progress
from grinder.settings import default_lake
from grinder.sweep.lifecycle import Interrupted

# Piped output is not wrapped at 80 columns: tables stay one row per line for grep and diff.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

DEFAULT_ROOT = default_lake()
RootOpt = Annotated[Path, typer.Option("--root", help="Lake folder (env GRINDER_LAKE).")]
TrackOpt = Annotated[bool, typer.Option("--track/--no-track", help="Record the run in MLflow (docs/tracking.md).")]
MlrunsOpt = Annotated[
    Path | None, typer.Option("--mlruns", help="MLflow store folder (default: $GRINDER_MLRUNS or ./mlruns).")
]
StrategyArg = Annotated[str, typer.Argument(help="Strategy name (a module in strategies/ defining STRATEGY).")]
MS_NS = 1_000_000


def clean_errors(fn):
    """Turn expected failures into one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GrinderError as e:
            _error_line(str(e))
            # 2 unless the error says otherwise (VenueError: 3, a session the venue ended).
            raise typer.Exit(e.exit_code) from None
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(x) for x in first["loc"])
            _error_line(f"invalid {loc}: {first['msg']}")
        except Interrupted as e:  # a signal stopped the command (grinder.sweep.lifecycle)
            _error_line(str(e))
            raise typer.Exit(e.exit_code) from None
        raise typer.Exit(2)

    return wrapper


def _error_line(message: str) -> None:
    """`error: <message>` on stderr, the message as written: rich markup would eat `[strategy]` and the like."""
    err.print("[red]error:[/red] ", end="", highlight=False)
    err.print(message, markup=False, highlight=False, soft_wrap=True)


class ConsoleProgress(Progress):
    """A library call's stages as spinners and counts as a bar on stderr (when it is a terminal); warnings as lines."""

    @contextlib.contextmanager
    def stage(self, text: str) -> Iterator[Callable[[str], None]]:
        with err.status(text) as status:
            yield status.update

    @contextlib.contextmanager
    def count(self, text: str, total: int) -> Iterator[Callable[[int, int], None] | None]:
        if not err.is_terminal:
            yield None
            return
        from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        with Bar(TextColumn(text), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeRemainingColumn(),
                 console=err, transient=True) as bar:  # fmt: skip
            task = bar.add_task("run", total=max(1, total))
            # The total may change as the work is learnt (a portfolio's picks): the bar follows it.
            yield lambda done, total_: bar.update(task, completed=done, total=max(1, total_))

    def warn(self, text: str) -> None:
        err.print(f"warning: {text}", highlight=False, markup=False, soft_wrap=True)


def ms_to_ns(option: str, value: float | None) -> int | None:
    """A command line's milliseconds as VenueConfig's nanoseconds; ConfigError names the option."""
    import math

    if value is None:
        return None
    if not (math.isfinite(value) and abs(value * MS_NS) < 2**63):
        raise ConfigError(f"{option}: {value} is not a finite number of ms within int64 ns")
    return int(round(value * MS_NS))


def when(ns: int) -> str:
    """An exchange time (ns) as ISO 8601 UTC to the millisecond."""
    import numpy as np

    return str(np.datetime64(int(ns), "ns").astype("datetime64[ms]"))


def span(ns: int) -> str:
    """A duration (ns) in the largest unit that keeps it readable."""
    s = ns / 1e9
    return f"{s:.3f} s" if s < 3600 else f"{s / 3600:.1f} h" if s < 3 * 86400 else f"{s / 86400:.1f} days"


def default_command(name: str) -> type[TyperGroup]:
    """A command group in which arguments that name none of its commands go to command `name`:
    `grinder sweep STRATEGY ...` is `grinder sweep run STRATEGY ...`, as before the group had others."""

    class Group(TyperGroup):
        def parse_args(self, ctx, args):
            if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
                args = [name, *args]
            return super().parse_args(ctx, args)

    return Group
