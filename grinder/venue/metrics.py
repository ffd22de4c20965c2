"""The venue emulator's Prometheus metrics, read from the server's state when scraped (decision 036).

`VenueServer` counts what it does as plain numbers (creates taken, creates refused by error code,
faults injected by knob, how late the replay streams); `VenueCollector.collect` reads them and the
matching core's ledger at scrape time. Served at the emulator's own `/metrics` (loopback peers only,
like `/admin/faults`). Every series carries `symbol`; names: docs/live.md, "Metrics".
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from grinder.core.ledger import N_FILLS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the classic text format generate_latest writes


class VenueCollector:
    """A `prometheus_client` collector over one `grinder.venue.server.VenueServer`."""

    def __init__(self, server):
        self.s = server

    def collect(self) -> Iterable[Metric]:
        s = self.s
        sym = [s.inst.symbol]

        def one(kind, name: str, doc: str, value: float) -> Metric:
            m = kind(name, doc, labels=["symbol"])
            m.add_metric(sym, value)
            return m

        yield one(CounterMetricFamily, "grinder_venue_orders_accepted", "Creates the venue took (post-only and IOC).",
                  s.orders_accepted)  # fmt: skip
        rej = CounterMetricFamily("grinder_venue_orders_rejected", "Creates the venue refused, by Binance error code.",
                                  labels=["symbol", "code"])  # fmt: skip
        for code, n in sorted(s.orders_rejected.items()):
            rej.add_metric([*sym, str(code)], n)
        yield rej
        yield one(CounterMetricFamily, "grinder_venue_fills", "Fills of our orders (the matching core's ledger).",
                  int(s.x.led[N_FILLS]))  # fmt: skip
        yield one(GaugeMetricFamily, "grinder_venue_open_orders", "Orders resting on the venue.", len(s.x.resting))
        faults = CounterMetricFamily(
            "grinder_venue_faults_injected",
            "Answers or streams a fault knob changed, by knob.",
            labels=["symbol", "fault"],
        )
        for knob in s.faults.knobs():
            if knob not in ("http_count", "retry_after_s"):  # parts of http_status, not faults of their own
                faults.add_metric([*sym, knob], s.faults_injected.get(knob, 0))
        yield faults
        yield one(CounterMetricFamily, "grinder_venue_requests", "REST requests from clients.", len(s.faults.requests))
        yield one(CounterMetricFamily, "grinder_venue_user_stream_messages", "Order updates sent on the user stream.",
                  s.order_updates)  # fmt: skip
        yield one(
            CounterMetricFamily,
            "grinder_venue_countdowns_fired",
            "Times the dead-man's switch ran out and cancelled the symbol's orders.",
            s.countdowns_fired,
        )
        yield one(GaugeMetricFamily, "grinder_venue_replay_lag_seconds",
                  "How far behind its schedule (speed x real time) the replay streamed its last row.",
                  s.replay_lag_s)  # fmt: skip
        yield one(CounterMetricFamily, "grinder_venue_replay_loops", "Times a looping replay started again.", s.loops)
        yield one(GaugeMetricFamily, "grinder_venue_exchange_time_seconds", "The replay's exchange time.",
                  s.now_ns / 1e9)  # fmt: skip


def venue_registry(server) -> CollectorRegistry:
    """A registry of its own for one emulator (a process, a test, may run several)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(VenueCollector(server))
    return reg
