"""The MLflow store of backtests and sweeps: sqlite metadata and local artifacts under one folder (decision 008).

Layout of the root folder (default `mlruns/`, or $GRINDER_MLRUNS): `mlflow.db` (experiments, runs,
params, metrics, tags) and `artifacts/<experiment id>/<run id>/artifacts/` (copies of run folder
files). MLflow is slow to import (decision 008), so only the functions that talk to the store import it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.parquet as pq

import grinder
from grinder.errors import DataError, GrinderError, TrackingError
from grinder.portfolio.curves import max_drawdown as max_drawdown_of
from grinder.report.load import read_summary
from grinder.sweep.lifecycle import shielded
from grinder.track.provenance import git_commit

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

DEFAULT_EXPERIMENT = "grinder"  # one experiment for every strategy: runs compare in one table, filtered by tag
DB_NAME = "mlflow.db"
ARTIFACTS = "artifacts"
STEPS_MAX_BYTES = 50 * 1024 * 1024  # larger steps.parquet files stay in the run folder only
# MLflow's limits on a param and a tag value (mlflow.utils.validation); longer values are cut to fit.
MAX_PARAM_LEN = 6000
MAX_TAG_LEN = 8000
# Defaults unless the environment says otherwise: no usage reports to mlflow.org from a research
# tool, and no GenAI job runner process beside the UI (it serves features we do not use).
MLFLOW_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true"}
UI_ENV = MLFLOW_ENV | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
UI_STOP_S = 10  # how long the UI's processes get to stop after a signal before they are killed, seconds
# Summary numbers logged as metrics under their own name, and groups logged as `<group>.<name>`.
METRIC_KEYS = ("equity", "realized", "unrealized", "fees", "funding_paid", "fills", "position", "avg_entry")
METRIC_KEYS += ("balance", "events", "capital")
METRIC_GROUPS = ("counters", "seconds", "mode_share", "stats")
# The per-step columns read for the drawdown and the return figures.
STEP_COLUMNS = {"ts", "position", "mid", "equity"}
# Summary settings logged as params: strategy params as `p.<name>`, venue and gate settings under their table.
PARAM_GROUPS = {"params": "p", "venue": "venue", "gates": "gates"}
# MLflow 3.17's store uses SQLAlchemy's `noload`, which SQLAlchemy 2.1 deprecates; harmless, so it alone is hidden.
SA_NOLOAD_WARNING = r"The ``noload`` loader strategy is deprecated"
CODE_REPO = Path(grinder.__file__).resolve().parents[1]  # the checkout whose code runs
# MLflow 3's UI picks an experiment's pages by this tag; without it the UI guesses (traces: GenAI,
# runs: classic ML, an empty experiment: it cannot tell). "custom_model_development", its classic
# ML kind (ExperimentKind in mlflow/server/js), opens the runs table from the first visit.
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
DEFAULT_EXPERIMENT_ID = "0"  # MLflow's "Default" experiment, made with the database


SQLITE_BUSY_S = 60  # how long a write waits for a lock another connection holds


def default_root() -> Path:
    """The store folder: $GRINDER_MLRUNS if set, else `mlruns` relative to the working directory."""
    return Path(os.environ.get("GRINDER_MLRUNS") or "mlruns")


def tracking_uri(root: Path) -> str:
    """The sqlite tracking URI of the store in `root`, absolute so it means the same from any directory."""
    return "sqlite:///" + (Path(root).resolve() / DB_NAME).as_posix()


def artifact_root(root: Path) -> str:
    """The folder the store's experiments keep their artifacts in (absolute path)."""
    return str(Path(root).resolve() / ARTIFACTS)


