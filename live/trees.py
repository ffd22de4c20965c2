"""A registered xgboost model's trees as flat arrays and a compiled one-row predictor: what live decisions call.

xgboost's own `inplace_predict` costs 150-300 µs for one row from Python (its call path, not its
trees: 50 trees of depth 4 are walked in about a microsecond), with a p99 in milliseconds on a busy
machine: most of a live decision's budget (p99 under 1 ms, docs/live.md). `compile_trees` reads
the booster's trees from its JSON dump into flat arrays; `Trees.predict` walks them in compiled
code the way xgboost's CPU predictor does: features cast to float32, a missing value (NaN) takes
the node's default branch, otherwise `x < split` goes left, and the leaves are summed in float32,
tree by tree in order, starting from the base score.

It is used only where it gives xgboost's numbers bit for bit: a gbtree booster of one output
(`num_target` 1, no classes), numerical splits only, an objective whose output is its margin
(`IDENTITY`). `compile_trees` then checks it against `booster.inplace_predict` on rows built from
the trees' own split values (each one, the float64 neighbours around it, which round onto it in
float32, missing values, far values); any other model, or any difference, is refused with the
reason, and the caller predicts through xgboost instead (`LoadedModel.predict`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
from numba import njit

# Objectives whose prediction is the margin itself (no sigmoid or softmax after the trees).
IDENTITY = frozenset({"reg:squarederror", "reg:absoluteerror", "reg:pseudohubererror"})
CHECK_ROWS = 512  # rows the compiled trees are checked on against xgboost at load
_LEAF = -1  # xgboost's child index of a leaf


@njit(cache=True)
def predict_one(x, base, roots, left, right, feature, split, default_left):
    """The model's output for one feature row `x` (float64, read as float32 as xgboost does), as float64."""
    acc = base
    for k in range(roots.shape[0]):
        r = roots[k]
        i = 0
        while left[r + i] != _LEAF:
            v = np.float32(x[feature[r + i]])
            if math.isnan(v):
                i = left[r + i] if default_left[r + i] else right[r + i]
            elif v < split[r + i]:
                i = left[r + i]
            else:
                i = right[r + i]
        acc = np.float32(acc + split[r + i])  # a leaf's value is kept where a split's condition would be
    return np.float64(acc)


@dataclass(frozen=True)
class Trees:
    """A booster's trees, flattened: node n of tree k is entry roots[k] + n of each array."""

    base: np.float32  # the base score (the margin before any tree)
    roots: np.ndarray  # int64: where each tree's nodes start
    left: np.ndarray  # int32: left child within the tree (-1: leaf)
    right: np.ndarray  # int32
    feature: np.ndarray  # int32: the split's feature column
    split: np.ndarray  # float32: the split value, or the leaf's value
    default_left: np.ndarray  # bool: where a missing value goes

    def predict(self, x: np.ndarray) -> float:
        """The output for one row (float64 [n_features], NaN missing)."""
        return predict_one(x, self.base, self.roots, self.left, self.right, self.feature, self.split,
                           self.default_left)  # fmt: skip


def compile_trees(booster, objective: str, n_features: int) -> tuple[Trees | None, str]:
    """(the booster's compiled trees, "") when they give xgboost's outputs exactly, else (None, why not)."""
    if objective not in IDENTITY:
        return None, f"objective {objective} transforms the margin"
    learner = json.loads(bytes(booster.save_raw("json")))["learner"]
    param = learner["learner_model_param"]
    gb = learner["gradient_booster"]
    if gb.get("name") != "gbtree":
        return None, f"booster {gb.get('name')} is not gbtree"
    if int(param.get("num_class", "0")) > 1 or int(param.get("num_target", "1")) != 1:
        return None, "more than one output"
    model = gb["model"]
    trees = model["trees"]
    if any(any(t.get("split_type") or []) for t in trees) or any(int(g) != 0 for g in model["tree_info"]):
        return None, "categorical splits or output groups"
    base = np.float32(float(param["base_score"].strip("[]")))
    sizes = [len(t["left_children"]) for t in trees]
    roots = np.zeros(len(trees), np.int64)
    roots[1:] = np.cumsum(sizes)[:-1]

    def cat(key: str, dtype) -> np.ndarray:
        parts = [np.asarray(t[key], np.float64 if dtype is np.float32 else None) for t in trees]
        # Split values are written as the shortest text that reads back as their float32.
        return np.concatenate(parts).astype(dtype) if parts else np.empty(0, dtype)

    compiled = Trees(base, roots, cat("left_children", np.int32), cat("right_children", np.int32),
                     cat("split_indices", np.int32), cat("split_conditions", np.float32),
                     cat("default_left", np.bool_))  # fmt: skip
    rows = check_rows(compiled, n_features)
    ours = np.array([compiled.predict(r) for r in rows])
    theirs = np.asarray(booster.inplace_predict(rows, validate_features=False), np.float64).reshape(-1)
    if not np.array_equal(ours, theirs, equal_nan=True):
        bad = int(np.flatnonzero(~((ours == theirs) | (np.isnan(ours) & np.isnan(theirs))))[0])
        return None, f"compiled trees differ from xgboost on check row {bad} ({ours[bad]!r} vs {theirs[bad]!r})"
    return compiled, ""


def check_rows(trees: Trees, n_features: int, n: int = CHECK_ROWS, seed: int = 0) -> np.ndarray:
    """Rows (float64 [n, n_features]) that take every branch of the trees' splits, missing values included.

    Each column draws from its splits' values, the float64 values next to them (which round onto the
    split in float32: equal, so right), the float32 values next to them, NaN, 0 and far values.
    """
    rng = np.random.default_rng(seed)
    inner = trees.left != _LEAF
    out = np.empty((n, n_features))
    for j in range(n_features):
        s = trees.split[inner & (trees.feature == j)].astype(np.float64)
        f32 = trees.split[inner & (trees.feature == j)]
        pool = np.concatenate([
            s, np.nextafter(s, np.inf), np.nextafter(s, -np.inf),
            np.nextafter(f32, np.float32(np.inf)).astype(np.float64),
            np.nextafter(f32, np.float32(-np.inf)).astype(np.float64),
            [np.nan, 0.0, 1e30, -1e30],
        ])  # fmt: skip
        out[:, j] = rng.choice(pool, n)
    return out
