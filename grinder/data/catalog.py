"""The catalog: DuckDB views over the Parquet lake, queried in place (nothing is copied).

A Catalog holds a shared lock on the lake from construction until `close()` (or the end of a
`with` block): the part files its views read stay exactly those of whole ingests meanwhile.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import duckdb

from grinder.data.lake import read_lock
from grinder.data.schema import MARKET_TABLES
from grinder.errors import DataError


class Catalog:
    """DuckDB over a lake: one view per table (book, trades, bbo, funding, instruments, and `features` when
    the feature store holds any: grinder.features.store)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._lock = ExitStack()
        # Views are lazy: DuckDB lists and reads the files at query time, so the lock stays held.
        self._lock.enter_context(read_lock(self.root))
        self.con = duckdb.connect(":memory:")
        self.tables: list[str] = []
        for table in (*MARKET_TABLES, "instruments"):
            depth = "*/*/*/*.parquet" if table != "instruments" else "*/*/*.parquet"
            pattern = self.root / table / depth
            if not any(self.root.glob(f"{table}/{depth}")):
                continue
            self.con.sql(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{pattern}', hive_partitioning = true)")
            self.tables.append(table)
        from grinder.features.store import attach  # the feature store's view, when the lake holds features

        attach(self)

    def close(self) -> None:
        """Release the lake (its lock and the DuckDB connection); relations from `query` die with it."""
        self._lock.close()
        self._closed = True
        if hasattr(self, "con"):
            self.con.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        # Once closed, nothing is left to release; closing again at interpreter exit would call into
        # a half torn-down `sys` (ExitStack reads sys.exc_info) and print an AttributeError.
        if hasattr(self, "_lock") and not getattr(self, "_closed", False):
            self._lock.close()

    def query(self, sql: str) -> duckdb.DuckDBPyRelation:
        """Run SQL against the lake's views; errors name the query problem."""
        try:
            return self.con.sql(sql)
        except duckdb.Error as e:
            msg = str(e).strip().splitlines()[0]
            raise DataError(f"query failed: {msg}") from None

    def summary(self) -> list[dict]:
        """Row count and exchange-time span per table, venue, symbol and date."""
        if not self.tables:
            return []
        parts = [
            f"SELECT '{t}' AS tbl, venue, symbol, CAST(date AS VARCHAR) AS date, count(*) AS rows, "
            f"min(ts_exch) AS first_ns, max(ts_exch) AS last_ns FROM {t} GROUP BY ALL"
            for t in self.tables
            if t in MARKET_TABLES
        ]
        rel = self.query(" UNION ALL ".join(parts) + " ORDER BY venue, symbol, date, tbl")
        cols = rel.columns
        return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]