def open_store(root: Path, experiment: str = DEFAULT_EXPERIMENT) -> tuple[MlflowClient, str]:
    """An MlflowClient on the store in `root` and the id of `experiment`, creating folder, database and experiment."""
    mlflow = _import_mlflow()
    root = Path(root)
    # sqlite gives up on a lock held by another writer (the batch thread, a second process, the UI)
    # after 5 s by default, and MLflow then logs a traceback; a busy machine can hold one longer.
    uri = tracking_uri(root) + f"?timeout={SQLITE_BUSY_S}"
    direct = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        with _quiet_mlflow(), shielded():  # creating the database runs its migrations
            from mlflow.entities import ExperimentTag
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # warns on first import

            # MLflow's client puts new experiments (and the "Default" one of a new database) under
            # ./mlruns of the working directory; a store told our artifact root puts them in
            # <root>/artifacts/<experiment id>, the layout the UI server uses too.
            if not (root / DB_NAME).exists():
                direct = SqlAlchemyStore(uri, artifact_root(root))
            client = mlflow.tracking.MlflowClient(tracking_uri=uri)
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                direct = direct or SqlAlchemyStore(uri, artifact_root(root))
                exp_id = direct.create_experiment(experiment, tags=[ExperimentTag(KIND_TAG, KIND)])
            else:
                exp_id = exp.experiment_id
            # Stores made before the tag existed, and the Default experiment every database starts with.
            for old in {e.experiment_id: e for e in (exp, _experiment(client, DEFAULT_EXPERIMENT_ID)) if e}.values():
                if old.lifecycle_stage == "active" and KIND_TAG not in old.tags:
                    client.set_experiment_tag(old.experiment_id, KIND_TAG, KIND)
    except Exception as e:  # sqlalchemy, sqlite and MLflow errors alike: the store cannot be used
        raise TrackingError(f"cannot open the MLflow store: {_brief(e)}", str(root)) from e
    finally:
        if direct is not None:
            direct.engine.dispose()
    if exp is not None and exp.lifecycle_stage == "deleted":
        raise TrackingError(
            f"experiment {experiment!r} was deleted: restore it in the UI or use another name", str(root)
        )
    return client, exp_id


