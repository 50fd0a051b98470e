"""Paired comparisons of methods scored on the same image-mask pairs, and the paper's claims checked on them.

Every method of a table column is scored on the same test images with the same masks (same mask set and
bin, same image id), so the comparison of two methods is paired: the unit is one image-mask pair, the value
the difference of a per-image metric (per_image.csv) between the two methods. Training seeds are the
replicates (docs/SCIENCE.md#replicates): pairs are matched within each seed both rows ran, and the
interval has two levels, seeds and the pairs within each seed. This module is pure (no I/O, no mlflow): it
takes per-image frames and returns DataFrames.

- `paired_test(d)`: mean of the differences, a 95% bootstrap interval of that mean over the pairs
  (strbench.intervals: `scipy.stats.bootstrap`, BCa, seeded, as every image-level interval strbench reports)
  and the two-sided Wilcoxon signed-rank p-value (`scipy.stats.wilcoxon`); all-zero differences give
  p = n/a with the reason.
- `seeded_test(matched)`: the same on the pairs averaged over seeds, plus the two-level interval (seeds x
  pairs, both random: strbench.intervals.crossed_interval; the t-interval over per-seed means where the seeds
  scored different pairs) and the seed-to-seed SD; with one seed the interval is the image-level one and
  says so.
- `paired_table(long, order)`: every pair of rows (methods/settings) on every column, and pooled over columns.
- `check_claims(...)`: the paper's claims, each "holds" / "not shown" / "reversed" from its interval (two
  levels when the rows have several seeds), or "runs needed are missing: ..." naming the experiment to run.
"""
from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from strbench import contract as K
from strbench.intervals import crossed_interval, describe_two_level, mean_interval, two_level_interval

PAIRED_METRICS = ("psnr", "ssim", "lpips")  # per-image metrics compared (lpips where per_image.csv has it)
POOLED = "all"  # the column label of a comparison pooled over every column both rows have
PAIR_COLUMNS = ["a", "b", "column", "metric", "n", "seeds", "mean_a", "mean_b", "diff", "ci_low", "ci_high",
                "img_ci_low", "img_ci_high", "seed_sd", "p_wilcoxon", "interval", "note"]
ONE_SEED = "one training seed: image-level interval only"


@dataclass(frozen=True)
class PairedResult:
    n: int
    diff: float | None  # mean of a - b over the pairs
    ci_low: float | None
    ci_high: float | None
    p: float | None  # Wilcoxon signed-rank, two-sided
    note: str = ""  # why p or the interval is n/a


