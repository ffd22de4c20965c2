"""Returns statistics of a run from vectorbt: equity on a regular time grid, read as an account of a capital.

A backtest starts with no money: its equity (cash + position marked at mid - fees - funding) starts
at 0, so a percentage needs a capital figure C. The account is worth C + equity; its returns per
bucket are the change of that value over its previous value, starting from C. Their compounded
total is therefore final equity / C, and vectorbt's drawdown is measured on C + equity.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd

from grinder.data.coverage import DEFAULT_MAX_GAP_NS
from grinder.report.load import Run

# Candidate return frequencies, finest first, with their length in seconds.
FREQS = (
    ("1s", 1),
    ("10s", 10),
    ("1min", 60),
    ("5min", 300),
    ("15min", 900),
    ("1h", 3_600),
    ("4h", 14_400),
    ("1D", 86_400),
)
MAX_RETURNS = 10_000  # enough for the statistics, few enough that vectorbt is instant
YEAR_FREQ = "365 days"  # perpetual futures trade every day of the year
# Annualised figures need at least this much covered market time, seconds: the year they extrapolate
# to is then at most ~12 spans, not the ~50,000 of a 10-minute capture, whose annualised Sharpe
# scales its noise by sqrt(50,000). MLflow logs per-window figures for shorter runs.
ANNUALISE_MIN_S = 30 * 86_400
# vectorbt's returns statistics without the ones that need a benchmark (we have none).
METRICS = (
    "start",
    "end",
    "period",
    "total_return",
    "ann_return",
    "ann_volatility",
    "max_dd",
    "max_dd_duration",
    "sharpe_ratio",
    "calmar_ratio",
    "omega_ratio",
    "sortino_ratio",
    "skew",
    "kurtosis",
    "tail_ratio",
    "common_sense_ratio",
    "value_at_risk",
)
# vectorbt 1.2 on pandas 3 tests isinstance(index.freq, pd.DateOffset), which pandas deprecates
# (Pandas4Warning, a DeprecationWarning); harmless for us, so it alone is silenced.
VBT_WARNING = r"isinstance\(obj, DateOffset\) is deprecated"


@dataclass(frozen=True)
class Capital:
    """The capital returns are taken against, settle currency, and one sentence saying where it comes from."""

    amount: float
    how: str


@dataclass(frozen=True)
class Stats:
    """vectorbt's statistics (title -> value) or None when returns are undefined, and how they were made."""

    table: pd.Series | None
    capital: Capital | None
    freq: str | None
    n_returns: int
    note: str


