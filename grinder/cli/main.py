"""`grinder` command line: parses options, calls the library (grinder.sim.job, grinder.sweep.job, ...), prints.

One module per command group: cli/data.py, cli/backtest.py, cli/sweep.py, cli/portfolio.py (with
`ui`), cli/venue.py, cli/live.py (with `record`), cli/ml.py; cli/common.py holds what they share. Importing
this module loads none of the heavy libraries: each command imports what it uses when it runs.
"""

from __future__ import annotations

import typer

from grinder.cli import backtest, data, live, ml, portfolio, sweep, venue

app = typer.Typer(
    help="Grinder: grid trading research on crypto perpetual futures.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data.app, name="data")
app.add_typer(venue.app, name="venue")
app.command("backtest")(backtest.backtest)
app.add_typer(sweep.app, name="sweep")
app.command("portfolio")(portfolio.portfolio)
app.command("ui")(portfolio.ui)
app.add_typer(live.app, name="live")
app.add_typer(ml.app, name="ml")
app.command("record")(live.record)


def main() -> None:  # pragma: no cover
    """Entry point for `python -m grinder`."""
    app()
