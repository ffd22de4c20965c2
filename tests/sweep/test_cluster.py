"""The same sweep on a Dask LocalCluster of two worker processes: identical results and digests."""

from __future__ import annotations

import socket

import pytest

from grinder.data.tape import load_tape
from grinder.errors import ConfigError
from grinder.sim.backtest import VenueConfig
from grinder.sweep import cluster
from grinder.sweep.folds import make_folds
from grinder.sweep.spec import expand
from grinder.sweep.study import Selection, run_study
from tests.sweep.test_study import GRID, SEL


@pytest.fixture(scope="module")
def sel(tmp_path_factory):
    """A copy of the sample lake: cluster workers keep tape caches in the lake they read."""
    import shutil

    dst = tmp_path_factory.mktemp("lake") / "lake"
    shutil.copytree(SEL.root, dst)
    return Selection(dst, SEL.venue, SEL.symbol)


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      host="127.0.0.1") as lc, Client(lc) as c:  # fmt: skip
        yield c


def test_cluster_results_equal_local_results(client, sel):
    t = load_tape(sel.root, sel.venue, sel.symbol)
    windows = make_folds(int(t.ts_exch[0]), int(t.ts_exch[-1]) + 1, train=0.5)
    g = expand(GRID, {"interval": "1,2,3", "half_spread": "1,4"}, {"order_qty": 0.1, "max_position": 5})
    local = run_study(sel, g, windows, VenueConfig(), workers=2)
    remote = run_study(sel, g, windows, VenueConfig(), client=client)
    assert len(client.scheduler_info()["workers"]) == 2
    assert remote.results["digest"].tolist() == local.results["digest"].tolist()
    assert remote.ranking["set"].tolist() == local.ranking["set"].tolist()
    for w in local.equity:
        assert (remote.equity[w][1] == local.equity[w][1]).all()


def test_an_address_that_does_not_answer_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 2)
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigError, match=f"cluster tcp://127.0.0.1:{port} does not answer"):
        cluster.connect(f"tcp://127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="must look like tcp://host:port"):
        cluster.connect("localhost:8786")


def test_a_cluster_without_workers_is_a_clear_error_not_a_hang(sel, monkeypatch):
    import threading

    from distributed import Client, LocalCluster

    monkeypatch.setattr(cluster, "WORKER_TIMEOUT_S", 1.0)
    t = load_tape(sel.root, sel.venue, sel.symbol)
    windows = make_folds(int(t.ts_exch[0]), int(t.ts_exch[-1]) + 1)
    g = expand(GRID, {"interval": "1,2"}, {"half_spread": 2, "order_qty": 0.1, "max_position": 5})
    outcome = []
    with LocalCluster(n_workers=0, dashboard_address=":0", host="127.0.0.1") as lc, Client(lc) as c:

        def go():
            try:
                run_study(sel, g, windows, VenueConfig(), client=c)
                outcome.append("finished")
            except ConfigError as e:
                outcome.append(str(e))

        th = threading.Thread(target=go, daemon=True)  # daemon: a hang (the old behaviour) cannot block exit
        th.start()
        th.join(timeout=120)
        assert outcome, "the sweep hung on a cluster without workers"
        assert outcome[0].startswith(f"cluster {lc.scheduler_address} has no workers (waited 1 s)"), outcome
