"""The training table: features and labels at regular sample times within the lake's coverage.

Sample times are the multiples of `every_ns` (from the epoch, so the same times whatever the
selection) inside each covered span of the selection (`grinder.data.coverage`): no sample in a
gap. At each, the features as of that time (`grinder.features.offline.compute_features` with `at`)
and the labels over the window after it (`grinder.ml.labels.compute_labels`), both from one tape
of the selection. Rows whose target labels are NaN (their window not known) are dropped and counted.
Features stored in the lake's feature store for exactly this tape and these times (`store_features`,
`grinder ml features`) are read from there instead of computed again: the same float64 values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grinder.data.coverage import Span, clip_spans, lake_spans
from grinder.data.tape import load_tape
from grinder.errors import ConfigError, DataError
from grinder.features.offline import compute_features
from grinder.features.spec import FeatureSet, horizon_label
from grinder.features.store import part_key, read_part, write_features
from grinder.ml.labels import LabelSpec, compute_labels
from grinder.track.provenance import data_fingerprint


@dataclass(frozen=True)
class Dataset:
    """Rows of (features, labels) at sample times, and what they were made from.

    x: float64 [n, n_features] in `feature_names` order (NaN: the feature has no value yet);
    y: float64 [n, n_labels] in `label_names` order (NaN only in labels other than the targets);
    ts: int64 ns, the sample times kept. `samples` times were taken, `dropped` of them for a NaN
    target label. `data_fingerprint`: of the tape (`grinder.track.provenance`).
    """

    ts: np.ndarray
    x: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    label_names: tuple[str, ...]
    targets: tuple[str, ...]
    samples: int
    dropped: int
    spans: tuple[Span, ...]
    data_fingerprint: str
    feature_set_version: str
    label_spec_version: str
    features_from: str = "computed"  # or "store:<part key>" (grinder.features.store)

    def __len__(self) -> int:
        return self.ts.shape[0]

    def label(self, name: str) -> np.ndarray:
        """One label column (float64, one value per row)."""
        try:
            return self.y[:, self.label_names.index(name)]
        except ValueError:
            raise KeyError(f"no label named {name!r}; labels: {', '.join(self.label_names)}") from None

    def frame(self):
        """The table as a pandas DataFrame: `ts` (int64 ns), the features, then the labels."""
        import pandas as pd

        cols = {"ts": self.ts} | {n: self.x[:, k] for k, n in enumerate(self.feature_names)}
        cols |= {n: self.y[:, k] for k, n in enumerate(self.label_names)}
        return pd.DataFrame(cols)


def sample_times(spans: list[Span], every_ns: int) -> np.ndarray:
    """The multiples of `every_ns` inside the spans (half-open [start, end)), sorted int64 ns."""
    if every_ns <= 0:
        raise ConfigError(f"the sample interval must be positive ns, got {every_ns}")
    parts = []
    for s in spans:
        first = -(-s.start_ns // every_ns) * every_ns  # the first multiple at or after the start
        parts.append(np.arange(first, s.end_ns, every_ns, dtype=np.int64))
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def build_dataset(
    root: str | Path,
    venue: str,
    symbol: str,
    start_ns: int | None,
    end_ns: int | None,
    feature_set: FeatureSet,
    label_spec: LabelSpec,
    every_ns: int,
    targets: tuple[str, ...] | None = None,
) -> Dataset:
    """Features and labels of `venue`/`symbol` in [start_ns, end_ns) every `every_ns` within coverage.

    `targets` (default: every label of the spec) are the labels a row needs: rows where any is NaN
    are dropped. A target whose horizon is not shorter than the longest covered span is refused
    before any data is read, as is a selection without coverage.
    """
    targets = tuple(label_spec.names if targets is None else targets)
    infos = [label_spec.info(t) for t in targets]  # unknown names fail here
    spans = clip_spans(lake_spans(root, venue, symbol), start_ns, end_ns)
    if not spans:
        raise DataError(f"no covered time for {venue}/{symbol} in the selection (no book rows in the lake there)")
    longest = max(s.duration_ns for s in spans)
    for i in infos:
        if i.horizon_ns >= longest:
            raise ConfigError(
                f"label {i.name}: its horizon {horizon_label(i.horizon_ns)} is not shorter than the longest covered "
                f"span of the selection ({longest / 1e9:,.3f} s); widen --start/--end or pick a shorter horizon"
            )
    at = sample_times(spans, every_ns)
    tape = load_tape(root, venue, symbol, start_ns, end_ns, bbo=False)
    feats = read_part(root, tape, feature_set, at)
    source = f"store:{part_key(tape, at)}"
    if feats is None:
        feats, source = compute_features(tape, feature_set, at), "computed"
    labs = compute_labels(tape, at, label_spec)
    cols = [label_spec.names.index(t) for t in targets]
    keep = ~np.isnan(labs.values[cols]).any(axis=0)
    return Dataset(
        ts=at[keep],
        x=np.ascontiguousarray(feats.values[:, keep].T),
        y=np.ascontiguousarray(labs.values[:, keep].T),
        feature_names=feature_set.names,
        label_names=label_spec.names,
        targets=targets,
        samples=int(at.shape[0]),
        dropped=int((~keep).sum()),
        spans=tuple(spans),
        data_fingerprint=data_fingerprint(tape),
        feature_set_version=feature_set.version,
        label_spec_version=label_spec.version,
        features_from=source,
    )


def store_features(root: str | Path, venue: str, symbol: str, start_ns: int | None, end_ns: int | None,
                   feature_set: FeatureSet, every_ns: int) -> tuple[list[Path], str, int]:  # fmt: skip
    """The features `build_dataset` would compute for this selection, written to the lake's feature store
    (`grinder.features.store.write_features`): (parts written, their part key, samples)."""
    spans = clip_spans(lake_spans(root, venue, symbol), start_ns, end_ns)
    if not spans:
        raise DataError(f"no covered time for {venue}/{symbol} in the selection (no book rows in the lake there)")
    at = sample_times(spans, every_ns)
    tape = load_tape(root, venue, symbol, start_ns, end_ns, bbo=False)
    feats = compute_features(tape, feature_set, at)
    return write_features(root, tape, feats, feature_set), part_key(tape, at), int(at.shape[0])
