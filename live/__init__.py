"""The live driver: `LiveAdapter` (adapter.py) runs a strategy's decisions against a venue through
ccxt.pro, in live, testnet or paper mode (`grinder live`), with the same decision step as the
backtest (grinder.core.step).

Around it: the config (config.py), the venue port and its client (port.py, client.py), order
identity per instance (client_ids.py, instance.py, lock.py), the daily budget, retries and the
breaker (budget.py, retry.py), the ledger fed by fills (fills.py), reconciliation that fails closed
(reconcile.py), the audit trail and journal (audit.py, journal.py), the decision clock (clock.py),
reconciliation rollout modes and the kill switch (rollout.py, kill.py), shutdown and the dead-man switch
(shutdown.py, venue_watch.py), the mainnet guard (guard.py), paper fills (paper.py), the parity
check (parity.py) and the market-data recorder (recorder.py).
"""
