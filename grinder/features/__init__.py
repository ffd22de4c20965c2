"""Market features, one definition for the backtest and the live adapter (docs/data/features.md)."""

from grinder.features.offline import Features, compute_features
from grinder.features.online import OnlineFeatures
from grinder.features.spec import FeatureSet

__all__ = ["FeatureSet", "Features", "OnlineFeatures", "compute_features"]
