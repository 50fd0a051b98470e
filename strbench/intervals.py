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
SEED_CROSSED = "crossed"  # seeds x pairs, both random: crossed_interval, the one reports use (docs/SCIENCE.md#replicates)
SEED_T = "t"  # t-interval over the per-seed means: reports' fallback when pairs are not matched across seeds
SEED_BOOTSTRAP = "hierarchical bootstrap"  # seeds, then pairs within each seed (percentile); for comparison


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


def crossed_interval(table: np.ndarray, *, confidence: float = 0.95, df: str = "seeds") -> TwoLevel:
    """The `confidence` interval of the mean of a seeds x pairs table (every pair scored under every seed: the
    test images are the same for each training seed), seeds and pairs both random (docs/SCIENCE.md#replicates).
    Two-way random-effects ANOVA without replication: Var(mean) = tau^2 / S + omega^2 / n + sigma^2 / (S n)
    (seed, pair and residual components), estimated by (MS_seed + MS_pair) / (S n) from the table's mean
    squares (conservative by sigma^2 / (S n)); Satterthwaite's degrees of freedom; scipy.stats.t. One seed or
    one pair: the t-interval of the values."""
    from scipy import stats

    d = np.asarray(table, dtype=np.float64)
    if d.ndim != 2 or d.size == 0 or not np.isfinite(d).all():
        raise ValueError("crossed_interval: a finite seeds x pairs table is needed")
    s, n = d.shape
    grand = float(d.mean())
    if s < 2 or n < 2:
        lo, hi = t_interval(d.ravel(), confidence=confidence)
        sd = float(d.mean(axis=1).std(ddof=1)) if s > 1 else math.nan
        return TwoLevel(grand, lo, hi, s, sd, SEED_CROSSED if s > 1 else "one training seed: no interval over seeds")
    rows, cols = d.mean(axis=1), d.mean(axis=0)
    ms_seed = n * float(((rows - grand) ** 2).sum()) / (s - 1)
    ms_pair = s * float(((cols - grand) ** 2).sum()) / (n - 1)
    ms_res = float(((d - rows[:, None] - cols[None, :] + grand) ** 2).sum()) / ((s - 1) * (n - 1))
    # Var(mean) = (MS_seed + MS_pair - MS_res) / (S n) is unbiased; MS_res is not subtracted (it is sigma^2 / (S n),
    # small beside the others), which keeps Satterthwaite's df from overstating what S seeds can tell
    v = (ms_seed + ms_pair) / (s * n)
    if df == "seeds":  # conservative: the component known least (S - 1 df) sets the quantile
        dof = float(s - 1)
    elif df == "satterthwaite":
        den = ms_seed ** 2 / (s - 1) + ms_pair ** 2 / (n - 1)
        dof = (ms_seed + ms_pair) ** 2 / den if den > 0 else float(s - 1)
    else:
        raise ValueError(f"crossed_interval: df {df!r}; choose 'seeds' or 'satterthwaite'")
    sd = float(rows.std(ddof=1))
    if v == 0.0:
        return TwoLevel(grand, grand, grand, s, sd, SEED_CROSSED, "all values equal: the interval is a point")
    lo, hi = stats.t.interval(confidence, df=dof, loc=grand, scale=math.sqrt(v))
    return TwoLevel(grand, float(lo), float(hi), s, sd, SEED_CROSSED, f"{dof:.3g} df")


def two_level_interval(groups: Sequence[Sequence[float]], *, method: str = SEED_T, confidence: float = 0.95,
                       n_resamples: int = 2000, seed: int = 0) -> TwoLevel:
    """The `confidence` interval of a mean over seeds (`groups`: one sequence of per-pair values per seed, pairs
    not matched across seeds). `method`: SEED_T or SEED_BOOTSTRAP. With the same pairs under every seed, use
    crossed_interval (tests/test_replicates.py measures all three)."""
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


def describe_two_level(tl: TwoLevel, pairs: int | None = None, confidence: float = 0.95) -> str:
    """How a TwoLevel interval was computed, for outputs (the notes explain the method)."""
    if tl.method == SEED_CROSSED:
        return (f"two-level: {confidence:.0%} t over {tl.seeds} seeds x {pairs} pairs "
                f"(seed and pair variance, {tl.seeds - 1} df)")
    if tl.method == SEED_T:
        return f"two-level: {confidence:.0%} t over {tl.seeds} per-seed means ({tl.seeds - 1} df; pairs not matched across seeds)"
    return f"two-level: {confidence:.0%} {tl.method} over {tl.seeds} seeds"
