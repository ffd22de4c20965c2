"""Ingest: parse vendor files into validated lake tables (one module per input format)."""
