"""Strategy objects. Each module that defines `STRATEGY` (a `grinder.core.strategy.Strategy`) is
found by name by `grinder backtest`; drop a new module here to add one."""
