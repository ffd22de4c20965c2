"""Grinder's errors: each names its culprit in one line, and the CLI prints it and exits with `exit_code`.

Catch `GrinderError` to handle any of them. The kinds say whose input was wrong:

- `DataError`: market data, the lake, a tape, a run or sweep folder read back.
- `ConfigError`: settings, strategy parameters, gates, a sweep or portfolio spec, instrument rules.
- `TrackingError`: the MLflow store.
- `VenueError`: the venue (or its emulator) could not be reached, refused, or ended the session.
- `LiveError`: the live adapter's own state: order identities, instances, the kill switch, budgets.

Exit codes: 2 for each kind; 3 for a live session the venue ended (`VenueDown`, `DeadManLost`); 4
when a live stop may have left orders of ours; 5 when the promotion gate refused a challenger
(`grinder.ml.promote.PromotionRefused`: no one's input was wrong, the model lost; the champion stays).
"""

from __future__ import annotations


class GrinderError(Exception):
    """An error the user can act on. `path` and `line` (optional) say where; `exit_code` is the CLI's."""

    exit_code = 2

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        self.message = message
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)


class DataError(GrinderError):
    """Bad market data, or a request the lake, a tape or a result folder cannot answer."""


class ConfigError(GrinderError):
    """A setting, parameter, spec or instrument rule that is missing, malformed or out of range."""


class TrackingError(GrinderError):
    """The MLflow store is missing, locked, or holds something other than what was asked for."""


class VenueError(GrinderError):
    """The venue could not be reached, refused the session, or ended it."""


class LiveError(GrinderError):
    """The live adapter refuses to go on: its order identities, instances, kill switch or budgets say no."""
