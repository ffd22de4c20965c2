"""Experiment tracking: backtests and sweeps in an MLflow store (sqlite + local artifacts), with provenance."""
