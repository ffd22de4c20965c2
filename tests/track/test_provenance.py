"""Data fingerprints follow the tape's content (and only its content); git_commit reads HEAD and dirt, never raises."""

from __future__ import annotations

import subprocess
from dataclasses import replace

import numpy as np
import pytest

from grinder.data.tape import Series, load_tape
from grinder.track.provenance import EVENT_COLUMNS, TapeFingerprint, data_fingerprint, git_commit
from tests.conftest import REPO


@pytest.fixture(scope="module")
def tape():
    return load_tape(REPO / "data" / "sample" / "lake", "binance-usdm", "BTCUSDT")


def test_fingerprint_is_stable_and_independent_of_memory_layout(tape):
    fp = data_fingerprint(tape)
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert data_fingerprint(load_tape(REPO / "data" / "sample" / "lake", "binance-usdm", "BTCUSDT")) == fp
    # The same numbers held big-endian or in a strided view are the same data.
    swapped = replace(tape, qty=tape.qty.astype(">f8"), ts_exch=np.repeat(tape.ts_exch, 2)[::2])
    assert not swapped.ts_exch.flags.c_contiguous
    assert data_fingerprint(swapped) == fp


@pytest.mark.parametrize(
    "change",
    [
        lambda t: {"qty": np.where(np.arange(len(t)) == len(t) // 2, t.qty + 0.001, t.qty)},
        lambda t: {"price_ticks": np.where(np.arange(len(t)) == 7, t.price_ticks + 1, t.price_ticks)},
        lambda t: {"ts_local": t.ts_local + 1},
        lambda t: {"side": -t.side},
        lambda t: {"ts_exch": t.ts_exch[:-1], "kind": t.kind[:-1]},
        lambda t: {"instrument": t.instrument.model_copy(update={"maker_fee": 0.0})},
        lambda t: {"funding": Series({k: np.zeros(1, v.dtype) for k, v in t.funding.columns.items()})},
    ],
    ids=["qty", "price_ticks", "ts_local", "side", "one_row_less", "instrument", "funding"],
)
def test_fingerprint_changes_with_the_data(tape, change):
    assert data_fingerprint(replace(tape, **change(tape))) != data_fingerprint(tape)


def test_fingerprint_ignores_columns_the_backtest_does_not_read(tape):
    other = replace(tape, ref=tape.ref + 1, bbo=Series({"ts_exch": np.empty(0, np.int64)}))
    assert data_fingerprint(other) == data_fingerprint(tape)


@pytest.mark.parametrize("cuts", [[1], [7, 100, 100, 250_000], list(range(0, 466_576, 9_999))])
def test_a_tape_fed_in_chunks_has_the_whole_tapes_fingerprint(tape, cuts):
    fp = TapeFingerprint()
    bounds = [0, *cuts, len(tape)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        fp.add({n: getattr(tape, n)[a:b] for n in EVENT_COLUMNS})
    assert fp.hexdigest(tape.instrument, tape.funding.columns) == data_fingerprint(tape)


def test_funding_fed_in_parts_has_the_whole_series_fingerprint(tmp_path):
    """A funding series handed over in parts (LakeChunks.funding_parts: a day at a time) hashes as the whole one."""
    from grinder.data.chunks import LakeChunks
    from grinder.data.lake import Lake
    from grinder.data.synth import synth_batch

    day = 86_400 * 10**9
    for i, start in enumerate((1_704_067_200 * 10**9 - 3_600 * 10**9, 1_704_067_200 * 10**9 + day)):
        Lake(tmp_path).write(synth_batch(30_000, seed=i + 1, start_ns=start), [], key=f"d{i}")
    whole = load_tape(tmp_path, "synthetic", "SYNTHUSDT")
    fp = TapeFingerprint()
    fp.add({n: getattr(whole, n) for n in EVENT_COLUMNS})
    cols, n = whole.funding.columns, len(whole.funding)
    assert n > 3
    parts = [{k: v[a:b] for k, v in cols.items()} for a, b in ((0, 1), (1, 1), (1, n // 2), (n // 2, n))]
    assert fp.hexdigest(whole.instrument, parts) == fp.hexdigest(whole.instrument, cols) == data_fingerprint(whole)
    assert fp.hexdigest(whole.instrument, parts[:-1]) != data_fingerprint(whole)
    src = LakeChunks(tmp_path, "synthetic", "SYNTHUSDT")
    assert len(list(src.funding_parts())) == 2  # two date partitions
    assert fp.hexdigest(whole.instrument, src.funding_parts()) == data_fingerprint(whole)
    empty = LakeChunks(tmp_path, "synthetic", "SYNTHUSDT", 10**9, 2 * 10**9)
    assert [len(p["ts_exch"]) for p in empty.funding_parts()] == [0]


def test_chunks_that_change_a_columns_dtype_are_refused(tape):
    fp = TapeFingerprint()
    fp.add({n: getattr(tape, n)[:10] for n in EVENT_COLUMNS})
    with pytest.raises(ValueError, match="column qty changes dtype from <f8 to <f4"):
        fp.add({n: getattr(tape, n)[10:20].astype(np.float32) if n == "qty" else getattr(tape, n)[10:20]
                for n in EVENT_COLUMNS})  # fmt: skip


def _git(repo, *args):
    cmd = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


def test_git_commit_clean_dirty_untracked_and_outside_git(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    assert git_commit(repo) is None  # not a repository
    _git(repo, "init", "-q")
    assert git_commit(repo) is None  # a repository without commits
    (repo / "a.txt").write_text("one\n")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "one")
    head = _git(repo, "rev-parse", "HEAD")
    assert git_commit(repo) == head
    (repo / "a.txt").write_text("two\n")
    assert git_commit(repo) == head + "-dirty"
    _git(repo, "checkout", "-q", "a.txt")
    (repo / "new_strategy.py").write_text("")
    assert git_commit(repo) == head + "-dirty"
    assert git_commit(tmp_path / "missing") is None
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no git at all
    assert git_commit(repo) is None