def log_backtest(
    run_dir: Path,
    *,
    fingerprint: str | None,
    root: Path,
    experiment: str = DEFAULT_EXPERIMENT,
    parent_run_id: str | None = None,
    tags: dict | None = None,
    store: tuple[MlflowClient, str] | None = None,
) -> str:
    """Log a finished backtest run folder as one MLflow run (params, metrics, tags, artifacts); returns its id.

    Four requests to the store: the run with its tags, one batch of params and metrics, one copy of
    its files (one per file when only some of the folder's files are copied), its end. `store` (a
    client and the experiment id, e.g. a sweep's) skips opening the store again.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError("no such run folder", str(run_dir))
    summary = read_summary(run_dir / "summary.json")
    for name in ("fills.parquet", "steps.parquet"):
        if not (run_dir / name).is_file():
            raise DataError("missing", str(run_dir / name))
    # Everything is read and checked before the run exists, so bad folders leave no run behind.
    params = backtest_params(summary)
    metrics = backtest_metrics(summary)
    all_tags = backtest_tags(summary, run_dir, fingerprint)
    steps = read_steps(run_dir / "steps.parquet")
    if "equity" in steps:  # run folders from before equity was recorded per step have neither figure
        metrics["max_drawdown"] = max_drawdown_of(steps["equity"])
        if STEP_COLUMNS <= steps.keys() and len(steps["ts"]):
            figures, figure_tags = return_figures(summary, steps)
            metrics |= figures
            all_tags |= figure_tags
    steps_bytes = (run_dir / "steps.parquet").stat().st_size
    files = [run_dir / n for n in ("summary.json", "report.html", "fills.parquet", "funding.parquet", "qrules.parquet")]
    files = [f for f in files if f.is_file()]
    if steps_bytes <= STEPS_MAX_BYTES:
        files.append(run_dir / "steps.parquet")
    else:
        all_tags["steps_artifact"] = f"not copied ({steps_bytes / 2**20:.0f} MB); see run_dir"
    client, exp_id = store or open_store(root, experiment)
    if parent_run_id is not None:
        if store is None:
            exp_id = _parent_experiment(client, parent_run_id, root)
        all_tags["mlflow.parentRunId"] = parent_run_id
    all_tags |= {str(k): v for k, v in (tags or {}).items()}
    try:
        with shielded():
            run_id = _create_run(client, exp_id, run_dir.name, all_tags)
            with _ends(client, run_id):
                _log_batch(client, run_id, params, metrics)
                if {f.name for f in files} == {f.name for f in run_dir.iterdir()}:
                    client.log_artifacts(run_id, str(run_dir))  # one copy of the whole folder
                else:
                    for f in files:
                        client.log_artifact(run_id, str(f))
    except GrinderError:
        raise
    except Exception as e:
        raise TrackingError(f"logging to MLflow failed (run marked FAILED): {_brief(e)}", str(run_dir)) from e
    return run_id


@dataclass(frozen=True)
class Sweep:
    """An open parent run of a sweep: log its artifacts, metrics and the child runs of the best sets."""

    client: MlflowClient
    run_id: str
    root: Path
    experiment_id: str

    def log_artifact(self, path: Path, artifact_dir: str | None = None) -> None:
        """Copy a file (results table, HTML report, ...) into the sweep's artifacts."""
        path = Path(path)
        if not path.is_file():
            raise DataError("no such file to log", str(path))
        with shielded():
            self.client.log_artifact(self.run_id, str(path), artifact_dir)

    def log_metrics(self, metrics: dict) -> None:
        """Log numbers (e.g. the best set's metric) on the sweep run; keys are made MLflow-safe."""
        with shielded():
            _log_batch(self.client, self.run_id, {}, _numbers(metrics, ""))

    def log_child(self, run_dir: Path, *, fingerprint: str | None, tags: dict | None = None) -> str:
        """Log a backtest run folder as a child of this sweep (through the sweep's client); returns its run id."""
        return log_backtest(run_dir, fingerprint=fingerprint, root=self.root, parent_run_id=self.run_id, tags=tags,
                            store=(self.client, self.experiment_id))  # fmt: skip


@contextmanager
def sweep_run(
    root: Path, name: str, params_spec: dict, tags: dict | None = None, experiment: str = DEFAULT_EXPERIMENT
) -> Iterator[Sweep]:
    """A parent run for a sweep: FINISHED when the block ends, FAILED on any exception (re-raised as is)."""
    client, exp_id = open_store(root, experiment)
    all_tags = {"kind": "sweep", **_provenance()} | {str(k): v for k, v in (tags or {}).items()}
    run_id = None
    try:
        with shielded():
            run_id = _create_run(client, exp_id, name, all_tags)
    except Exception as e:
        raise TrackingError(f"cannot create the sweep run: {_brief(e)}", str(root)) from e
    except BaseException:  # a signal held while the run was created
        if run_id is not None:
            _mark_failed(client, run_id)
        raise
    with _ends(client, run_id):
        with shielded():
            _log_batch(client, run_id, _flat_params(params_spec, "spec"), {})
            client.log_text(run_id, json.dumps(params_spec, indent=1, default=str), "sweep_spec.json")
        yield Sweep(client, run_id, Path(root), exp_id)


