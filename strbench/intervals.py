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


# ----------------------------------------------------------------------------------------------- two levels
# Training seeds are the replicates a claim is about; the image-mask pairs are nested within each seed
# (docs/SCIENCE.md#replicates). Var(mean) = tau^2 / S + sigma^2 / (S n): an interval over pairs alone sees
# only the second term.
SEED_T = "t"  # t-interval over the per-seed means (the one strbench reports: docs/SCIENCE.md#replicates)
SEED_BOOTSTRAP = "hierarchical bootstrap"  # seeds, then pairs within each seed (percentile); kept for comparison


@dataclass(frozen=True)
class TwoLevel:
    """An interval of a mean over seeds and the image-mask pairs within each seed."""

    mean: float  # mean of the per-seed means (each seed counts once, whatever its number of pairs)
    low: float  # nan with fewer than two seeds
    high: float
    seeds: int
    seed_sd: float  # SD (ddof 1) of the per-seed means; nan with one seed
    method: str  # SEED_T | SEED_BOOTSTRAP, or why there is no interval
    note: str = ""


def seed_means(groups: Sequence[Sequence[float]]) -> np.ndarray:
    """The mean of each seed's finite values (seeds without any left out)."""
    out = []
    for g in groups:
        v = np.asarray(g, dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size:
            out.append(float(v.mean()))
    return np.asarray(out, dtype=np.float64)


def seed_sd(groups: Sequence[Sequence[float]]) -> float:
    """Seed-to-seed standard deviation (ddof 1) of the per-seed means; nan with fewer than two seeds."""
    m = seed_means(groups)
    return float(m.std(ddof=1)) if m.size > 1 else math.nan


def t_interval(values: Sequence[float], *, confidence: float = 0.95) -> tuple[float, float]:
    """Student's t interval of the mean of a few values (scipy.stats.t): mean +- t_{n-1} s / sqrt(n)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return math.nan, math.nan
    m, se = float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))
    if se == 0.0:
        return m, m
    lo, hi = stats.t.interval(confidence, df=v.size - 1, loc=m, scale=se)
    return float(lo), float(hi)


def hierarchical_bootstrap(groups: Sequence[Sequence[float]], *, n_resamples: int = 2000,
                           confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean of per-seed means, resampling seeds with replacement and then, for every
    drawn seed, its pairs with replacement (a fresh inner draw per position). scipy.stats.bootstrap resamples
    one level only, so the two levels are drawn here with numpy."""
    gs = [np.asarray(g, dtype=np.float64) for g in groups]
    gs = [g[np.isfinite(g)] for g in gs]
    gs = [g for g in gs if g.size]
    s = len(gs)
    if s < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    # inner[j, k, b]: mean of a resample of seed k's pairs, drawn for position j of bootstrap sample b
    inner = np.empty((s, s, n_resamples))
    for j in range(s):
        for k, g in enumerate(gs):
            inner[j, k] = g[rng.integers(0, g.size, size=(n_resamples, g.size))].mean(axis=1)
    pick = rng.integers(0, s, size=(n_resamples, s))  # the seeds drawn
    stat = inner[np.arange(s)[None, :], pick, np.arange(n_resamples)[:, None]].mean(axis=1)
    a = (1 - confidence) / 2
    lo, hi = np.quantile(stat, [a, 1 - a])
    return float(lo), float(hi)


def two_level_interval(groups: Sequence[Sequence[float]], *, method: str = SEED_T, confidence: float = 0.95,
                       n_resamples: int = 2000, seed: int = 0) -> TwoLevel:
    """The `confidence` interval of a mean over seeds (`groups`: one sequence of per-pair values per seed).
    `method`: SEED_T (default: chosen by the coverage test, tests/test_replicates.py) or SEED_BOOTSTRAP."""
    m = seed_means(groups)
    if m.size == 0:
        return TwoLevel(math.nan, math.nan, math.nan, 0, math.nan, "no values")
    mean = float(m.mean())
    if m.size < 2:
        return TwoLevel(mean, math.nan, math.nan, 1, math.nan, "one training seed: no interval over seeds")
    sd = float(m.std(ddof=1))
    if method == SEED_T:
        lo, hi = t_interval(m, confidence=confidence)
    elif method == SEED_BOOTSTRAP:
        lo, hi = hierarchical_bootstrap(groups, n_resamples=n_resamples, confidence=confidence, seed=seed)
    else:
        raise ValueError(f"two_level_interval: method {method!r}; choose {SEED_T!r} or {SEED_BOOTSTRAP!r}")
    return TwoLevel(mean, lo, hi, int(m.size), sd, method,
                    "all seeds equal: the interval is a point" if sd == 0 else "")


def describe_two_level(seeds: int, confidence: float = 0.95) -> str:
    """How a TwoLevel interval over `seeds` seeds was computed, for notes and outputs."""
    return f"two-level: {confidence:.0%} t-interval over {seeds} per-seed means ({seeds - 1} df)"
