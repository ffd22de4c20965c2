"""Sweep grids: axis syntax, expansion order, and errors that name the culprit."""

from __future__ import annotations

import pytest

from grinder.core.strategy import get
from grinder.errors import ConfigError
from grinder.sweep.spec import expand, parse_axis

GRID = get("static_grid")
FIXED = {"order_qty": 0.1, "max_position": 5}


@pytest.mark.parametrize(
    "spec,values",
    [
        ("1,2,5", [1, 2, 5]),
        ("0.5:2.0:0.5", [0.5, 1.0, 1.5, 2.0]),
        ("0.1:0.3:0.1", [0.1, 0.2, 0.3]),  # no accumulated float error drops the last value
        ("10:30:10", [10, 20, 30]),
        ("lin:0:1:3", [0.0, 0.5, 1.0]),
        ("log:0.1:10:3", pytest.approx([0.1, 1.0, 10.0])),
        ([3, 4], [3, 4]),
        (7, [7]),
    ],
)
def test_axis_syntax(spec, values):
    assert parse_axis("x", spec) == values


@pytest.mark.parametrize(
    "spec,message",
    [
        ("2:1:0.5", "yields no value"),
        ("1:2:0", "STEP must be positive"),
        ("1:2", "START:STOP:STEP expected"),
        ("lin:1:2:0", "COUNT must be a positive integer"),
        ("log:0:1:3", "positive bounds"),
        ("1,1", "repeated values"),
        ("", "no values"),
        ("a:b:c", "'a' is not a number"),
        ("1:inf:1", "not a finite number"),
    ],
)
def test_bad_axes_name_the_axis(spec, message):
    with pytest.raises(ConfigError, match=message) as e:
        parse_axis("interval", spec)
    assert "interval" in str(e.value)


def test_expansion_is_the_product_in_axis_order_last_fastest():
    g = expand(GRID, {"interval": "1,2", "half_spread": "1:3:1"}, FIXED)
    assert len(g) == 6
    assert [g.values(i) for i in range(3)] == [{"interval": 1.0, "half_spread": h} for h in (1.0, 2.0, 3.0)]
    assert g.sets[5].interval == 2.0 and g.sets[5].half_spread == 3.0 and g.sets[5].order_qty == 0.1


@pytest.mark.parametrize(
    "axes,fixed,message",
    [
        ({}, FIXED, "empty sweep grid"),
        ({"intervl": "1,2"}, FIXED, r"unknown parameter\(s\) intervl"),
        ({"interval": "1,2"}, {**FIXED, "interval": 1}, "both swept and fixed"),
        ({"interval": "-1,1"}, {**FIXED, "half_spread": 1}, r"parameter set \(interval=-1\)"),
        ({"interval": "1,2"}, {"order_qty": 0.1}, "half_spread: Field required"),
    ],
)
def test_bad_grids_are_refused_before_any_run(axes, fixed, message):
    with pytest.raises(ConfigError, match=message):
        expand(GRID, axes, fixed)
