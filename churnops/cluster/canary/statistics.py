"""Distances between the canary's and the stable revision's answers, from Prometheus' aggregated counts.

Prometheus holds no individual predictions, only counts: per probability bucket (a Histogram, cumulative
`le` buckets), per risk level, per recommended action. So each comparison works on binned counts, with
scipy for the sampling distributions (a distance alone would flag noise on a small canary):
- KS distance between the two binned CDFs (the largest gap at a bucket boundary, a lower bound of the
  distance between the unbinned samples), its p-value from the two-sample Kolmogorov distribution exactly
  as `scipy.stats.ks_2samp(method="asymp")` computes it: `kstwo.sf(D, round(n*m/(n+m)))`
  (scipy/stats/_stats_py.py);
- PSI over the buckets, with a p-value from its asymptotic null distribution PSI * n*m/(n+m) ~ chi2(B-1)
  (PSI is the Jeffreys divergence; Yurdakul, "Statistical properties of the population stability index",
  2018);
- total variation distance between two categorical mixes, with the chi-squared test of homogeneity
  (`scipy.stats.chi2_contingency`).
Counts are floats: `increase()` extrapolates to the window's edges.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Additive smoothing of bin shares in PSI: an empty bin on one side would make the logarithm infinite.
PSI_SMOOTHING = 0.5


@dataclass(frozen=True)
class Distance:
    """A distance between two samples, the p-value of no difference, and the sample sizes."""

    value: float
    p_value: float
    n_canary: float
    n_stable: float


def bucket_counts(cumulative: Mapping[float, float]) -> tuple[list[float], list[float]]:
    """Cumulative Histogram buckets {le: count} -> (upper bounds, per-bin counts), `+Inf` included."""
    bounds = sorted(cumulative)
    counts, previous = [], 0.0
    for bound in bounds:
        value = max(cumulative[bound], previous)  # extrapolation can make a cumulative count dip
        counts.append(value - previous)
        previous = value
    return bounds, counts


def _aligned(canary: Mapping[float, float], stable: Mapping[float, float]) -> tuple[np.ndarray, np.ndarray]:
    bounds = sorted(set(canary) | set(stable))
    _, a = bucket_counts(_carry(canary, bounds))
    _, b = bucket_counts(_carry(stable, bounds))
    return np.asarray(a), np.asarray(b)


def _carry(cumulative: Mapping[float, float], bounds: Sequence[float]) -> dict[float, float]:
    """A missing boundary of a cumulative histogram holds the count of the nearest one below it."""
    carried, last = {}, 0.0
    for bound in bounds:
        last = cumulative.get(bound, last)
        carried[bound] = last
    return carried


def ks_distance(canary: Mapping[float, float], stable: Mapping[float, float]) -> Distance:
    """Largest gap between the two binned CDFs, and its two-sample KS p-value."""
    from scipy.stats import kstwo

    a, b = _aligned(canary, stable)
    n, m = float(a.sum()), float(b.sum())
    if n <= 0 or m <= 0:
        return Distance(math.nan, math.nan, n, m)
    gap = float(np.max(np.abs(np.cumsum(a) / n - np.cumsum(b) / m)))
    effective = max(round(n * m / (n + m)), 1)
    return Distance(gap, float(kstwo.sf(gap, effective)), n, m)


def psi(canary: Mapping[float, float], stable: Mapping[float, float]) -> Distance:
    """Population stability index over the buckets both sides use, and its chi-squared p-value."""
    from scipy.stats import chi2

    a, b = _aligned(canary, stable)
    used = (a + b) > 0
    a, b = a[used], b[used]
    n, m = float(a.sum()), float(b.sum())
    if n <= 0 or m <= 0 or len(a) < 2:
        return Distance(math.nan, math.nan, n, m)
    p = (a + PSI_SMOOTHING) / (n + PSI_SMOOTHING * len(a))
    q = (b + PSI_SMOOTHING) / (m + PSI_SMOOTHING * len(b))
    value = float(np.sum((p - q) * np.log(p / q)))
    statistic = value * n * m / (n + m)
    return Distance(value, float(chi2.sf(statistic, len(a) - 1)), n, m)


def mix_distance(canary: Mapping[str, float], stable: Mapping[str, float]) -> Distance:
    """Total variation distance between two categorical mixes, and the chi-squared homogeneity p-value."""
    from scipy.stats import chi2_contingency

    categories = sorted(k for k in set(canary) | set(stable) if canary.get(k, 0) + stable.get(k, 0) > 0)
    a = np.array([max(canary.get(k, 0.0), 0.0) for k in categories])
    b = np.array([max(stable.get(k, 0.0), 0.0) for k in categories])
    n, m = float(a.sum()), float(b.sum())
    if n <= 0 or m <= 0:
        return Distance(math.nan, math.nan, n, m)
    value = float(0.5 * np.sum(np.abs(a / n - b / m)))
    if len(categories) < 2:
        return Distance(value, 1.0, n, m)
    result = chi2_contingency(np.vstack([a, b]), correction=False)
    return Distance(value, float(result.pvalue), n, m)
