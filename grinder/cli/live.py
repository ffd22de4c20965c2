"""`grinder live` (run a strategy live; `kill` stops it) and `grinder record` (capture a venue's public streams)."""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path
from typing import Annotated

import typer

from grinder.cli.common import DEFAULT_ROOT, clean_errors, default_command, err, out
from grinder.errors import ConfigError, DataError, GrinderError

app = typer.Typer(cls=default_command("run"), no_args_is_help=True,
                  help="Run a strategy live (grinder live --config X); stop it (grinder live kill).")  # fmt: skip


@app.command("run")
@clean_errors
def live(
    config: Annotated[Path, typer.Option(help="TOML: strategy, symbol, mode, api_url, state_dir, ... and \\[params].")],
) -> None:
    """Run a strategy live on one symbol until SIGTERM / Ctrl-C, then cancel its orders and exit.

    Credentials come from GRINDER_API_KEY / GRINDER_API_SECRET (or *_FILE); every action is
    appended to <state_dir>/audit.jsonl. Exit 4 (one line naming them) when orders of ours may be
    left on the venue after stop_timeout_s.
    """
    import asyncio
    import signal

    import grinder
    from grinder.live.adapter import LiveAdapter
    from grinder.live.audit import AuditLog
    from grinder.live.client import credentials, make_client
    from grinder.live.config import load_config
    from grinder.live.kill import write_kill
    from grinder.live.shutdown import EXIT_ORDERS_LEFT

    cfg = load_config(config)

    def early_kill(*_) -> None:  # SIGUSR1 before the adapter's own handler: the kill file, not death
        with contextlib.suppress(OSError):
            cfg.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_kill(cfg.state_dir, "SIGUSR1")

    signal.signal(signal.SIGUSR1, early_kill)  # the default action would end the process un-killed
    if grinder.early_kill:  # one came while the command was loading (grinder/__init__.py held it)
        early_kill()
    key, secret = ("", "") if cfg.mode == "paper" else credentials()  # paper sends no signed request
    ex = make_client(cfg, key, secret)

    async def go() -> None:
        cfg.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the state is the operator's only
        # Fsynced by the adapter's housekeeping between decisions, not on a timer of its own.
        audit = AuditLog(cfg.state_dir / "audit.jsonl", secrets=(key, secret), max_delay_s=None)
        try:
            adapter = LiveAdapter(cfg, ex, audit)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, adapter.stop)
            loop.add_signal_handler(signal.SIGUSR1, adapter.request_kill)  # the kill switch (live.kill)
            out.print(f"{cfg.strategy} on {cfg.symbol} ({cfg.mode}); audit {cfg.state_dir / 'audit.jsonl'}")
            if adapter.model is not None:  # the version the alias named at start, kept for the session
                m = adapter.model.summary()
                out.print(f"  model {m['uri']} ({m['mode']}, {m['strategy']}; sha256 {m['sha256'][:12]})",
                          highlight=False)  # fmt: skip
            # Never exit 0 when orders of ours may still rest (live.shutdown): one line says which.
            try:
                await adapter.run()
            except GrinderError as e:  # the session ended (venue down, ...): its line says what was left too
                left = adapter.stop_outcome
                if left is None or left.clean:
                    raise
                merged = GrinderError(f"{e}; {left.message()}")
                merged.exit_code = e.exit_code
                raise merged from None
            except Exception:  # a crash (exit 1, its traceback): what was left is said first all the same
                if adapter.stop_outcome is not None and not adapter.stop_outcome.clean:
                    err.print(f"error: {adapter.stop_outcome.message()}", highlight=False, markup=False,
                              soft_wrap=True)  # fmt: skip
                raise
            left = adapter.stop_outcome
            pnl = "unknown" if adapter.pnl is None else f"{adapter.pnl:+.4f} {adapter.market['settle']}"
            out.print(f"stopped: {adapter.decisions} decisions, position {adapter.position:g}, PnL {pnl}")
            if left is not None and not left.clean:
                err.print(f"error: {left.message()}", highlight=False, markup=False, soft_wrap=True)
                raise typer.Exit(EXIT_ORDERS_LEFT)
        finally:
            audit.close()
            await ex.close()

    asyncio.run(go())


@app.command("kill")
@clean_errors
def live_kill(
    config: Annotated[Path, typer.Option(help="The running adapter's TOML (its state_dir is what is used).")],
    clear: Annotated[bool, typer.Option("--clear", help="Remove the kill file: the next start trades again.")] = False,
) -> None:
    """Kill switch: the adapter cancels everything, flattens if configured, and stays stopped until --clear.

    Writes <state_dir>/KILL, then sends SIGUSR1 to the adapter running on that folder (if any).
    """
    from grinder.live import kill
    from grinder.live.config import load_config

    cfg = load_config(config)
    if clear:
        had = kill.clear_kill(cfg.state_dir)
        out.print(f"cleared {kill.kill_path(cfg.state_dir)}" if had else f"no kill file in {cfg.state_dir}")
        if _ha_kill(cfg, None) is False:
            raise SystemExit(1)
        return
    shared = _ha_kill(cfg, "grinder live kill")  # first: a local failure must not leave the others trading
    path, pid = kill.kill(cfg.state_dir)
    who = f"adapter pid {pid} signalled (SIGUSR1)" if pid is not None else "no adapter running on the folder"
    out.print(f"killed: {path} written; {who}; a start refuses until `grinder live kill --clear`")
    if shared is False:
        raise SystemExit(1)