def ui_command(root: Path, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The command line of the MLflow UI on the store in `root`: one worker, artifacts read from the store."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        tracking_uri(root),
        # Only used by experiments created in the UI; ours name their artifact folder themselves.
        "--default-artifact-root",
        artifact_root(root),
        # Artifacts are local files the server reads directly; no upload proxy (and no ./mlartifacts).
        "--no-serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def ui_env() -> dict[str, str]:
    """The environment for the UI process: this one, with telemetry and MLflow's job runner off unless set."""
    return UI_ENV | dict(os.environ)


def serve_ui(root: Path, host: str = "127.0.0.1", port: int = 5000) -> int:
    """Run the MLflow UI on the store in `root` until SIGINT (Ctrl-C) or SIGTERM; returns the server's exit
    code, 0 when one of those signals stopped it (that is how a UI is stopped, not a failure).

    The server (MLflow's server process and the uvicorn process it starts) runs in a process group of
    its own. A signal goes to MLflow's process, which stops uvicorn and then itself; whatever of the
    group is still there UI_STOP_S seconds later is killed, and so is anything left when the server
    ends, so a stopped `grinder ui` leaves no process holding the port; on Linux MLflow's process also
    gets SIGTERM when ours dies without a chance to pass a signal on (SIGKILL). Call it from the main thread.
    """
    Path(root).mkdir(parents=True, exist_ok=True)
    stops: list[int] = []
    proc = None

    def forward(signum, frame):
        stops.append(signum)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signum)

    # Installed before the server starts, so a signal in between is not lost (it is sent after Popen).
    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        # Its own session: a terminal's Ctrl-C reaches only us, and we pass it on once (uvicorn, sent
        # it twice, stops without waiting for the requests it is serving).
        proc = subprocess.Popen(ui_command(root, host, port), env=ui_env(), start_new_session=True,
                                preexec_fn=_parent_death_signal())  # fmt: skip
        if stops:
            proc.send_signal(stops[0])
        deadline = None
        while proc.poll() is None:
            if stops and deadline is None:
                deadline = time.monotonic() + UI_STOP_S
            if deadline is not None and time.monotonic() > deadline:
                _signal_group(proc.pid, signal.SIGKILL)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.2)  # a signal's handler runs during the wait
    finally:
        if proc is not None:
            _end_group(proc.pid)
        for s, handler in old.items():
            signal.signal(s, handler)
    return 0 if stops else proc.returncode


def _parent_death_signal():
    """On Linux, a function for Popen's preexec_fn that has the kernel send the child SIGTERM when its
    parent dies, even by SIGKILL or the OOM killer (a server left behind would hold the port); else None."""
    if sys.platform != "linux":
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork: the child only calls it
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the signal was set up
            os._exit(1)

    return preexec


def _signal_group(pgid: int, signum: int) -> bool:
    """Send a signal to every process of a group; False when the group has none left."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True


def _end_group(pgid: int) -> None:
    """Stop what is left of a process group: SIGTERM, and SIGKILL for what still runs UI_STOP_S seconds later."""
    if not _signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + UI_STOP_S
    while _signal_group(pgid, 0):
        if time.monotonic() > deadline:
            _signal_group(pgid, signal.SIGKILL)
            return
        time.sleep(0.1)


def backtest_params(summary: dict) -> dict[str, str]:
    """Strategy params as `p.<name>`, venue settings as `venue.<name>`, gate settings as `gates.<name>`."""
    out = {}
    for key, prefix in PARAM_GROUPS.items():
        out |= _flat_params(summary.get(key) or {}, prefix)
    return out


def backtest_metrics(summary: dict) -> dict[str, float]:
    """The summary's numbers: results (equity, realized, fees, ...) and the counters, timings, mode shares, stats."""
    out = _numbers({k: summary[k] for k in METRIC_KEYS if k in summary}, "")
    for group in METRIC_GROUPS:
        if isinstance(summary.get(group), dict):
            out |= _numbers(summary[group], group + ".")
    qr = summary.get("quant_rules")
    if isinstance(qr, dict):  # each rule's worst value, and 1 / 0 for whether all were kept
        out |= {f"quant_rules.{k}_max": float(m["max"]) for k, m in qr["metrics"].items() if m["max"] is not None}
        out["quant_rules.rules_ok"] = float(bool(qr["rules_ok"]))
    return out


