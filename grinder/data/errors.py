"""Errors raised by the data layer; each names the culprit so the CLI can print one line."""

from __future__ import annotations


class DataError(Exception):
    """Bad input data or a bad request against the data layer."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        self.message = message
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