def paired_test(d: Sequence[float], *, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
                ) -> PairedResult:
    """Mean of the paired differences `d`, its bootstrap interval (BCa over pairs) and the Wilcoxon p-value."""
    from scipy import stats

    d = np.asarray(d, dtype=float)
    d = d[np.isfinite(d)]
    n = int(d.size)
    if n == 0:
        return PairedResult(0, None, None, None, None, "no image-mask pair scored by both")
    mean = float(d.mean())
    if n == 1:
        return PairedResult(1, mean, None, None, None, "one pair: no interval or test")
    iv = mean_interval(d, n_resamples=n_resamples, confidence=confidence, seed=seed, what="differences")
    lo, hi = iv.low, iv.high
    notes = [iv.note] if iv.note else []
    if np.all(d == 0):
        return PairedResult(n, mean, lo, hi, None, "p n/a: all differences are zero (identical outputs)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # normal approximation with ties/zeros: scipy warns, the value stands
        p = float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
    return PairedResult(n, mean, lo, hi, p, "; ".join(notes))


def per_image_long(frames: Mapping[str, pd.DataFrame], runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, image-mask pair): columns row, column, mask_set, mask_bin, image_id, [mask_id],
    seed, run_id and the per-image metrics. `runs` gives each run's `run_id`, `_row` (row label), `_col`
    (table column) and the tags strbench.mask_set / mask_bin / seed."""
    parts = []
    for _, r in runs.iterrows():
        f = frames.get(r["run_id"])
        if f is None or "image_id" not in f.columns:
            continue
        f = f.copy()
        f["row"], f["column"], f["run_id"] = r["_row"], str(r["_col"]), r["run_id"]
        for k in ("mask_set", "mask_bin", "seed"):
            v = r.get(K.column(K.tag(k)))
            f[k] = "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
        parts.append(f)
    if not parts:
        return pd.DataFrame(columns=["row", "column", "mask_set", "mask_bin", "image_id", "seed", "run_id"])
    return pd.concat(parts, ignore_index=True)


def _pair_keys(long: pd.DataFrame) -> list[str]:
    keys = ["column", "mask_set", "mask_bin", "image_id"]
    if "mask_id" in long.columns and long["mask_id"].notna().all():
        keys.append("mask_id")
    return keys


def _seeds(long: pd.DataFrame) -> pd.Series:
    return long["seed"].fillna("").astype(str) if "seed" in long.columns else pd.Series("", index=long.index)


def matched(long: pd.DataFrame, a: str, b: str, metric: str) -> pd.DataFrame:
    """The image-mask pairs scored by both rows within each training seed both ran: columns <keys>, seed, a, b.
    Rows without a common seed (e.g. one ran seed 0, the other seed 1 only) are paired over their seeds'
    means instead, with seed "" (one pseudo-seed: an image-level comparison)."""
    keys = _pair_keys(long)
    sub = long[long["row"].isin([a, b]) & long[metric].notna()].assign(seed=lambda f: _seeds(f))
    per = sub.groupby(["row", *keys, "seed"], dropna=False)[metric].mean().reset_index()
    left = per[per["row"] == a].drop(columns="row").rename(columns={metric: "a"})
    right = per[per["row"] == b].drop(columns="row").rename(columns={metric: "b"})
    both = left.merge(right, on=[*keys, "seed"], how="inner")
    if len(both) or left.empty or right.empty:
        return both
    avg = lambda f, k: f.groupby(keys, dropna=False)[k].mean().reset_index()  # noqa: E731
    return avg(left, "a").merge(avg(right, "b"), on=keys, how="inner").assign(seed="")


@dataclass(frozen=True)
class SeededResult:
    """A paired comparison over seeds: the image-level test on the seed-averaged pairs (`image`) and, with
    two or more seeds, the two-level interval over seeds (`ci_low`, `ci_high`: what a verdict reads)."""

    image: PairedResult
    seeds: int
    ci_low: float | None
    ci_high: float | None
    seed_sd: float | None
    interval: str  # how (ci_low, ci_high) was computed

    @property
    def n(self) -> int:
        return self.image.n

    @property
    def diff(self) -> float | None:
        return self.image.diff


def seeded_test(m: pd.DataFrame, *, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
                ) -> SeededResult:
    """The comparison of `matched` pairs (columns <keys>, seed, a, b). One seed: the image-level interval (as
    before seeds were replicates), said so. Several: the two-level interval over the seeds x pairs table of the
    pairs every seed scored (strbench.intervals.crossed_interval; docs/SCIENCE.md#replicates), else over the
    per-seed mean differences (two_level_interval, t), beside the image-level one."""
    d = (m["a"] - m["b"]).to_numpy(dtype=float)
    seeds = m["seed"].astype(str).to_numpy() if "seed" in m.columns else np.full(len(m), "")
    groups = [d[seeds == s] for s in dict.fromkeys(seeds)]
    n_seeds = sum(1 for g in groups if np.isfinite(g).any())
    if n_seeds < 2:  # the pairs as they are, in the order matched() gives (the same draws as before seeds)
        image = paired_test(d, n_resamples=n_resamples, confidence=confidence, seed=seed)
        why = ONE_SEED if n_seeds == 1 and seeds[0] != "" else \
            "training seed unknown or not shared by the two rows: image-level interval only"
        return SeededResult(image, n_seeds, image.ci_low, image.ci_high, None, why)
    keys = [k for k in m.columns if k not in ("seed", "a", "b")]
    frame = pd.DataFrame({"d": d, "seed": seeds, **{k: m[k].astype(str).to_numpy() for k in keys}})
    pooled = frame.groupby(keys, dropna=False)["d"].mean()
    image = paired_test(pooled.to_numpy(), n_resamples=n_resamples, confidence=confidence, seed=seed)
    table = frame.pivot_table(index="seed", columns=keys, values="d", aggfunc="mean").dropna(axis=1)
    if table.shape[0] >= 2 and table.shape[1] >= 2:  # the pairs every seed scored: seeds x pairs, crossed
        tl = crossed_interval(table.to_numpy(), confidence=confidence)
        return SeededResult(image, tl.seeds, tl.low, tl.high, tl.seed_sd,
                            describe_two_level(tl, table.shape[1], confidence))
    tl = two_level_interval(groups, confidence=confidence)
    return SeededResult(image, tl.seeds, tl.low, tl.high, tl.seed_sd, describe_two_level(tl, None, confidence))


def paired_table(long: pd.DataFrame, order: Sequence[str], *, metrics: Sequence[str] = PAIRED_METRICS,
                 columns: Sequence[str] | None = None, n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Every pair (a, b) of rows with a after b in `order` (so a - b reads "later minus earlier": the
    paper's method minus a baseline), per column (in `columns` order) and pooled over columns (`all`).
    ci_low/ci_high: the two-level interval over seeds when both rows ran two or more common seeds, else the
    image-level one (img_ci_low/img_ci_high, always given); `interval` says which."""
    recs = []
    rows = [r for r in order if r in set(long["row"])]
    cols = list(columns) if columns is not None else list(dict.fromkeys(long["column"]))
    for b, a in itertools.combinations(rows, 2):
        for metric in metrics:
            if metric not in long.columns:
                continue
            m = matched(long, a, b, metric)
            if m.empty:
                continue
            groups = [(c, m[m["column"] == c]) for c in cols if (m["column"] == c).any()]
            if len(groups) > 1:
                groups.append((POOLED, m))
            for col, g in groups:
                res = seeded_test(g, n_resamples=n_resamples, seed=seed)
                lost = [_unmatched(long, a, b, metric, col), _unseeded(long, a, b, col)]
                note = "; ".join(x for x in (res.image.note, *lost) if x)
                recs.append({"a": a, "b": b, "column": col, "metric": metric, "n": res.n, "seeds": res.seeds,
                             "mean_a": float(g["a"].mean()), "mean_b": float(g["b"].mean()), "diff": res.diff,
                             "ci_low": res.ci_low, "ci_high": res.ci_high, "img_ci_low": res.image.ci_low,
                             "img_ci_high": res.image.ci_high, "seed_sd": res.seed_sd, "p_wilcoxon": res.image.p,
                             "interval": res.interval, "note": note})
    return pd.DataFrame(recs, columns=PAIR_COLUMNS)


def _unseeded(long: pd.DataFrame, a: str, b: str, col: str) -> str:
    sub = long if col == POOLED else long[long["column"] == col]
    sa, sb = (set(_seeds(sub[sub["row"] == r])) for r in (a, b))
    if not (sa & sb):
        return ""
    only = sorted((sa | sb) - (sa & sb))
    return f"seed(s) {', '.join(only)} run by only one of the two are left out" if only else ""


def _unmatched(long: pd.DataFrame, a: str, b: str, metric: str, col: str) -> str:
    sub = long if col == POOLED else long[long["column"] == col]
    keys = _pair_keys(long)
    na = sub[sub["row"] == a][keys].drop_duplicates()
    nb = sub[sub["row"] == b][keys].drop_duplicates()
    both = len(na.merge(nb, on=keys))
    extra = len(na) + len(nb) - 2 * both
    return f"{extra} image-mask pair(s) scored by only one of the two are left out" if extra else ""


# ----------------------------------------------------------------------------------------------- claims
@dataclass(frozen=True)
class Claim:
    key: str
    text: str  # the paper's claim
    source: str  # "table1" | "table2" | "fig8"
    better: str  # case (row base label) claimed better
    worse: str
    metric: str  # psnr | ssim (higher is better) | kl_masked | kl_unmasked (lower is better)


CLAIMS: tuple[Claim, ...] = (
    Claim("T1-psnr-irsde", "StrDiffusion above IR-SDE (Table 1, PSNR)", "table1", "StrDiffusion", "IR-SDE", "psnr"),
    Claim("T1-ssim-irsde", "StrDiffusion above IR-SDE (Table 1, SSIM)", "table1", "StrDiffusion", "IR-SDE", "ssim"),
    Claim("T1-psnr-repaint", "StrDiffusion above RePaint* (Table 1, PSNR)", "table1", "StrDiffusion", "RePaint*",
          "psnr"),
    Claim("T1-ssim-repaint", "StrDiffusion above RePaint* (Table 1, SSIM)", "table1", "StrDiffusion", "RePaint*",
          "ssim"),
    Claim("T2-psnr-DC", "ablation D above C (Table 2, PSNR)", "table2", "D", "C", "psnr"),
    Claim("T2-psnr-CB", "ablation C above B (Table 2, PSNR)", "table2", "C", "B", "psnr"),
    Claim("T2-psnr-DA", "ablation D above A (Table 2, PSNR)", "table2", "D", "A", "psnr"),
    Claim("F8-masked", "gray2edge has the lowest KL of the masked region (Fig. 8)", "fig8", "gray2edge", "*",
          "kl_masked"),
    Claim("F8-unmasked", "gray2edge has the lowest KL of the unmasked region (Fig. 8)", "fig8", "gray2edge", "*",
          "kl_unmasked"),
)
CLAIM_COLUMNS = ["claim", "text", "experiment", "better", "worse", "metric", "verdict", "n", "seeds", "diff", "ci_low",
                 "ci_high", "img_ci_low", "img_ci_high", "seed_sd", "p_wilcoxon", "interval", "detail"]
HOLDS, NOT_SHOWN, REVERSED, MISSING = "holds", "not shown", "reversed", "missing"


def verdict(ci_low: float | None, ci_high: float | None, higher_is_better: bool = True) -> str:
    """holds: the interval of (better - worse) excludes 0 in the claimed direction; reversed: excludes it in
    the other; not shown: contains 0. The interval is the two-level one when the rows ran two or more seeds
    (`interval` of the claim says which; with one seed it says ONE_SEED)."""
    if ci_low is None or ci_high is None or not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return NOT_SHOWN
    lo, hi = (ci_low, ci_high) if higher_is_better else (-ci_high, -ci_low)
    return HOLDS if lo > 0 else REVERSED if hi < 0 else NOT_SHOWN


def _base(label: str) -> str:
    return label.split(" [")[0]


def claims_from_pairs(claims: Sequence[Claim], pairs: pd.DataFrame, rows: Sequence[str], *, experiment: str,
                      hint: str) -> list[dict]:
    """Verdicts of table claims from a paired_table (pooled column `all` when several columns, else the one).
    `rows`: the row labels measured in `experiment`; `hint`: the command that makes the missing runs."""
    out = []
    for c in claims:
        better = [r for r in rows if _base(r) == c.better]
        worse = [r for r in rows if _base(r) == c.worse]
        absent = [x for x, got in ((c.better, better), (c.worse, worse)) if not got]
        if absent:
            out.append(missing_claim(c, experiment, f"case(s) {', '.join(absent)} not in experiment `{experiment}`; "
                                               f"run `{hint}`"))
            continue
        for bl, wl in itertools.product(better, worse):
            sel = pairs[(pairs["metric"] == c.metric) & (((pairs["a"] == bl) & (pairs["b"] == wl))
                                                         | ((pairs["a"] == wl) & (pairs["b"] == bl)))]
            if sel.empty:
                out.append(missing_claim(c, experiment, f"no image-mask pairs scored by both {bl} and {wl} "
                                                   f"(per_image.csv missing?); run `{hint}`", bl, wl))
                continue
            pooled = sel[sel["column"] == POOLED]
            top = (pooled if len(pooled) else sel).iloc[0]
            sign = 1.0 if top["a"] == bl else -1.0  # report better - worse
            lo, hi = _flip(top["ci_low"], top["ci_high"], sign)
            per_col = sel[sel["column"] != POOLED]
            detail = "; ".join(f"{r.column}: {_signed(r.diff, sign):+.3g} [{_fmt_ci(*_flip(r.ci_low, r.ci_high, sign))}]"
                               for r in per_col.itertuples()) if len(per_col) > 1 else str(top["column"])
            img_lo, img_hi = _flip(top.get("img_ci_low"), top.get("img_ci_high"), sign)
            seeds = int(top["seeds"]) if num_or_none(top.get("seeds")) is not None else 0
            out.append({"claim": c.key, "text": c.text, "experiment": experiment, "better": bl, "worse": wl,
                        "metric": c.metric, "verdict": verdict(lo, hi), "n": int(top["n"]), "seeds": seeds,
                        "diff": _signed(top["diff"], sign), "ci_low": lo, "ci_high": hi, "img_ci_low": img_lo,
                        "img_ci_high": img_hi, "seed_sd": num_or_none(top.get("seed_sd")),
                        "p_wilcoxon": top["p_wilcoxon"], "interval": top.get("interval") or "", "detail": detail})
    return out


def claims_from_kl(claims: Sequence[Claim], kl: pd.DataFrame | None, *, experiment: str, hint: str,
                   n_resamples: int = 2000, seed: int = 0) -> list[dict]:
    """Fig. 8 claims: KL(better variant) - KL(each other variant) paired over reverse-process steps (mean
    over runs per step). Steps of one trajectory are not independent samples: the interval says how
    consistently one curve lies below the other, not how it would vary over new images."""
    out = []
    for c in claims:
        region = c.metric.removeprefix("kl_")
        part = None if kl is None else kl[kl["region"] == region]
        if part is None or part.empty or c.better not in set(part["variant"]):
            what = "no kl_trajectory.csv" if part is None or part.empty else f"variant {c.better} not run"
            out.append(missing_claim(c, experiment, f"{what} in experiment `{experiment}`; run `{hint}`"))
            continue
        curve = part.groupby(["variant", "step"])["kl"].mean().unstack("variant")
        others = [v for v in curve.columns if v != c.better]
        if not others:
            out.append(missing_claim(c, experiment, f"only {c.better} was run in `{experiment}`; run `{hint}`"))
            continue
        for o in others:
            d = (curve[c.better] - curve[o]).dropna()
            r = paired_test(d.to_numpy(), n_resamples=n_resamples, seed=seed)
            out.append({"claim": c.key, "text": c.text, "experiment": experiment, "better": c.better, "worse": o,
                        "metric": c.metric, "verdict": verdict(r.ci_low, r.ci_high, higher_is_better=False),
                        "n": r.n, "seeds": None, "diff": r.diff, "ci_low": r.ci_low, "ci_high": r.ci_high,
                        "img_ci_low": None, "img_ci_high": None, "seed_sd": None, "p_wilcoxon": r.p,
                        "interval": f"bootstrap over the {r.n} reverse steps of the mean KL curves",
                        "detail": f"mean KL {c.better} {curve[c.better].mean():.3g} vs {o} {curve[o].mean():.3g}; "
                                  f"paired over {r.n} reverse steps" + (f"; {r.note}" if r.note else "")})
    return out


def missing_claim(c: Claim, experiment: str, why: str, better: str | None = None, worse: str | None = None) -> dict:
    return {"claim": c.key, "text": c.text, "experiment": experiment, "better": better or c.better,
            "worse": worse or c.worse, "metric": c.metric, "verdict": MISSING, "n": 0, "seeds": 0, "diff": None,
            "ci_low": None, "ci_high": None, "img_ci_low": None, "img_ci_high": None, "seed_sd": None,
            "p_wilcoxon": None, "interval": "", "detail": f"runs needed are missing: {why}"}


def num_or_none(v) -> float | None:
    """A finite-or-inf float, or None (None, NaN, text)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _signed(v, sign: float):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else sign * float(v)


def _flip(lo, hi, sign: float):
    lo, hi = _signed(lo, sign), _signed(hi, sign)
    if lo is None or hi is None:
        return None, None
    return (lo, hi) if sign > 0 else (hi, lo)


def _fmt_ci(lo, hi) -> str:
    return "n/a" if lo is None or hi is None else f"{lo:+.3g}, {hi:+.3g}"
