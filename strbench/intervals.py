"""One bootstrap for every interval strbench reports: the mean's interval by `scipy.stats.bootstrap` (BCa,
seeded), the percentile interval where BCa is undefined for the sample (e.g. too few distinct values), a
point where every value is equal. Used for a cell's interval over its images (logged at evaluation time,
or pooled over seeds in reports) and for paired differences (strbench.paired). Pure: numpy and scipy."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Interval:
    low: float  # nan when there are fewer than two finite values
    high: float
    note: str = ""  # how it was computed when not BCa


def mean_interval(values: Sequence[float], *, n_resamples: int = 1000, confidence: float = 0.95,
                  seed: int = 0, what: str = "values") -> Interval:
    """The `confidence` interval of the mean of the finite `values` (non-finite ones are dropped); `what` names
    the values in the note."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return Interval(math.nan, math.nan, f"fewer than two {what}: no interval")
    if np.all(v == v[0]):  # a degenerate sample: every resample has the same mean
        return Interval(float(v[0]), float(v[0]), f"all {what} equal: the interval is a point")
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DegenerateDataWarning for tiny samples: the percentile below
            res = _bootstrap(v, method, n_resamples, confidence, seed)
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(lo) and math.isfinite(hi):
            return Interval(lo, hi, "" if method == "BCa" else "percentile interval (BCa undefined for this sample)")
    return Interval(math.nan, math.nan, "no finite bootstrap interval")


BATCH_VALUES = 2**22  # values per resampling batch (32 MB of float64); batching does not change the draws


def _bootstrap(v: np.ndarray, method: str, n_resamples: int, confidence: float, seed: int):
    from scipy import stats

    # batch: BCa's jackknife would otherwise hold n x (n - 1) values at once (800 MB for 10,000 images)
    return stats.bootstrap((v,), np.mean, n_resamples=n_resamples, confidence_level=confidence, method=method,
                           vectorized=True, batch=max(1, BATCH_VALUES // v.size), rng=np.random.default_rng(seed))
