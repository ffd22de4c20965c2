"""Storage schema of the Parquet lake: one table per kind, hive-partitioned by venue/symbol/date.

Every market row carries ``ts_exch`` (exchange time) and ``ts_local`` (local receive time),
both int64 nanoseconds since the Unix epoch, and ``seq``: the row's arrival order within its
source, used to break ties between tables at equal exchange time. See docs/data/lake.md.
"""

from __future__ import annotations

import pyarrow as pa

# Side codes (int8). For book rows: the book side; for trades: the aggressor's side.
SIDE_BID = 1
SIDE_ASK = -1
SIDE_BOTH = 0  # only for BOOK_RESET rows

# Book row kinds (int8).
BOOK_DIFF = 0  # absolute quantity at a price level; qty 0 removes the level
BOOK_SNAPSHOT = 1  # one level of a full snapshot; the snapshot is preceded by a BOOK_RESET row
BOOK_RESET = 2  # clear the side(s) given by `side`; the book is invalid until a snapshot follows

PARTITION_KEYS = ("venue", "symbol", "date")

BOOK = pa.schema(
    [
        ("ts_exch", pa.int64()),
        ("ts_local", pa.int64()),
        ("seq", pa.int64()),
        ("update_id", pa.int64()),
        ("kind", pa.int8()),
        ("side", pa.int8()),
        ("price", pa.float64()),
        ("qty", pa.float64()),
    ]
)

TRADES = pa.schema(
    [
        ("ts_exch", pa.int64()),
        ("ts_local", pa.int64()),
        ("seq", pa.int64()),
        ("trade_id", pa.int64()),
        ("side", pa.int8()),
        ("price", pa.float64()),
        ("qty", pa.float64()),
    ]
)

BBO = pa.schema(
    [
        ("ts_exch", pa.int64()),
        ("ts_local", pa.int64()),
        ("seq", pa.int64()),
        ("update_id", pa.int64()),
        ("bid_price", pa.float64()),
        ("bid_qty", pa.float64()),
        ("ask_price", pa.float64()),
        ("ask_qty", pa.float64()),
    ]
)

FUNDING = pa.schema(
    [
        ("ts_exch", pa.int64()),
        ("ts_local", pa.int64()),
        ("seq", pa.int64()),
        ("mark_price", pa.float64()),
        ("index_price", pa.float64()),
        ("funding_rate", pa.float64()),
        ("next_funding_ts", pa.int64()),
    ]
)

INSTRUMENTS = pa.schema(
    [
        ("venue", pa.string()),
        ("symbol", pa.string()),
        ("contract", pa.string()),
        ("base", pa.string()),
        ("quote", pa.string()),
        ("settle", pa.string()),
        ("tick_size", pa.float64()),
        ("lot_size", pa.float64()),
        ("min_notional", pa.float64()),
        ("contract_size", pa.float64()),
        ("maker_fee", pa.float64()),
        ("taker_fee", pa.float64()),
    ]
)

MARKET_TABLES: dict[str, pa.Schema] = {"book": BOOK, "trades": TRADES, "bbo": BBO, "funding": FUNDING}
