"""Experiment tracking: data fingerprints, git provenance, the MLflow store, sweeps and the UI."""
