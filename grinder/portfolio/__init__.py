"""Multi-symbol portfolio pieces: a top-K symbol prefilter, equity curves on one time grid, a drawdown allocator."""
