"""Live trading parts: client order ids, the daily budget, the audit trail, retries and the breaker,
the exchange port and reconciliation.

The event-driven adapter that puts them together (ccxt.pro feeds, the decision clock, paper and
live modes, `grinder live`) and the recorder are the live-adapter issue's remaining work.
"""
