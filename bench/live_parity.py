"""Parity report: the live adapter against the venue emulator and the backtest, same data, same latency.

The emulator replays a lake selection at `--speed`; the live adapter (live mode, real ccxt.pro over
loopback) runs static_grid on it for `--seconds`, logging every decision. The backtest runs the same
strategy on the same tape with the emulator's latency (local time = exchange time, no order
latency) and a decision step of step_ms x speed of exchange time (`live.parity`). Prints how many
live decisions had the same inputs as the paired backtest decision and whether their targets were
the same, then fills and PnL side by side; docs/parity.md explains the differences. Writes
bench/out/live_parity.json. Run:
`.venv/bin/python bench/live_parity.py [--root data/sample/lake] [--speed 1] [--seconds 20]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from grinder.core.strategy import get  # noqa: E402
from grinder.data.tape import load_tape  # noqa: E402
from grinder.live.parity import backtest_fills, backtest_pnl, live_session, parity  # noqa: E402

PARAMS = {"levels": 3, "interval": 1.0, "half_spread": 0.5, "order_qty": 0.002, "max_position": 0.01,
          "recenter_intervals": 2.0}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=REPO / "data" / "sample" / "lake")
    ap.add_argument("--venue", default="binance-usdm")
    ap.add_argument("--symbol", default="BTCUSDT")
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--step-ms", type=int, default=100)
    args = ap.parse_args()
    tape = load_tape(args.root, args.venue, args.symbol)
    with tempfile.TemporaryDirectory() as d:
        live = asyncio.run(live_session(tape, "static_grid", PARAMS, args.speed, args.seconds, args.step_ms, Path(d)))
    s = get("static_grid")
    r = parity(live.decisions, tape, s, s.validate(PARAMS), int(args.step_ms * 1e6 * args.speed), quantities=False)
    bt_fills = backtest_fills(r.backtest, r.span_ns)
    same_prefix = next((i for i, (a, b) in enumerate(zip(live.fills, bt_fills, strict=False)) if a != b),
                       min(len(live.fills), len(bt_fills)))  # fmt: skip
    bt_pos = sum(sd * q for sd, _, q in bt_fills)
    bt_pnl = backtest_pnl(r.backtest, r.span_ns)
    print(f"static_grid {PARAMS} on {args.venue}/{args.symbol} from {args.root}, replay {args.speed:g}x, "
          f"{args.seconds:g} s, decision every {args.step_ms} ms")  # fmt: skip
    print(f"live decisions {r.live}; inputs agree with the backtest's {r.agree} "
          f"(differ: {r.input_differences or 'none'}); same targets {r.same_targets} of {r.agree}")  # fmt: skip
    print(f"{'':8} {'fills':>6} {'position':>9} {'PnL':>10}")
    live_pnl = live.pnl if live.pnl is not None else float("nan")
    print(f"{'live':8} {len(live.fills):>6} {live.position:>9.4f} {live_pnl:>10.4f}")
    print(f"{'backtest':8} {len(bt_fills):>6} {bt_pos:>9.4f} {bt_pnl:>10.4f}")
    print(f"the first {same_prefix} fills are the same fills (side, price, qty)")
    for i in range(max(len(live.fills), len(bt_fills))):
        a = live.fills[i] if i < len(live.fills) else None
        b = bt_fills[i] if i < len(bt_fills) else None
        print(f"  {i:>3} live {a!s:>28}  backtest {b!s:>28}  {'' if a == b else '<- differs'}")
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "live_parity.json").write_text(json.dumps({
        "args": {k: str(v) for k, v in vars(args).items()}, "live_decisions": r.live, "inputs_agree": r.agree,
        "same_targets": r.same_targets, "input_differences": r.input_differences,
        "live": {"fills": live.fills, "position": live.position, "pnl": live.pnl},
        "backtest": {"fills": bt_fills, "position": bt_pos, "pnl": bt_pnl}, "same_fill_prefix": same_prefix,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