def _ha_kill(cfg, by: str | None) -> bool | None:
    """With `[ha]`: pull (or clear) the kill switch in Redis, which every instance of the strategy and symbol obeys.

    Pulled on one instance only, a follower would take the lease over and trade (decision 041).
    None without `[ha]`; False (said on stderr) if Redis did not take it.
    """
    if cfg.ha is None:
        return None
    import asyncio

    from grinder.core.strategy import get
    from grinder.live.leader import key_prefix, set_kill

    prefix = key_prefix(cfg.ha.account, get(cfg.strategy).name, cfg.symbol)
    try:
        asyncio.run(set_kill(cfg.ha, prefix, by))
    except Exception as e:  # noqa: BLE001 - the local kill file is written whatever Redis says
        what, then = ("written", "kill every instance by hand") if by else ("cleared", "no instance leads until it is")
        err.print(f"{prefix}:kill not {what} ({type(e).__name__}: {str(e)[:100]}); {then}")
        return False
    then = "an instance may lead again" if by is None else "no instance leads until --clear"
    out.print(f"{prefix}:kill {'cleared' if by is None else 'set'}: {then}")
    return True


@clean_errors
def record(
    symbol: Annotated[str, typer.Option(help="Symbol as the venue names it (BTCUSDT).")],
    api_url: Annotated[
        str | None, typer.Option(help="Base URL of a Binance-compatible venue (default: Binance USDT-M).")
    ] = None,
    seconds: Annotated[float | None, typer.Option(help="Stop after N seconds (default: on SIGTERM).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the raw capture (.gz).")] = Path("data/raw"),
    lake: Annotated[Path, typer.Option("--lake", help="Lake to ingest into (env GRINDER_LAKE).")] = DEFAULT_ROOT,
    venue: Annotated[str, typer.Option(help="Venue name in the lake.")] = "binance-usdm",
    ingest_after: Annotated[bool, typer.Option("--ingest/--no-ingest", help="Ingest the recording when done.")] = True,
) -> None:
    """Record a venue's depth diffs, trades and snapshots as a raw capture, then ingest it (docs/data/recording.md).

    Public data: no API key. SIGTERM / Ctrl-C finish the recording cleanly.
    """
    import asyncio
    import math
    import signal

    from grinder.live.client import GrinderBinance, client_options, market_instrument
    from grinder.live.recorder import Recorder, ingest_recording

    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"--seconds must be a positive number, got {seconds}")
    if api_url is not None and not re.fullmatch(r"https?://[^/\s]+/?", api_url):
        raise ConfigError(f"--api-url {api_url!r}: expected http(s)://host[:port]")
    # Checked before connecting: a folder that cannot be written would lose the whole recording.
    for what, folder in [("--out", out_dir)] + ([("--lake", lake)] if ingest_after else []):
        parent = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"{what} {folder}: not a folder that can be created or written ({parent} is not)")
    symbol = symbol.upper()
    from grinder.data.instruments import check_name

    check_name("symbol", symbol)  # it names the capture file and the lake folders: one path part each
    check_name("venue", venue)
    ex = GrinderBinance(client_options(api_url))
    rec = Recorder(ex, symbol, out_dir)

    async def go():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, rec.stop)
        try:
            host = api_url or "Binance USDT-M"
            until = f"for {seconds:g} s" if seconds is not None else "until SIGTERM / Ctrl-C"
            out.print(f"recording {symbol} from {host} into {out_dir} {until}")
            return await rec.run(seconds)
        finally:
            await ex.close()

    r = asyncio.run(go())
    out.print(f"recorded {r.lines:,} messages in {r.seconds:.1f} s: {r.depth:,} depth diffs, {r.trades:,} trades, "
              f"{r.snapshots:,} snapshots, {r.reconnects} reconnects")  # fmt: skip
    out.print(f"  raw capture: {r.path}")
    if r.min_lag_ns is not None and abs(r.min_lag_ns) > 60e9:
        # An emulator replays old exchange times: the backtester's clock estimate cannot bridge years.
        side = "ahead of" if r.min_lag_ns > 0 else "behind"
        out.print(f"  note: the local clock is {abs(r.min_lag_ns) / 1e9:,.0f} s {side} the venue's exchange times "
                  f"(a replay?); backtest with [venue] local_clock_offset_ns = {-r.min_lag_ns}")  # fmt: skip
    if not ingest_after:
        return
    inst = market_instrument(r.market, venue)
    t0 = time.perf_counter()
    try:
        with err.status(f"ingesting {r.path.name} as {inst.venue}/{inst.symbol}"):
            manifest = ingest_recording(r.path, lake, inst)
    except GrinderError as e:
        raise DataError(f"{e} (the recording is kept; ingest it later with `grinder data ingest binance`)") from None
    rep = manifest["report"]
    out.print(f"ingested into {lake}: {sum(rep['rows'].values()):,} rows in {time.perf_counter() - t0:.2f} s, "
              f"group {manifest['group']}")  # fmt: skip
    for t, n in rep["rows"].items():
        out.print(f"  {t:8s} {n:>12,}")
    for reason, n in rep["skipped"].items():
        out.print(f"  skipped {n:,}: {reason}")
    out.print(f"  gaps: {len(rep['gaps'])}")
    for g in rep["gaps"]:
        out.print(f"  [yellow]gap[/yellow] {g}")
    for note in rep["notes"]:
        out.print(f"  note: {note}")
