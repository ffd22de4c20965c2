"""The metric names a PromQL expression reads: what the dashboard and alert tests compare with a real scrape."""

from __future__ import annotations

import re

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.I)
_NAMES = re.compile(r"(?<![\w.$:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
             "offset", "inf", "nan", "atan2"}  # fmt: skip
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*[A-Za-z_]\w*\s*\)\s*$", re.S)


def metric_names(expr: str) -> set[str]:
    """Every metric name `expr` selects (PromQL, Grafana's `$variables` allowed; label_values(m, label): m's).

    Label matchers, strings, ranges, grouping label lists, function names, keywords and numbers are not names.
    """
    m = _LABEL_VALUES.match(expr)
    if m:
        expr = m.group(1)
    text = _STRINGS.sub('""', expr)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {n for n in _NAMES.findall(text) if n.lower() not in _KEYWORDS}


def exported_names(exposition: str) -> set[str]:
    """Names a scrape exports: every sample's (histograms' _bucket / _sum / _count, counters' _total) and family's."""
    from prometheus_client.parser import text_string_to_metric_families

    out = set()
    for fam in text_string_to_metric_families(exposition):
        out.add(fam.name)
        out.update(s.name for s in fam.samples)
    return out
