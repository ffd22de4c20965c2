"""notebooks/data_and_book.ipynb, run by a Jupyter kernel on the bundled sample: its lake tables, coverage and
book are the sample's, and its check equals `grinder data check`'s."""

from __future__ import annotations

import json

from tests.cli.test_cli import grinder, sample  # noqa: F401 - the sample lake fixture
from tests.conftest import REPO
from tests.notebooks.runner import run_notebook

NOTEBOOK = REPO / "notebooks" / "data_and_book.ipynb"
PROBE = {
    "facts": "facts",
    "rows": "lake.groupby('tbl')['rows'].sum().to_dict()",
    "trades_by_side": "trades.set_index('side')['trades'].to_dict()",
    "spans": "coverage[['seconds', 'book rows']].to_dict(orient='records')",
    "kinds": "kinds.to_dict()",
    "seconds": "len(per_second)",
    "spread_min": "float(per_second['spread_mean'].min())",
    "levels": "levels.to_dict(orient='list')",
}


def test_the_notebook_shows_the_sample_and_checks_it_as_the_command_does(sample, kernels, tmp_path):  # noqa: F811
    r = grinder("data", "check", "--root", sample, "--symbol", "BTCUSDT")
    assert r.returncode == 0, r.stderr
    cli = json.loads(r.stdout.strip().splitlines()[-1])
    nb = run_notebook(NOTEBOOK, {"root": sample}, kernels, tmp_path / "work", PROBE).values

    assert nb["facts"] == {k: v for k, v in cli.items() if k != "clean"}
    # The sample as data/sample/README.md describes it: 445,263 book rows, 21,313 trades, 66,089 best
    # bid/ask updates in one span of 345 s (the book's from the first snapshot on: 23:54:16.493 -> 00:00:01.054).
    assert nb["rows"] == {"book": 445_263, "trades": 21_313, "bbo": 66_089}
    assert sum(nb["trades_by_side"].values()) == 21_313 and set(nb["trades_by_side"]) == {"-1", "1"}
    (span,) = nb["spans"]
    assert span["book rows"] == 445_263 and 344 < span["seconds"] < 346
    assert nb["kinds"] == {"diff": 443_262, "trade": 21_313, "snapshot level": 2_000, "reset": 1}
    assert sum(nb["kinds"].values()) == cli["events"]
    # The book: a spread at least one tick every second of the span; five levels a side in price order.
    assert 344 <= nb["seconds"] <= 347 and nb["spread_min"] >= 1
    bids, asks = nb["levels"]["bid"], nb["levels"]["ask"]
    assert len(bids) == len(asks) == 5
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]
    assert all(q > 0 for q in nb["levels"]["bid qty"] + nb["levels"]["ask qty"])
