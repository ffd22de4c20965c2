"""`grinder venue serve`: the local Binance USDT-M emulator on loopback, with fault knobs."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from grinder.cli.common import DEFAULT_ROOT, RootOpt, clean_errors, out, when
from grinder.errors import ConfigError, DataError
from grinder.settings import parse_time

app = typer.Typer(help="The local Binance USDT-M venue emulator (for testing the live adapter).", no_args_is_help=True)


def fault_options(fn):
    """Give a command a `--fault-NAME` option for every knob of `grinder.venue.faults.Faults` (its **faults).

    The knobs are declared once, in `Faults`; the command receives them as fault_NAME keywords.
    """
    import inspect

    from grinder.venue.faults import Faults

    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    for name, (typ, default, text) in Faults.knobs().items():
        flag = "--fault-" + name.replace("_", "-")
        opt = typer.Option(flag, help=text) if typ is bool else typer.Option(flag, help=text, min=0)
        params.append(inspect.Parameter(f"fault_{name}", inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=Annotated[typ, opt]))  # fmt: skip
    fn.__signature__ = sig.replace(parameters=params)
    return fn


@app.command("serve")
@clean_errors
@fault_options
def venue_serve(
    symbol: Annotated[str, typer.Option(help="Symbol.")] = "BTCUSDT",
    venue: Annotated[str, typer.Option(help="Venue of the data in the lake.")] = "binance-usdm",
    start: Annotated[str | None, typer.Option(help="Start (ISO 8601 UTC or ns).")] = None,
    end: Annotated[str | None, typer.Option(help="End, exclusive.")] = None,
    speed: Annotated[float, typer.Option(help="Replay speed, x real time.")] = 1.0,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).", min=0, max=65535)] = 0,
    balance: Annotated[float, typer.Option(help="Starting wallet, USDT.")] = 10_000.0,
    loop: Annotated[
        bool, typer.Option("--loop", help="At the end of the data, replay it again from its first book (time goes on).")
    ] = False,
    root: RootOpt = DEFAULT_ROOT,
    **faults,
) -> None:
    """Replay a selection as a Binance USDT-M venue on 127.0.0.1 until SIGTERM / Ctrl-C.

    At the end of the data it stays up (the book frozen, orders still taken and cancellable) or,
    with --loop, replays it again. The API key and secret clients must sign with come from
    GRINDER_VENUE_API_KEY and GRINDER_VENUE_SECRET (never from the command line). The --fault-*
    knobs can also be set while it runs: POST /admin/faults a JSON object (loopback only).
    """
    import asyncio
    import signal

    from grinder.data.tape import load_tape
    from grinder.venue.auth import Credentials
    from grinder.venue.server import VenueServer

    key, secret = os.environ.get("GRINDER_VENUE_API_KEY", ""), os.environ.get("GRINDER_VENUE_SECRET", "")
    if not key or not secret:
        raise ConfigError("set GRINDER_VENUE_API_KEY and GRINDER_VENUE_SECRET: the credentials clients must sign with")
    if speed <= 0:
        raise ConfigError(f"--speed must be > 0, got {speed}")
    tape = load_tape(root, venue, symbol, parse_time(start), parse_time(end))
    if len(tape) == 0:
        raise DataError(f"no events for {venue}/{symbol} in {root} in that span")
    srv = VenueServer(tape, Credentials(key, secret), speed=speed, balance=balance)
    try:
        srv.faults.set({k.removeprefix("fault_"): v for k, v in faults.items()})
    except ValueError as e:
        raise ConfigError(f"--fault-*: {e}") from None
    if loop and srv.loop_row() is None:
        raise DataError(f"--loop: {venue}/{symbol} in that span has no book snapshot to start again from")

    def at_end(s: VenueServer) -> None:
        at = when(s.now_ns)
        if loop:
            out.print(f"end of the data at {at}: replaying it again from its first book (loop {s.loops + 1})")
        else:
            out.print(f"end of the data at {at}: the venue stays up with the book frozen; orders are still "
                      f"taken and cancellable (SIGTERM / Ctrl-C stops it)")  # fmt: skip

    async def serve() -> None:
        srv.preroll()
        try:
            bound = await srv.start(port)
        except OSError as e:
            why = os.strerror(e.errno) if e.errno else str(e)  # asyncio's own text repeats the address
            raise ConfigError(f"--port {port}: cannot listen on 127.0.0.1:{port}: {why}") from None
        stop = asyncio.Event()
        ev_loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            ev_loop.add_signal_handler(sig, stop.set)
        on = [k for k, v in srv.faults.values().items() if v]
        out.print(f"venue {venue}/{symbol} on http://127.0.0.1:{bound} (ws://127.0.0.1:{bound}/ws), "
                  f"{len(tape):,} events at {speed:g}x{', looping' if loop else ''}"
                  f"{'; faults: ' + ', '.join(on) if on else ''}")  # fmt: skip
        replay = asyncio.create_task(srv.run_tape(loop, at_end))
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({replay, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if replay.done() and replay.exception() is not None:
            waiter.cancel()
            await srv.stop()
            raise replay.exception()  # a replay that broke is not a venue that stays up
        await waiter  # the data ended: up until stopped
        out.print("stopping")
        replay.cancel()
        await srv.stop()

    asyncio.run(serve())
