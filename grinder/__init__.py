"""Grinder: research framework for grid trading and passive market making on crypto perpetuals."""

import signal as _signal
import sys as _sys

__version__ = "0.1.0"

# `grinder live` takes SIGUSR1 as its kill switch (live.kill). The signal's default action ends a
# process at once, and the handler that writes the kill file needs the config, read a second later
# (imports): until then a SIGUSR1 is held here, the earliest code the process runs, and
# `grinder live` honours it once the config is read. Only for that command: a library import keeps
# the default.
early_kill: list[int] = []
if _sys.argv[1:2] == ["live"] and hasattr(_signal, "SIGUSR1"):
    _signal.signal(_signal.SIGUSR1, lambda signum, _frame: early_kill.append(signum))
