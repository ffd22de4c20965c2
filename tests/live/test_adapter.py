"""The live adapter against the emulator over loopback through ccxt.pro: it quotes, gets fills, stops clean."""

from __future__ import annotations

import asyncio
import json

import pytest

from grinder.data.errors import DataError
from grinder.venue.server import VenueServer
from live.adapter import LiveAdapter, LiveConfig, credentials, make_client
from live.audit import AuditLog
from tests.venue.test_server import CREDS, SYMBOL, client, tape  # noqa: F401 - tape is a fixture

PARAMS = {"levels": 3, "interval": 0.5, "half_spread": 0.1, "order_qty": 0.002, "max_position": 0.01}


def config(tmp_path, port: int, **kw) -> LiveConfig:
    return LiveConfig(strategy="static_grid", params=PARAMS, symbol="BTCUSDT", api_url=f"http://127.0.0.1:{port}",
                      state_dir=tmp_path / "state", step_ms=100, reconcile_s=1.0, **kw)  # fmt: skip


async def session(tape, tmp_path, seconds: float, before=None):  # noqa: F811
    srv = VenueServer(tape, CREDS, speed=20.0)
    srv.preroll()
    port = await srv.start()
    replay = asyncio.create_task(srv.run_replay())
    other = client(port)
    await other.load_markets()
    if before is not None:
        await before(srv, other)
    cfg = config(tmp_path, port)
    ex = make_client(cfg, CREDS.api_key, CREDS.secret)
    audit = AuditLog(tmp_path / "audit.jsonl", secrets=(CREDS.api_key, CREDS.secret))
    adapter = LiveAdapter(cfg, ex, audit)
    task = asyncio.create_task(adapter.run())
    await asyncio.sleep(seconds)
    mid_run = sorted(o.client_id for o in srv.x.open_orders())
    adapter.stop()
    await asyncio.wait_for(task, 30)
    left = sorted(o.client_id for o in srv.x.open_orders())
    replay.cancel()
    await ex.close()
    await other.close()
    audit.close()
    await srv.stop()
    events = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    return adapter, srv, mid_run, left, events


def test_the_adapter_quotes_gets_fills_and_cancels_its_orders_on_stop(tape, tmp_path):  # noqa: F811
    async def foreign(srv, other):
        bb, _ = srv.x.best()
        await other.create_order(SYMBOL, "limit", "buy", 0.002, (bb - 20_000) * 0.1,
                                 {"postOnly": True, "clientOrderId": "web_keep_me"})  # fmt: skip

    adapter, srv, mid_run, left, events = asyncio.run(session(tape, tmp_path, 6.0, foreign))
    ours = [c for c in mid_run if c.startswith("grinder_static_grid:BTCUSDT:")]
    assert len(ours) >= 2 and adapter.decisions > 10  # quotes resting on both sides while it ran
    kinds = [e["event"] for e in events]
    assert "created" in kinds and kinds[-1] == "stop"
    assert left == ["web_keep_me"]  # its own orders cancelled on stop, the foreign one untouched
    fills = [e for e in events if e["event"] == "fill"]
    assert fills and adapter.position == pytest.approx(srv.x.position()[0], abs=1e-9)
    text = (tmp_path / "audit.jsonl").read_text()
    assert CREDS.secret not in text and CREDS.api_key not in text


def test_secrets_come_from_the_environment_or_files_and_mainnet_is_gated(tmp_path, monkeypatch):
    for k in ("GRINDER_API_KEY", "GRINDER_API_SECRET", "GRINDER_API_KEY_FILE", "GRINDER_API_SECRET_FILE",
              "ALLOW_MAINNET_TRADE"):  # fmt: skip
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(DataError, match="set GRINDER_API_KEY or GRINDER_API_KEY_FILE"):
        credentials()
    (tmp_path / "secret").write_text("s3cret\n")
    monkeypatch.setenv("GRINDER_API_KEY", "k")
    monkeypatch.setenv("GRINDER_API_SECRET_FILE", str(tmp_path / "secret"))
    assert credentials() == ("k", "s3cret")
    mainnet = LiveConfig(strategy="static_grid", params=PARAMS, symbol="BTCUSDT")
    with pytest.raises(DataError, match="ALLOW_MAINNET_TRADE=1"):
        make_client(mainnet, "k", "s")
    monkeypatch.setenv("ALLOW_MAINNET_TRADE", "1")
    with pytest.raises(DataError, match="not in mainnet_allowlist"):
        make_client(mainnet, "k", "s")
