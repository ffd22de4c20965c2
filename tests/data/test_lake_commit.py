"""A commit killed at any step leaves the old lake or the new one, never a mix; readers lock the lake.

A real subprocess commits an ingest that supersedes an earlier one and SIGKILLs itself at one
named step (`GRINDER_LAKE_KILL_AT`); the next open of the lake must read exactly as before the
ingest (killed before its journal was written) or exactly as after (killed later), with no
journal and no `.staging` left.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

import grinder.data.lake as lake_mod
from grinder.data.catalog import Catalog
from grinder.data.ingest.binance import parse_binance
from grinder.data.instruments import resolve_instrument
from grinder.data.lake import JOURNAL, KILL_AT_ENV, STAGING, Lake, read_lock
from grinder.data.tape import load_tape
from grinder.errors import DataError
from tests.conftest import REPO, write_capture

BTC = resolve_instrument("binance-usdm", "BTCUSDT")
WRITE = (
    "import pickle, sys; from grinder.data.lake import Lake; "
    "b, s = pickle.load(open(sys.argv[2], 'rb')); Lake(sys.argv[1]).write(b, s)"
)


def _read(root):
    """What a reader sees: the tape's content hash and length, row counts per table, the manifests."""
    tape = load_tape(root, "binance-usdm", "BTCUSDT")
    h = hashlib.sha256()
    for c in ("ts_exch", "ts_local", "kind", "side", "price", "qty", "ref", "flags"):
        h.update(np.ascontiguousarray(getattr(tape, c)).tobytes())
    with Catalog(root) as cat:
        counts = {t: cat.query(f"select count(*) from {t}").fetchall()[0][0] for t in cat.tables}
    return len(tape), h.hexdigest(), counts, sorted(m["group"] for m in Lake(root).manifests())


@pytest.fixture(scope="module")
def scene(real_lines, tmp_path_factory):
    """A lake holding a prefix of a capture, the pickled ingest of the whole, and both lakes' views."""
    d = tmp_path_factory.mktemp("commit")
    prefix = write_capture(d / "btcusdt_prefix.gz", real_lines[:1500])
    whole = write_capture(d / "btcusdt_whole.gz", real_lines)
    base = d / "base"
    Lake(base).write(parse_binance([prefix], BTC), [prefix])
    job = d / "job.pickle"
    job.write_bytes(pickle.dumps((parse_binance([whole], BTC), [whole])))
    after = d / "after"
    shutil.copytree(base, after)
    steps: list[str] = []
    real_step = lake_mod._step
    lake_mod._step = steps.append
    try:
        Lake(after).write(parse_binance([whole], BTC), [whole])
    finally:
        lake_mod._step = real_step
    return base, job, _read(base), _read(after), steps


def test_the_commit_has_the_steps_the_kills_cover(scene):
    *_, steps = scene
    # 3 tables + instrument + manifest moved in; the prefix's 3 parts and manifest deleted.
    assert steps == ["staged", "journaled", *(f"move-{i}" for i in range(5)), *(f"delete-{i}" for i in range(4)),
                     "applied", "committed"]  # fmt: skip


def _open_with_catalog(root):
    Catalog(root).close()


def _open_with_loader(root):
    load_tape(root, "binance-usdm", "BTCUSDT")


def _open_with_writer(root):
    with Lake(root)._locked():
        pass


def test_kill_at_every_commit_step_leaves_the_old_or_the_new_lake(scene, tmp_path):
    base, job, before, after, steps = scene
    assert before != after and before[0] < after[0]
    openers = [_open_with_catalog, _open_with_loader, _open_with_writer]
    for k, step in enumerate(steps):
        root = tmp_path / step
        shutil.copytree(base, root)
        r = subprocess.run(
            [sys.executable, "-c", WRITE, str(root), str(job)],
            env={**os.environ, KILL_AT_ENV: step},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == -signal.SIGKILL, (step, r.returncode, r.stderr)
        # Killed before the journal: nothing happened; from the journal on: the commit is finished.
        assert (root / JOURNAL).exists() == (step not in ("staged", "committed")), step
        assert (root / STAGING).exists(), step
        openers[k % 3](root)  # whoever opens the lake next finishes or forgets the commit
        assert not (root / JOURNAL).exists() and not (root / STAGING).exists(), step
        assert _read(root) == (before if step == "staged" else after), step


def test_a_writer_waits_for_readers(scene, tmp_path):
    base, job, before, after, _ = scene
    root = tmp_path / "lake"
    shutil.copytree(base, root)
    with Catalog(root):
        proc = subprocess.Popen([sys.executable, "-c", WRITE, str(root), str(job)], cwd=REPO)
        # However fast the machine, the writer cannot commit while the catalog holds the lake.
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=3)
        assert _read(root) == before
    assert proc.wait(timeout=300) == 0
    assert _read(root) == after


def test_writing_while_this_thread_reads_is_refused(scene, tmp_path):
    base, job, before, _, _ = scene
    root = tmp_path / "lake"
    shutil.copytree(base, root)
    batch, sources = pickle.loads(job.read_bytes())
    with read_lock(root), pytest.raises(DataError) as e:
        Lake(root).write(batch, sources)
    assert str(e.value) == (f"this thread still reads the lake at {root} (an open Catalog?): close it before writing")
    assert _read(root) == before


def test_a_damaged_journal_is_one_clear_error_and_nothing_changes(scene, tmp_path):
    base, *_ = scene
    root = tmp_path / "lake"
    shutil.copytree(base, root)
    (root / JOURNAL).write_text('{"moves": [')
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    for open_lake in (_open_with_catalog, _open_with_loader, _open_with_writer):
        with pytest.raises(DataError) as e:
            open_lake(root)
        assert str(e.value) == f"{root / JOURNAL}: unreadable commit journal: restore it or the lake from a copy"
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