def backtest_tags(summary: dict, run_dir: Path, fingerprint: str | None) -> dict[str, str]:
    """What ran on what: strategy, selection, digest, data fingerprint, code version, run folder."""
    sel = summary.get("selection") or {}
    tags = {
        "kind": "backtest",
        "strategy": summary.get("strategy"),
        "venue": sel.get("venue"),
        "symbol": sel.get("symbol"),
        "start": sel.get("start"),
        "end": sel.get("end"),
        "lake": sel.get("root"),
        "settle": summary.get("settle"),
        "contract": summary.get("contract"),
        "digest": summary.get("digest"),
        "data_fingerprint": fingerprint,
        "run_dir": str(Path(run_dir).resolve()),
        "rules_ok": (summary.get("quant_rules") or {}).get("rules_ok"),
        **_provenance(),
    }
    model = summary.get("model") or {}  # the registered model version that drove the strategy, if one did
    for key, field in (("model_uri", "uri"), ("model_alias", "alias"), ("model_sha256", "model_sha256"),
                       ("feature_set_version", "feature_set_version")):  # fmt: skip
        tags[key] = model.get(field)
    return {k: str(v) for k, v in tags.items() if v is not None}


def read_steps(steps_path: Path) -> dict[str, np.ndarray]:
    """The STEP_COLUMNS the per-step records hold (ts as int64 ns, the others float64, nulls as NaN)."""
    try:
        names = [c for c in pq.read_schema(steps_path).names if c in STEP_COLUMNS]
        table = pq.read_table(steps_path, columns=names)
    except Exception as e:
        raise DataError(f"not a readable Parquet file: {_brief(e)}", str(steps_path)) from e
    return {c: np.asarray(table.column(c).to_numpy(zero_copy_only=False), np.int64 if c == "ts" else np.float64)
            for c in names}  # fmt: skip


def return_figures(summary: dict, steps: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, str]]:
    """Return over the capital the report measures returns against, and the Sharpe ratio, or per-window
    figures for a run that covers too little market time to annualise (grinder.report.stats.annualisable).

    Metrics: `covered_hours` (market time the steps cover, gaps left out), `return_pct` (100 x final
    equity / `return_base`, the capital in settle currency: summary.json's, else the largest gross
    notional held), then `sharpe` (annualised; the report's Sharpe Ratio) for a long run, or
    `pnl_per_hour` (final equity per covered hour, settle currency) for a short one. Tags: `return_over`
    (`capital`, `max_notional`, or `none` when nothing was ever held) and `return_figures`
    (`annualised` or `per_window`). Figures that are undefined (no capital, the account wiped out) are left out.
    """
    from grinder.report.load import Run
    from grinder.report.stats import account_returns, annualisable, choose_capital, choose_freq, covered_s, sharpe_ratio

    ts, equity = steps["ts"], steps["equity"]
    final = summary.get("equity")
    final = float(final) if isinstance(final, int | float) and not isinstance(final, bool) else float("nan")
    hours = covered_s(ts) / 3600
    long = annualisable(ts)
    capital, _ = choose_capital(Run(Path(), summary, steps, {}, {}))  # it reads the summary and steps only
    over = "none" if capital is None else "capital" if summary.get("capital") is not None else "max_notional"
    metrics = {"covered_hours": hours}
    if capital is not None and np.isfinite(final):
        metrics |= {"return_pct": 100.0 * final / capital.amount, "return_base": capital.amount}
    if not long and hours > 0 and np.isfinite(final):
        metrics["pnl_per_hour"] = final / hours
    # The report's returns: an account worth capital + equity, undefined once it is worth nothing.
    alive = capital is not None and not np.isnan(equity).all() and capital.amount + np.nanmin(equity) > 0
    if long and alive:
        freq = choose_freq(ts)
        metrics["sharpe"] = sharpe_ratio(account_returns(ts, equity, capital.amount, freq), freq)
    return metrics, {"return_over": over, "return_figures": "annualised" if long else "per_window"}


