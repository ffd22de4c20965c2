"""Parameters by name: one declaration gives the vector and each slot's index, and a reorder breaks nothing."""

from __future__ import annotations

import ast
import importlib.util
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from grinder.core.gates import G, GateConfig
from grinder.core.params import ParamVector
from grinder.core.qrules import C, load_quant_rules
from grinder.data.tape import load_tape
from grinder.sim.backtest import VenueConfig, run_backtest
from grinder.strategies import adaptive_grid, static_grid

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "model, index",
    [
        (
            static_grid.StaticGridParams(levels=7, interval=2.5, half_spread=1.5, order_qty=0.1, max_position=3.0),
            static_grid.P,
        ),
        (
            adaptive_grid.AdaptiveGridParams(interval=3.0, half_spread=2.0, order_qty=0.2, max_position=2.0),
            adaptive_grid.P,
        ),
        (GateConfig(rate_capacity=4, max_position=2.5, spread_window=7, max_drawdown=9.0, quant_rules=True), G),
        (load_quant_rules(), C),
    ],
)
def test_every_slot_holds_the_field_its_name_says(model: ParamVector, index):
    vec = model.as_array()
    assert index._fields == type(model).vector_fields() and len(vec) == len(index)
    for name, slot in zip(index._fields, index, strict=True):
        assert vec[slot] == float(getattr(model, name)), name
    assert not set(type(model).vector_exclude) & set(index._fields)


def test_fields_kept_out_of_the_vector_are_named_ones():
    with pytest.raises(AttributeError):
        _ = G.quant_rules_file
    assert "window_s" not in C._fields and "dust_notional" not in C._fields


def reordered(path: Path, cls: str, tmp: Path) -> object:
    """The module at `path` with the fields of class `cls` declared in reverse order, imported afresh."""
    src = path.read_text()
    lines = src.splitlines(keepends=True)
    body = next(n for n in ast.parse(src).body if isinstance(n, ast.ClassDef) and n.name == cls).body
    fields = [n for n in body if isinstance(n, ast.AnnAssign)]
    first, last = fields[0].lineno - 1, fields[-1].end_lineno
    assert all(a.end_lineno + 1 == b.lineno for a, b in pairwise(fields)), "fields must be contiguous"
    chunks = ["".join(lines[f.lineno - 1 : f.end_lineno]) for f in fields]
    out = tmp / f"reordered_{path.stem}.py"
    out.write_text("".join(lines[:first]) + "".join(reversed(chunks)) + "".join(lines[last:]))
    spec = importlib.util.spec_from_file_location(out.stem, out)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[out.stem] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    "module, cls, values",
    [
        (static_grid, "StaticGridParams",
         {"levels": 5, "interval": 5.0, "half_spread": 2.0, "order_qty": 0.002, "max_position": 0.02}),
        (adaptive_grid, "AdaptiveGridParams",
         {"levels": 4, "interval": 6.0, "half_spread": 3.0, "order_qty": 0.002, "max_position": 0.02, "skew": 1.0}),
    ],
)  # fmt: skip
def test_a_strategy_with_its_fields_reordered_backtests_to_the_same_digest(module, cls, values, tmp_path):
    """The fields declared in reverse: every slot moves (the vectors differ), the kernel still reads
    each by name, and the sample backtest comes out the same, fill for fill."""
    moved = reordered(Path(module.__file__), cls, tmp_path)
    tape = load_tape(REPO / "data" / "sample" / "lake", "binance-usdm", "BTCUSDT")
    a_params, b_params = module.STRATEGY.validate(values), moved.STRATEGY.validate(values)
    a_vec, b_vec = module.STRATEGY.vector(a_params), moved.STRATEGY.vector(b_params)
    assert not np.array_equal(a_vec, b_vec) and sorted(a_vec) == sorted(b_vec)  # the same numbers, moved
    assert moved.P._fields == tuple(reversed(module.P._fields))
    a = run_backtest(tape, module.STRATEGY, a_vec, VenueConfig())
    b = run_backtest(tape, moved.STRATEGY, b_vec, VenueConfig())
    assert a.counters["fills"] > 0
    assert a.digest == b.digest
