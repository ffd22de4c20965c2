"""Market data layer: schema, ingest, Parquet lake, DuckDB catalog, tape loader, synthetic data."""