def _provenance() -> dict[str, str]:
    """grinder's version and the commit of its checkout (absent outside git)."""
    commit = git_commit(CODE_REPO)
    return {"grinder_version": grinder.__version__} | ({"git_commit": commit} if commit else {})


def _create_run(client: MlflowClient, exp_id: str, name: str, tags: dict) -> str:
    """Create a RUNNING run with its tags (values cut to MLflow's limit); returns its id."""
    tags = {k if k.startswith("mlflow.") else _key(k): str(v)[:MAX_TAG_LEN] for k, v in tags.items() if v is not None}
    return client.create_run(exp_id, tags=tags, run_name=name).info.run_id


@contextmanager
def _ends(client: MlflowClient, run_id: str) -> Iterator[None]:
    """End the run FINISHED if the block succeeds, FAILED if anything (even Ctrl-C) escapes it; never RUNNING."""
    try:
        yield
    except BaseException:
        _mark_failed(client, run_id)
        raise
    try:
        with shielded():
            client.set_terminated(run_id, "FINISHED")
    except BaseException:
        _mark_failed(client, run_id)
        raise


def _mark_failed(client: MlflowClient, run_id: str) -> None:
    """Best effort: the error that got us here matters more than one from marking the run."""
    try:
        with shielded():  # a second signal must not leave the run RUNNING either
            client.set_terminated(run_id, "FAILED")
    except Exception:
        logging.getLogger(__name__).warning("could not mark MLflow run %s FAILED", run_id)


def _log_batch(client: MlflowClient, run_id: str, params: dict[str, str], metrics: dict[str, float]) -> None:
    """Params and metrics in as few requests as MLflow allows (it splits batches itself)."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
        params=[Param(k, v) for k, v in params.items()],
    )


def _flat_params(d: dict, prefix: str) -> dict[str, str]:
    """Nested settings as `prefix.a.b` -> string value (lists and other values as JSON, cut to MLflow's limit)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{_key(str(k))}"
        if isinstance(v, dict) and v:
            out |= _flat_params(v, key)
        else:
            text = v if isinstance(v, str) else json.dumps(v, default=str)
            out[key] = text[:MAX_PARAM_LEN]
    return out


def _numbers(d: dict, prefix: str) -> dict[str, float]:
    """The int and float values of `d` (not bools) under MLflow-safe keys; NaN and inf are kept."""
    return {
        prefix + _key(str(k)): float(v) for k, v in d.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _key(name: str) -> str:
    """A name MLflow accepts as a key (letters, digits, _ - . space): "Total Return [%]" -> "Total Return pct"."""
    name = re.sub(r"[\[\](){}]", "", name.replace("%", "pct"))
    return re.sub(r"[^\w.\- ]+", "_", name).strip("_ ") or "_"


def _experiment(client: MlflowClient, exp_id: str):
    """The experiment with this id (deleted ones too), None when the store has none."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_experiment(exp_id)
    except MlflowException:
        return None


def _parent_experiment(client: MlflowClient, parent_run_id: str, root: Path) -> str:
    """The experiment of the parent run, so children sit beside it."""
    try:
        return client.get_run(parent_run_id).info.experiment_id
    except Exception as e:
        raise TrackingError(f"no parent run {parent_run_id} in the MLflow store: {_brief(e)}", str(root)) from e


def _import_mlflow():
    """Import mlflow with telemetry off; only the first call in a process pays the import."""
    for k, v in MLFLOW_ENV.items():
        os.environ.setdefault(k, v)
    import mlflow

    return mlflow


@contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """Keep MLflow's INFO lines about creating the database, and its one SQLAlchemy deprecation, off the terminal."""
    logger = logging.getLogger("mlflow")
    old = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=SA_NOLOAD_WARNING, category=DeprecationWarning, module=r"mlflow\."
            )
            yield
    finally:
        logger.setLevel(old)


def _brief(e: BaseException) -> str:
    """An exception's type and first line (SQL errors run on for many lines)."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
