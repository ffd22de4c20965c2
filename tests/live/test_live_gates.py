"""Gates on in the live adapter: fed by the ledger booked from the user stream, audited, and set in the config file."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from grinder.core.gates import GateConfig
from grinder.core.ledger import AVG_ENTRY, FEES, POSITION, REALIZED
from grinder.errors import ConfigError
from grinder.live.adapter import LiveAdapter
from grinder.live.audit import AuditLog
from grinder.live.client import make_client
from grinder.live.config import LiveConfig, load_config
from grinder.live.port import REFUSED_EVERY_NS
from grinder.live.reconcile import VenuePosition
from grinder.venue.server import VenueServer
from tests.live.test_adapter import PARAMS, config, offline, session
from tests.live.test_live_cli import ENV, REPO
from tests.venue.test_server import CREDS, tape  # noqa: F401 - tape is a fixture

HEAVY_FEE = 0.01  # 1% a fill: about 1.2 USDT on a 0.002 BTC quote, more than any mark move makes up here
LOSS = 0.5  # USDT: crossed by the first fill's commission


async def fee_heavy(srv, other):
    srv.x.fee_rate = HEAVY_FEE


def after(events: list[dict], i: int, kind: str) -> list[dict]:
    return [e for e in events[i + 1 :] if e["event"] == kind]


def test_the_daily_loss_kill_fires_on_the_first_fee_and_no_order_leaves_after_it(tape, tmp_path):  # noqa: F811
    gates = GateConfig(max_daily_loss=LOSS)
    adapter, srv, _, left, events = asyncio.run(session(tape, tmp_path, 8.0, fee_heavy, gates=gates))
    fired = [i for i, e in enumerate(events) if e["event"] == "gate_fired"]
    assert len(fired) == 1  # written once, not once per decision it blocks
    i = fired[0]
    kill = events[i]
    assert kill["reason"] == "daily_loss" and kill["settle"] == "USDT"
    assert kill["day_start_equity"] - kill["equity"] > LOSS
    # What put it over: a fill booked with the commission the venue charged (1% of its notional).
    fills = [e for e in events[:i] if e["event"] == "fill"]
    assert fills and all(f["fee"] == pytest.approx(f["qty"] * f["price"] * HEAVY_FEE, rel=1e-6) for f in fills)
    # The kill blocks every new order from then on; cancels still go (the stop's at least).
    assert not after(events, i, "create") and not after(events, i, "gate_cleared")
    assert after(events, i, "cancel") or not after(events, i, "created")
    # Aggregated: a line at most every 10 s (and the one flushed at stop), not one per decision.
    blocked = [e for e in events if e["event"] == "gates_blocked"]
    n_blocked = sum(e["counts"].get("daily_loss", 0) for e in blocked)
    assert n_blocked > len(blocked) and len(blocked) <= 2 + (events[-1]["ts_ns"] - kill["ts_ns"]) // REFUSED_EVERY_NS
    assert not [c for c in left if c.startswith(("g_", "grinder_"))]


def test_the_drawdown_guard_lets_only_orders_that_reduce_the_position_out(tape, tmp_path):  # noqa: F811
    gates = GateConfig(max_drawdown=LOSS)
    adapter, srv, _, left, events = asyncio.run(session(tape, tmp_path, 8.0, fee_heavy, gates=gates))
    fired = [i for i, e in enumerate(events) if e["event"] == "gate_fired"]
    assert fired
    i = fired[0]
    guard = events[i]
    assert guard["reason"] == "drawdown_reduce_only" and guard["peak_equity"] - guard["equity"] > LOSS
    # Until the next fill moves the position, what goes out only reduces the one the guard fired on
    # (nothing at all when it fired flat).
    pos = guard["position"]
    nxt = next((j for j in range(i + 1, len(events)) if events[j]["event"] == "fill"), len(events))
    sides = {e["side"] for e in events[i + 1 : nxt] if e["event"] == "create"}
    assert sides <= ({"sell"} if pos > 0 else {"buy"} if pos < 0 else set())
    blocked = [e for e in events if e["event"] == "gates_blocked"]
    assert sum(e["counts"].get("drawdown_reduce_only", 0) for e in blocked) >= 1


@pytest.mark.parametrize("mode", ["live", "paper"])
def test_the_ledger_booked_from_the_user_stream_equals_the_venues_position_and_fees(tape, tmp_path, mode):  # noqa: F811
    def freeze(srv):
        # The replay stands still from here: no more fills, so nothing the user stream has not
        # brought yet can be at the venue when the adapter stops.
        srv.speed = 1e-9

    adapter, srv, _, left, events = asyncio.run(session(tape, tmp_path, 8.0, during=freeze, mode=mode))
    venue = srv.x if mode == "live" else adapter.ex.x
    fills = [e for e in events if e["event"] == "fill"]
    assert len(fills) >= 2 and {f["fee_currency"] for f in fills} == {"USDT"}
    led = adapter.led
    assert led[POSITION] == pytest.approx(venue.led[POSITION], abs=1e-9)
    assert led[FEES] == pytest.approx(venue.led[FEES], abs=1e-7 * len(fills))  # the venue prints 8 decimals
    assert led[REALIZED] == pytest.approx(venue.led[REALIZED], abs=1e-6)
    assert sum(f["fee"] for f in fills) == pytest.approx(led[FEES])
    # Never adopted from the venue: booked fill by fill, and the check at stop finds no drift.
    assert not [e for e in events if e["event"] == "position_adopted"]
    last = [e for e in events if e["event"] == "ledger_drift"][-1]
    assert abs(last["position_drift"]) < 1e-9 and abs(last["wallet_drift"]) < 1e-6
    assert last["wallet"] == pytest.approx(venue.wallet(), abs=1e-6)


def test_blocked_counts_are_one_audit_line_per_interval_not_one_per_decision(tmp_path):
    with offline(config(tmp_path, 1, gates=GateConfig(rate_capacity=1, rate_per_s=1)), tmp_path) as adapter:
        for k in range(50):
            adapter._gate_news({"rate_limit": 2}, k * 100_000_000, 0.0, 0.0)
            adapter.flush_blocked(k * 100_000_000)
        adapter.flush_blocked(REFUSED_EVERY_NS + 1, force=True)
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    blocked = [(e["counts"], e["since_ns"]) for e in lines if e["event"] == "gates_blocked"]
    assert blocked == [({"rate_limit": 2}, 0), ({"rate_limit": 98}, 100_000_000)]


def test_a_live_config_takes_the_backtests_gates_table_and_names_an_unknown_key(tmp_path):
    assert LiveConfig.model_fields["gates"].annotation is GateConfig  # one model for backtest and live
    path = tmp_path / "live.toml"
    head = (
        'strategy = "static_grid"\nsymbol = "BTCUSDT"\n'
        "params = { levels = 2, interval = 0.5, half_spread = 0.1, order_qty = 0.002, max_position = 0.01 }\n"
    )
    path.write_text(head + "[gates]\nmax_daily_loss = 25.0\nmax_drawdown = 40\nrate_capacity = 10\n")
    cfg = load_config(path)
    assert cfg.gates == GateConfig(max_daily_loss=25.0, max_drawdown=40.0, rate_capacity=10)
    with offline(cfg.model_copy(update={"state_dir": tmp_path / "state"}), tmp_path) as adapter:
        assert list(adapter.decider.gate_cfg) == list(cfg.gates.as_array())  # the adapter decides with them
    path.write_text(head + "[gates]\nmax_daily_los = 25.0\n")
    with pytest.raises(ConfigError, match=r"live\.toml: gates\.max_daily_los: Extra inputs are not permitted$"):
        load_config(path)
    path.write_text(head + "[gates]\nmax_drawdown = -1\n")
    with pytest.raises(ConfigError, match=r"gates\.max_drawdown: Input should be greater than or equal to 0"):
        load_config(path)
    assert LiveConfig(strategy="static_grid", params=PARAMS, symbol="BTCUSDT").gates == GateConfig()  # all off


def test_an_unknown_gate_key_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "live.toml"
    path.write_text('strategy = "static_grid"\nsymbol = "BTCUSDT"\nparams = {}\n[gates]\nkill_me = 1\n')
    r = subprocess.run([sys.executable, "-m", "grinder", "live", "--config", str(path)], capture_output=True,
                       text=True, env=ENV, cwd=REPO, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"error: {path}: gates.kill_me: Extra inputs are not permitted"


def test_a_position_drift_is_adopted_once_the_next_check_still_sees_it(tape, tmp_path):  # noqa: F811
    async def main():
        srv = VenueServer(tape, CREDS, speed=1.0)
        srv.preroll()
        port = await srv.start()
        cfg = config(tmp_path, port)
        ex = make_client(cfg, CREDS.api_key, CREDS.secret)
        audit = AuditLog(tmp_path / "audit.jsonl", secrets=(CREDS.api_key, CREDS.secret))
        adapter = LiveAdapter(cfg, ex, audit)
        try:
            await adapter._start()  # markets, the start's reconciliation (flat: nothing to adopt), the wallet
            flat, held = VenuePosition(0.0, 0.0), VenuePosition(0.004, 61_800.0)
            seen = [await adapter._check_ledger(held, False), adapter.position]  # once: it may be a fill in flight
            seen += [await adapter._check_ledger(flat, False), adapter.position]  # ... and it was
            seen += [await adapter._check_ledger(held, False), adapter.position]
            seen += [await adapter._check_ledger(held, False), adapter.position]  # twice in a row: adopted
            seen += [await adapter._check_ledger(held, False), adapter.position]
            return adapter, seen
        finally:
            adapter.ids.close()
            adapter.budget.close()
            audit.close()
            await ex.close()
            await srv.stop()

    adapter, seen = asyncio.run(main())
    drifts, positions = seen[0::2], seen[1::2]
    assert [d.position for d in drifts] == [0.004, 0.0, 0.004, 0.004, 0.0]
    assert positions == [0.0, 0.0, 0.0, 0.004, 0.004]
    assert all(d.wallet == 0.0 for d in drifts)  # nothing traded: the wallet agrees
    assert adapter.led[POSITION] == 0.004 and adapter.led[AVG_ENTRY] == 61_800.0
    events = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events if e["event"] in ("ledger_drift", "position_adopted")]
    assert kinds == ["ledger_drift"] * 5 + ["position_adopted", "ledger_drift"]


def test_the_quantitative_rules_gate_keeps_live_orders_within_a_limit_and_the_ratios_are_audited(tape, tmp_path):  # noqa: F811
    from importlib import resources

    shipped = resources.files("grinder.core").joinpath("binance_qrules.toml").read_text(encoding="utf-8")
    rules = tmp_path / "rules.toml"
    rules.write_text(shipped.replace("orders_10s_max = 300", "orders_10s_max = 10"))
    gates = GateConfig(quant_rules=True, quant_rules_file=str(rules))
    adapter, srv, _, left, events = asyncio.run(session(tape, tmp_path, 6.0, gates=gates))
    creates = [e["ts_ns"] for e in events if e["event"] == "create"]
    # Within the margin: at most 9 (95 % of 10) new orders in any 10 s; the session is shorter than that.
    assert 0 < len(creates) <= 9 and creates[-1] - creates[0] < 10e9
    blocked = sum(e["counts"].get("quant_rules", 0) for e in events if e["event"] == "gates_blocked")
    assert blocked > 0  # the grid asked for more
    audited = [e for e in events if e["event"] == "quant_rules"]
    assert audited and audited[-1]["orders_10s"] <= 9 and audited[-1]["ufr"] is None  # too few orders to apply
    assert not [c for c in left if c.startswith(("g_", "grinder_"))]