@contextmanager
def quiet_vectorbt() -> Iterator[None]:
    """Silence exactly vectorbt's pandas DateOffset deprecation warning for the duration."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=VBT_WARNING, category=DeprecationWarning, module=r"vectorbt\.")
        yield


def covered_s(ts: np.ndarray) -> float:
    """Market time the steps cover, seconds: first to last step less the coverage gaps the decision
    clock jumped (steps more than 60 s apart, decision 025)."""
    step = np.diff(np.asarray(ts, np.int64))
    return float(step[step <= DEFAULT_MAX_GAP_NS].sum()) / 1e9


def annualisable(ts: np.ndarray) -> bool:
    """Whether a run with these step times covers enough market time for annualised figures (ANNUALISE_MIN_S)."""
    return covered_s(ts) >= ANNUALISE_MIN_S


def sharpe_ratio(rets: pd.Series, freq: str) -> float:
    """Annualised Sharpe ratio of returns per `freq` bucket, as vectorbt's report table computes it, without
    importing vectorbt: mean / sample std x sqrt(365 days / freq), risk-free 0, NaN returns left out;
    NaN under two returns, inf when they do not vary."""
    r = rets.to_numpy(np.float64)
    if len(r) < 2:
        return float("nan")
    std = float(np.nanstd(r, ddof=1))
    if std == 0.0:
        return float("inf")
    return float(np.nanmean(r) / std * np.sqrt(pd.Timedelta(YEAR_FREQ) / pd.Timedelta(freq)))


def choose_capital(run: Run) -> tuple[Capital | None, str]:
    """summary["capital"] if given, else the largest gross notional held; (None, why) when there is none."""
    settle, summary = run.settle, run.summary
    if run.explicit_capital is not None:
        return Capital(run.explicit_capital, f"capital {run.explicit_capital:,.2f} {settle}, from summary.json"), ""
    pos, mid = run.steps["position"], run.steps["mid"]
    with np.errstate(divide="ignore", invalid="ignore"):
        if summary.get("contract") == "inverse" or summary.get("inverse") is True:
            if not isinstance(summary.get("contract_size"), int | float):
                return None, "an inverse contract needs capital or contract_size in summary.json to measure returns"
            gross = np.abs(pos) * float(summary["contract_size"]) / mid
        else:
            gross = np.abs(pos) * mid
    gross = np.where(np.isfinite(gross), gross, 0.0)
    if gross.max() <= 0:
        return None, "no position was ever held and summary.json states no capital, so there are no returns to measure"
    at = pd.Timestamp(int(run.steps["ts"][gross.argmax()]), unit="ns")
    how = (
        f"no capital in summary.json, so capital = the largest gross notional held, {gross.max():,.2f} {settle} "
        f"(|position| x mid at {at:%Y-%m-%d %H:%M:%S} UTC): the margin of the run's largest inventory at 1x leverage"
    )
    return Capital(float(gross.max()), how), ""


def choose_freq(ts: np.ndarray) -> str:
    """Finest candidate frequency no finer than the median decision interval giving at most MAX_RETURNS buckets."""
    span_s = (int(ts[-1]) - int(ts[0])) / 1e9
    step_s = float(np.median(np.diff(ts))) / 1e9 if len(ts) > 1 else 0.0
    for name, seconds in FREQS:
        if seconds >= step_s and span_s / seconds <= MAX_RETURNS:
            return name
    return FREQS[-1][0]


def account_returns(ts: np.ndarray, equity: np.ndarray, capital: float, freq: str) -> pd.Series:
    """Returns per `freq` bucket of an account worth capital + equity (last equity of each bucket, carried on)."""
    eq = pd.Series(equity, index=pd.to_datetime(ts, unit="ns")).dropna()
    value = capital + eq.resample(freq).last().ffill()
    prev = value.shift(1)
    prev.iloc[0] = capital
    return value / prev - 1.0


def run_stats(run: Run) -> Stats:
    """vectorbt returns statistics of a run, computed on every step (never on the plotted sample)."""
    ts, equity = run.steps["ts"], run.steps["equity"]
    capital, why_none = choose_capital(run)
    if capital is None:
        return Stats(None, None, None, 0, f"No statistics: {why_none}.")
    if np.isnan(equity).all():
        return Stats(None, capital, None, 0, "No statistics: equity is NaN on every step (no mid price).")
    freq = choose_freq(ts)
    worst = float(np.nanmin(equity))
    if capital.amount + worst <= 0:
        note = (
            f"No statistics: equity fell to {worst:,.2f} {run.settle}, losing the whole capital ({capital.how}), "
            "so returns are undefined."
        )
        return Stats(None, capital, freq, 0, note)
    rets = account_returns(ts, equity, capital.amount, freq)
    with quiet_vectorbt():
        import vectorbt  # noqa: F401  (slow to import: only here; registers the .vbt accessor)

        table = rets.vbt.returns(freq=freq, year_freq=YEAR_FREQ).stats(metrics=list(METRICS))
    span = pd.Timedelta(int(ts[-1] - ts[0]), unit="ns")
    short = "" if annualisable(ts) else (
        f" It covers {pd.Timedelta(covered_s(ts), unit='s').round('s')} of market time, under the "
        f"{ANNUALISE_MIN_S // 86_400} days annualised figures need to mean much (MLflow logs per-window "
        "figures for it)."
    )  # fmt: skip
    note = (
        f"Returns: equity resampled to {freq} buckets (last value of each, carried forward over empty ones), "
        f"as an account worth capital + equity, where {capital.how}. {len(rets):,} returns from all "
        f"{len(ts):,} steps. Annualised figures extrapolate this {span} run to {YEAR_FREQ}.{short}"
    )
    return Stats(table, capital, freq, len(rets), note)
