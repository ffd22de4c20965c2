"""Strategy objects (grid strategies arrive with the backtester)."""
