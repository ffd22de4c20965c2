"""Live trading parts: client order ids, the daily budget, the audit trail, retries and the breaker.

The event-driven adapter that puts them together (ccxt.pro feeds, exchange port, reconciliation,
`grinder live`) and the venue emulator are the live-adapter issue's remaining work.
"""
