"""`grinder sweep export`: a set of a sweep as a backtest TOML and a live config, both run as exported."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tomllib

import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grinder.errors import ConfigError, DataError
from grinder.sweep.export import export_set, to_toml
from tests.cli.test_cli import SWEEP, grinder, sample  # noqa: F401 - the sample lake fixture
from tests.live.test_live_cli import ENV, REPO, events, procs, serve, wait_for  # noqa: F401 - procs: a fixture


@pytest.fixture(scope="module")
def swept(sample, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("sweeps")
    r = grinder("sweep", "static_grid", "--root", sample, *SWEEP, "--train", "0.6", "--no-track", "--no-report",
                "--out", out)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return next(out.iterdir())


def test_the_exported_backtest_config_gives_the_sweeps_digest(swept, sample, tmp_path):  # noqa: F811
    r = grinder("sweep", "export", swept, "--rank", "2", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads((swept / "summary.json").read_text())
    ranking = pq.read_table(swept / "ranking.parquet").to_pylist()
    second = next(x for x in ranking if x["rank"] == 2)
    back = tmp_path / f"rank2-set{second['set']}.backtest.toml"
    cfg = tomllib.loads(back.read_text())
    assert set(cfg) == {"strategy", "venue", "gates"}
    assert (cfg["strategy"]["interval"], cfg["strategy"]["half_spread"]) == (second["interval"], second["half_spread"])
    test = next(w for w in summary["windows"] if w["sample"] == "out")
    row = next(x for x in pq.read_table(swept / "results.parquet").to_pylist()
               if x["window"] == "test" and x["set"] == second["set"])  # fmt: skip
    lone = grinder("backtest", "static_grid", "--root", sample, "--config", back, "--start", test["start_ns"],
                   "--end", test["end_ns"], "--no-report", "--no-track", "--out", tmp_path / "runs")  # fmt: skip
    assert lone.returncode == 0, lone.stderr
    assert lone.stdout.split("digest ")[1].split()[0] == row["digest"]


def test_export_refuses_to_overwrite_and_names_what_is_wrong(swept, tmp_path):
    first = export_set(swept, tmp_path)
    before = first[1].read_text()
    with pytest.raises(ConfigError, match="exists: pass --force"):
        export_set(swept, tmp_path)
    assert first[1].read_text() == before
    again = export_set(swept, tmp_path, force=True, mode="testnet")
    assert tomllib.loads(again[2].read_text())["mode"] == "testnet"
    for kwargs, message in [
        ({"rank": 99}, "no rank 99 in this sweep"),
        ({"set_no": 99}, "no set 99 in this sweep"),
        ({"rank": 1, "set_no": 0}, "not both"),
        ({"mode": "dream"}, "live config: mode"),
    ]:
        with pytest.raises(ConfigError, match=message):
            export_set(swept, tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()  # nothing half-written
    with pytest.raises(DataError, match="no such sweep folder"):
        export_set(tmp_path / "none", tmp_path)
    with pytest.raises(DataError, match="no summary.json"):
        export_set(tmp_path, tmp_path)


def test_export_cli_errors_are_one_line_and_exit_2(swept, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "summary.json").write_text((swept / "summary.json").read_text())
    (bad / "ranking.parquet").write_bytes(b"PAR1 broken")
    r = grinder("sweep", "export", bad)
    assert r.returncode == 2 and "not a readable Parquet file" in r.stderr and str(bad / "ranking.parquet") in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


settings = st.dictionaries(
    st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12),
    st.one_of(
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False),
        st.text(max_size=20),
        st.lists(st.integers(-5, 5), max_size=3),
    ),  # fmt: skip
    max_size=6,
)


@given(settings, st.dictionaries(st.sampled_from(["strategy", "venue", "params"]), settings, max_size=3))
def test_toml_reads_back_as_written(top, tables):
    cfg = {**{k: v for k, v in top.items() if k not in tables}, **tables}
    assert tomllib.loads(to_toml(cfg)) == cfg


def test_the_exported_live_config_runs_the_exported_set_in_paper_mode(swept, procs, tmp_path):  # noqa: F811
    port = serve(procs)
    state = tmp_path / "state"
    _, _, live_toml = export_set(swept, tmp_path, rank=1, api_url=f"http://127.0.0.1:{port}", state_dir=state)
    exported = tomllib.loads(live_toml.read_text())
    env = {k: v for k, v in ENV.items() if not k.startswith("GRINDER_API_")}  # paper: no credentials
    paper = subprocess.Popen([sys.executable, "-m", "grinder", "live", "--config", str(live_toml)], env=env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    procs.append(paper)
    start = wait_for(lambda: next((e for e in events(state) if e["event"] == "start"), None))
    assert start["params"] == exported["params"] and start["mode"] == "paper" and start["strategy"] == "static_grid"
    summary = json.loads((swept / "summary.json").read_text())
    best = summary["best"][0]
    assert (start["params"]["interval"], start["params"]["half_spread"]) == (best["interval"], best["half_spread"])
    wait_for(lambda: any(e["event"] == "created" for e in events(state)))  # it quotes the exported grid
    paper.send_signal(signal.SIGTERM)
    assert paper.wait(30) == 0, paper.stderr.read()
    assert events(state)[-1]["event"] == "stop"
