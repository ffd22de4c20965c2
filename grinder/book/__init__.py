"""L2 order book: numba kernels over flat arrays, shared by the backtester and the live adapter."""
