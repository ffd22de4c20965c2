"""`grinder ml train` end to end: a real process on the sample lake, an empty store, exit codes and one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from grinder.ml.train import EXPERIMENT
from grinder.track.mlflow_store import open_store

WINDOW = ("--start", "2024-08-08T23:55:00", "--end", "2024-08-08T23:55:45")


def grinder(*args):
    return subprocess.run([sys.executable, "-m", "grinder", *map(str, args)], capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def test_train_prints_the_folds_against_the_baseline_and_registers_a_version(sample_lake, tmp_path):
    store = tmp_path / "mlruns"
    xgb = ("--xgb", "num_boost_round=20", "--xgb", "max_depth=3")
    r = grinder("ml", "train", "--label", "markout_bid_10s", "--root", sample_lake, "--every", "500ms", "--folds", "2",
                "--embargo", "15s", *xgb, "--mlruns", store)  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("markout_bid_10s on binance-usdm/BTCUSDT: 670 samples every 500ms (20 dropped")
    assert lines[0].endswith("reg:squarederror")
    head = "fold train test purged embargoed rmse (baseline) mae (baseline) r2 (baseline)"
    assert lines[1].split() == head.split()
    assert [ln.split()[0] for ln in lines[2:5]] == ["0", "1", "mean"]
    # 10 s of labels at 500 ms purged before each test fold, and the embargo's 5 s more.
    assert [ln.split()[3:5] for ln in lines[2:4]] == [["20", "10"], ["20", "10"]]
    assert lines[5].split() == ["registered", "models:/grinder-markout_bid_10s/1"]
    assert lines[7].split() == ["features:", "computed"]
    client, _ = open_store(store, EXPERIMENT)
    mv = client.get_model_version("grinder-markout_bid_10s", "1")
    assert mv.tags["label"] == "markout_bid_10s" and mv.tags["model_sha256"] in lines[6]
    run = client.get_run(mv.run_id)
    assert (run.data.params["embargo_ns"], run.data.params["xgb.max_depth"]) == ("15000000000", "3")
    assert len(client.get_metric_history(mv.run_id, "baseline_rmse")) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--label", "markout_mid_10s"], "unknown label 'markout_mid_10s'; this label spec's labels: fwd_rv_10s"),
        (["--label", "fwd_rv_10s", *WINDOW], "tests on 9 samples, fewer than the minimum 20 (35 samples in 4 blocks)"),
        (
            ["--label", "fwd_rv_1m", *WINDOW],
            "label fwd_rv_1m: its horizon 1m is not shorter than the longest covered span of the selection (45.000 s)",
        ),  # fmt: skip
        (["--label", "fwd_rv_10s", "--xgb", "etta=0.1"], "--xgb etta: not an xgboost parameter"),
        (["--label", "fwd_rv_10s", "--xgb", "seed=3"], "--xgb seed: set by --seed"),
        (["--label", "fwd_rv_10s", "--every", "often"], "--every 'often': expected a duration"),
        (["--label", "fwd_rv_10s", "--every", "0s"], "the sample interval must be positive ns, got 0"),
        (["--label", "fwd_rv_10s", "--embargo", "-1s"], "--embargo '-1s': expected a duration"),
    ],
)
def test_bad_input_is_one_error_line_exit_2_and_nothing_registered(args, message, sample_lake, tmp_path):
    store = tmp_path / "mlruns"
    r = grinder("ml", "train", "--root", sample_lake, "--mlruns", store, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert message in r.stderr
    assert not store.exists()  # refused before the store was opened: no run, no version


def test_a_config_sets_the_feature_set_and_label_spec(sample_lake, tmp_path):
    cfg = tmp_path / "ml.toml"
    cfg.write_text("[labels]\nhorizons_ns = [5_000_000_000]\n[features]\nlevels = 0\n")
    r = grinder("ml", "train", "--label", "fwd_rv_5s", "--root", sample_lake, "--config", cfg, "--mlruns", tmp_path)
    assert r.returncode == 2 and "levels must be at least 1, got 0" in r.stderr  # the file was read, table by table
    cfg.write_text("[labelz]\n")
    r = grinder("ml", "train", "--label", "fwd_rv_5s", "--root", sample_lake, "--config", cfg)
    assert r.returncode == 2 and "unknown table(s) labelz; expected features, labels" in r.stderr
    cfg.write_text("features = 3\n")
    r = grinder("ml", "train", "--label", "fwd_rv_5s", "--root", sample_lake, "--config", cfg)
    assert r.returncode == 2 and r.stderr.strip().endswith("ml.toml: features must be a table"), r.stderr


def test_help_shows_the_brackets_and_importing_the_cli_loads_nothing_heavy():
    r = grinder("ml", "train", "--help")
    assert r.returncode == 0 and "[features]" in r.stdout and "[labels]" in r.stdout
    code = ("import sys, grinder.cli.main; print(sorted(m for m in ('mlflow', 'xgboost', 'pandas', 'numba', 'numpy') "
            "if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
