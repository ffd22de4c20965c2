"""Event-driven live adapter (arrives with the live-adapter issue)."""
