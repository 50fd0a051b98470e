"""Tables from runs (pure): the paper's layout of Tables 1-3 (`build_table` -> ReportTable), its tidy long form,
the paired comparisons of a table's measured rows and the quality-against-compute points.

Inputs are runs DataFrames in `mlflow.search_runs` layout (columns `run_id`, `status`, tags, params and metrics
named by strbench.contract). Rows: the paper's methods first, then every other measured case (e.g.
`biharmonic`); when one case was run with several configurations (settings other than the seed), each gets its
own row, labelled with the settings that differ, and a warning says so (strbench.selection); each
(configuration, seed, image, mask) pair counts once (selection.drop_repeated_pairs). Cell intervals: with two
or more training seeds over seeds and images (strbench.intervals.crossed_interval, docs/SCIENCE.md#replicates);
with one, the run's own logged interval over images, or for several runs the bootstrap over their pooled
per-image values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from strbench import contract as K
from strbench.errors import StrbenchError
from strbench.report.reference import (CASE_ORDER, DATASET_NAMES, EXTRA_METRICS, IDS_DIMENSIONS, MASK_SETS_EXAMPLE,
                                       METHOD_NAMES, METRICS, NOT_IN_PAPER, TABLE_COLUMNS, TABLES, MetricSpec,
                                       load_reference)
from strbench.selection import as_str as _str
from strbench.selection import column as _col
from strbench.selection import drop_repeated_pairs
from strbench.selection import mixed_configurations as _mixed
from strbench.selection import row_labels

MET, PAR = K.METRIC_COLUMN, K.PARAM_COLUMN
STATUS = "status"


def _tag(name: str) -> str:
    """The runs-frame column of tag strbench.<name>."""
    return K.column(K.tag(name))


CASE, METHOD, MASK_SET, MASK_BIN = (K.column(t) for t in (K.CASE_TAG, K.METHOD_TAG, K.MASK_SET_TAG, K.MASK_BIN_TAG))
VARIANT, DATASET, SIZE = (K.column(t) for t in (K.VARIANT_TAG, K.DATASET_TAG, K.SIZE_TAG))
ABLATION = _tag("ablation")


# ----------------------------------------------------------------------------------------------- data model
@dataclass
class Row:
    label: str
    venue: str
    source: str  # "paper" | "measured"
    values: dict[tuple[str, str], float | None]  # (metric, column) -> value
    footnotes: dict[tuple[str, str], int] = field(default_factory=dict)  # (metric, column) -> footnote number
    nfe: float | None = None
    sec: float | None = None
    name: str = ""  # label without the "(paper)"/"(measured)" suffix


@dataclass
class ReportTable:
    number: int
    caption: str
    experiment: str
    columns: list[str]
    rows: list[Row]
    footnotes: list[str]  # numbered from 1
    notes: list[str]
    details: pd.DataFrame  # one row per measured (row, column) cell
    warnings: list[str] = field(default_factory=list)
    axis: str = "mask_bin"
    data: str = ""  # what the measured rows used (describe_data), named in every caption
    metrics: tuple = METRICS  # the metric columns: the paper's, then those of EXTRA_METRICS the runs logged


MISSING = "–"  # not reported by the paper / not run here (notes name it)


# ----------------------------------------------------------------------------------------------- helpers
def num(x) -> float | None:
    """A float, or None for what is not a finite-or-inf number (None, NaN, text)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def bin_key(label: str) -> tuple:
    try:
        lo, hi = label.rstrip("%").split("-")
        return (0, float(lo), float(hi), label)
    except ValueError:
        return (1, 0.0, 0.0, label)


def _other_key(label: str) -> tuple:
    """Sort key of a column that is not one of the paper's: "10-20%", or "<mask set> 10-20%" (see axis_values)."""
    head, _, tail = label.rpartition(" ")
    return (head, *bin_key(tail)) if head else ("", *bin_key(label))


def column_order(values: Sequence[str], axis: str, paper_columns: Sequence[str]) -> list[str]:
    vals = list(dict.fromkeys(values))
    if axis == "mask_bin":
        return sorted(vals, key=bin_key)
    first = [c for c in paper_columns if c in vals]
    return first + sorted((v for v in vals if v not in first), key=_other_key)


def case_key(label: str) -> tuple:
    base = label.split(" [")[0]
    return (CASE_ORDER.index(base) if base in CASE_ORDER else len(CASE_ORDER), label)


def axis_values(runs: pd.DataFrame, axis: str) -> pd.Series:
    """The table column of each run: its tag `axis` (mask_bin or mask_set). On the mask_set axis (Table 2), a run
    whose mask set is not one of the paper's (hard, easy) goes to its hole-ratio bin's column ("10-20%"; "<set>
    10-20%" when several such sets), never pooled with the set's other bins (other_mask_sets says so)."""
    vals = _col(runs, _tag(axis)).fillna(_col(runs, MASK_SET)).fillna("all").astype(str)
    paper = TABLE_COLUMNS.get(axis)
    if not paper or runs.empty:
        return vals
    bins = _col(runs, MASK_BIN).map(_str)
    other = ~vals.isin(paper) & (bins != "")
    if other.any():
        several = vals[other].nunique() > 1
        vals = vals.where(~other, (vals + " " + bins) if several else bins)
    return vals


def other_mask_sets(runs: pd.DataFrame, axis: str) -> list[str]:
    """The runs' mask sets that are not columns of the paper's table on this axis (Table 2: not hard/easy)."""
    paper = TABLE_COLUMNS.get(axis)
    if not paper or runs.empty:
        return []
    sets = _col(runs, MASK_SET).map(_str)
    bins = _col(runs, MASK_BIN).map(_str)
    return sorted({x or "(untagged)" for x in sets[~sets.isin(paper) & (bins != "")]})


def table_row_labels(runs: pd.DataFrame, axis: str = "mask_bin") -> pd.Series:
    """Row label per run (selection.row_labels over the table's columns)."""
    return row_labels(runs, axis_values(runs, axis))


def mixed_configurations(runs: pd.DataFrame, axis: str, what: str = "") -> list[str]:
    """Warnings for table cells holding runs of more than one configuration (selection.mixed_configurations)."""
    return _mixed(runs, axis_values(runs, axis), what)


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """The FINISHED runs (a frame without `status` counts as finished), with their row label and column."""
    return runs[_col(runs, STATUS).fillna("FINISHED") == "FINISHED"].copy()


def labelled(runs: pd.DataFrame, axis: str) -> pd.DataFrame:
    """`runs` with `_row` (row label) and `_col` (table column) of each run, each image-mask pair once."""
    return labelled_once(runs, axis)[0]


def labelled_once(runs: pd.DataFrame, axis: str) -> tuple[pd.DataFrame, int]:
    """`labelled`, and how many runs were left out as repeats of the same (configuration, seed, image, mask)
    pairs (selection.drop_repeated_pairs: the latest is kept)."""
    runs = runs.copy()
    runs["_row"] = table_row_labels(runs, axis)
    runs["_col"] = axis_values(runs, axis)
    return drop_repeated_pairs(runs, ["_row", "_col"])


def logged_ci(run: pd.Series, metric: str) -> tuple[float, float] | None:
    lo, hi = num(run.get(f"{MET}{metric}_ci_low")), num(run.get(f"{MET}{metric}_ci_high"))
    return None if lo is None or hi is None else (lo, hi)


def seed_values(runs: pd.DataFrame, metric: str) -> list[float]:
    """The cell's value per training seed (mean over that seed's runs, e.g. the bins of a mask set); runs
    without a seed tag count as one seed together."""
    vals = pd.to_numeric(_col(runs, MET + metric), errors="coerce")
    seeds = _col(runs, K.column(K.SEED_TAG)).map(_str)
    return [float(v) for v in vals.groupby(seeds.to_numpy()).mean().dropna()]


def seed_table(runs: pd.DataFrame, metric: str, per_image: dict[str, pd.DataFrame]) -> np.ndarray | None:
    """The cell's per-image values as a seeds x images table (images: mask bin, image id [, mask id]), only the
    images every seed scored; None without every run's per_image.csv."""
    parts = []
    for _, r in runs.iterrows():
        f = per_image.get(r["run_id"])
        if f is None or metric not in f.columns or "image_id" not in f.columns:
            return None
        keys = ["image_id"] + (["mask_id"] if "mask_id" in f.columns else [])
        parts.append(pd.DataFrame({"seed": _str(r.get(K.column(K.SEED_TAG))), "bin": _str(r.get(MASK_BIN)),
                                   **{k: f[k].astype(str) for k in keys}, "v": pd.to_numeric(f[metric])}))
    if not parts:
        return None
    long = pd.concat(parts, ignore_index=True).dropna(subset=["v"])
    cols = [c for c in long.columns if c not in ("seed", "v")]
    table = long.pivot_table(index="seed", columns=cols, values="v", aggfunc="mean").dropna(axis=1)
    return table.to_numpy() if table.shape[1] >= 2 else None


def _ci(runs: pd.DataFrame, metric: str, per_image: dict[str, pd.DataFrame], n_boot: int, seed: int
        ) -> tuple[float, float] | None:
    """Two or more training seeds: the two-level interval over seeds x images (strbench.intervals.
    crossed_interval; docs/SCIENCE.md#replicates), or the t-interval over the per-seed means without the
    per-image values. One seed: a single run's own logged interval, else (several runs, e.g. bins of a mask
    set) the bootstrap over their pooled per-image values (strbench.intervals, as the logged one)."""
    from strbench.intervals import crossed_interval, mean_interval, t_interval

    per_seed = seed_values(runs, metric)
    if len(per_seed) >= 2:
        table = seed_table(runs, metric, per_image)
        if table is not None and table.shape[0] >= 2:
            tl = crossed_interval(table)
            return (tl.low, tl.high)
        return t_interval(per_seed)
    if len(runs) == 1 and logged_ci(runs.iloc[0], metric) is not None:
        return logged_ci(runs.iloc[0], metric)
    frames = [per_image.get(r) for r in runs["run_id"]]
    if frames and all(f is not None and metric in f.columns for f in frames):
        iv = mean_interval(pd.concat([f[metric] for f in frames]).to_numpy(), n_resamples=n_boot, seed=seed)
        return (iv.low, iv.high)
    return None


def cell_keys(runs: pd.DataFrame, axis: str) -> pd.Series:
    """(row label, column) of each run, as build_table groups them."""
    return table_row_labels(runs, axis) + "\x00" + axis_values(runs, axis)


def mean(values: pd.Series) -> float | None:
    v = [x for x in (num(a) for a in values) if x is not None]
    return float(np.mean(v)) if v else None


def _missing_reason(runs: pd.DataFrame, metric: str) -> str:
    reasons = [str(r) for r in _col(runs, K.column(K.missing_tag(metric))).dropna().unique()]
    if metric not in ("fid", "lpips") and not reasons:  # KID, P-IDS/U-IDS: the same Inception features as FID
        reasons = [str(r) for r in _col(runs, K.column(K.missing_tag("fid"))).dropna().unique()]
    return "; ".join(reasons) if reasons else f"no `{metric}` metric was logged for these runs"


def describe_data(runs: pd.DataFrame, axis: str = "mask_bin") -> str:
    """The data the measured rows used, from the runs' tags/metrics: e.g. "built-in 32 px, 16 test images per
    bin". Never a dataset the runs did not use."""
    if runs.empty:
        return "no runs"
    names = []
    for d, s in sorted({(_str(a), _str(b)) for a, b in zip(_col(runs, DATASET), _col(runs, SIZE))}):
        name = DATASET_NAMES.get(d, d or "unknown dataset")
        names.append(f"{name} {s} px" if s else name)
    n = sorted({int(v) for v in (num(x) for x in _col(runs, MET + "n_images")) if v is not None})
    unit = "bin" if axis == "mask_bin" else "mask set"
    imgs = (f", {n[0]} test images per {unit}" if len(n) == 1 else
            f", {n[0]}-{n[-1]} test images per {unit}" if n else "")
    src = sorted({_str(x) for x in _col(runs, PAR + "mask.source") if _str(x)})
    masks = {"generator": "generated masks", "folder": "masks from a folder"}
    msk = f", {', '.join(masks.get(s, s + ' masks') for s in src)}" if src else ""
    return " + ".join(names) + imgs + msk


# ----------------------------------------------------------------------------------------------- the table
def _caption(ref: dict, runs: pd.DataFrame, axis: str) -> str:
    subject = ref.get("subject") or ref["caption"]
    paper = ref.get("dataset", "")
    masks = ref.get("masks_short") or ""
    return (f"{subject}. Measured rows: {describe_data(runs, axis)}; the paper's rows: {paper}"
            + (f", {masks}" if masks else ""))


DETAIL_COLUMNS = ["method", "column", "mask_set", "mask_bin", "runs", "seeds", "images", "psnr", "psnr_ci",
                  "psnr_seed_sd", "ssim", "ssim_ci", "ssim_seed_sd", "fid", "kid", "nfe_per_image", "sec_per_image",
                  "lpips", "lpips_ci", "p_ids", "u_ids"]


def table_metrics(runs: pd.DataFrame) -> tuple[MetricSpec, ...]:
    """The paper's metrics, then each of EXTRA_METRICS that some run logged, or logged the reason it could not
    (runs of versions before it existed add no column)."""
    def logged(key: str) -> bool:
        return (_col(runs, MET + key).map(num).notna().any()
                or _col(runs, K.column(K.missing_tag(key))).map(_str).ne("").any())

    return METRICS + tuple(m for m in EXTRA_METRICS if not runs.empty and logged(m.key))


def extra_metric_notes(metrics: Sequence[MetricSpec], details: pd.DataFrame) -> list[str]:
    """What the columns the paper does not have are, and for P-IDS/U-IDS how many images they rest on."""
    keys = [m.key for m in metrics if not m.paper]
    if not keys:
        return []
    names = ", ".join(m.header for m in metrics if not m.paper)
    out = [f"{names}: not reported by the paper (marked {NOT_IN_PAPER}); strbench's own measurement."]
    if "lpips" in keys:
        out.append("LPIPS (Zhang et al. 2018, v0.1 linear layers; lower is more alike): per image, mean over the "
                   "cell's images; the backbone (AlexNet unless `metrics.lpips_net: vgg`) from a local file "
                   "checked by sha256.")
    if "p_ids" in keys or "u_ids" in keys:
        imgs = sorted({int(x) for x in details["images"]}) if len(details) else []
        rest = (f"{imgs[0]}" if len(imgs) == 1 else f"{imgs[0]}-{imgs[-1]}") if imgs else "?"
        few = (f" With {rest} images per cell, fewer than the {IDS_DIMENSIONS} feature dimensions, the two sets are "
               "always separable: both are 0 for every method, so they mean nothing here (as FID on a few dozen "
               "images); they need thousands of images.") if imgs and imgs[-1] <= IDS_DIMENSIONS else ""
        out.append(f"P-IDS / U-IDS (Zhao et al. 2021, MAT; 0.5 at best, higher is better): a linear SVM on the "
                   f"Inception pool3 features of the real and the inpainted images of a cell; they rest on {rest} "
                   f"image pairs per cell.{few}")
    return out


def build_table(runs: pd.DataFrame, number: int, reference: dict | None = None, *,
                per_image: dict[str, pd.DataFrame] | None = None, experiment: str = "",
                notes: Sequence[str] = (), n_boot: int = 1000, seed: int = 0) -> ReportTable:
    """Pivot finished cell runs into the paper's layout of table `number`, with the paper's rows first and every
    measured case after (unknown cases after the paper's)."""
    if number not in TABLES:
        raise StrbenchError(f"unknown table {number}; choose one of {sorted(TABLES)}")
    spec, ref = TABLES[number], (reference if reference is not None else load_reference())[number]
    per_image = per_image or {}
    runs, repeated = labelled_once(finished(runs), spec.axis)
    others = other_mask_sets(runs, spec.axis)  # Table 2 runs without hard/easy mask sets: shown by bin
    by_bin = bool(others) and not runs["_col"].isin(ref["columns"]).any()
    data_axis = "mask_bin" if by_bin else spec.axis  # what "test images per ..." counts in the caption
    columns = column_order(runs["_col"].tolist(), spec.axis, ref["columns"])
    if spec.axis in TABLE_COLUMNS:  # the paper's few named columns always show, so its rows keep their numbers
        columns = list(ref["columns"]) + [c for c in columns if c not in ref["columns"]]

    metrics = table_metrics(runs)
    rows: list[Row] = []
    for r in ref["rows"]:
        values = {}
        for m in metrics:
            for c in columns:
                values[(m.key, c)] = (num(r[m.key][ref["columns"].index(c)]) if m.paper and c in ref["columns"]
                                      else None)
        rows.append(Row(f"{r['method']} (paper)", r.get("venue") or "", "paper", values, name=r["method"]))

    footnotes: list[str] = []
    details = []
    for label in sorted(runs["_row"].unique(), key=case_key):
        mine = runs[runs["_row"] == label]
        row = Row(f"{label} (measured)", "strbench", "measured", {},
                  nfe=mean(_col(mine, MET + "nfe_per_image")), sec=mean(_col(mine, MET + "sec_per_image")),
                  name=label)
        for c in columns:
            cell = mine[mine["_col"] == c]
            d = {"method": label, "column": c, "runs": len(cell),
                 "seeds": _col(cell, K.column(K.SEED_TAG)).map(_str).nunique(),
                 "images": int(sum(num(x) or 0 for x in _col(cell, MET + "n_images"))),
                 "mask_set": ", ".join(sorted(set(_col(cell, MASK_SET).map(_str)) - {""})),
                 "mask_bin": ", ".join(sorted(set(_col(cell, MASK_BIN).map(_str)) - {""}, key=bin_key))}
            for m in metrics:
                col = _col(cell, MET + m.key)
                complete = len(cell) > 0 and all(num(x) is not None for x in col)
                value = mean(col) if complete else None
                row.values[(m.key, c)] = value
                if len(cell) > 0 and value is None:
                    why = f"{m.name} n/a: {_missing_reason(cell, m.key)}"
                    if why not in footnotes:
                        footnotes.append(why)
                    row.footnotes[(m.key, c)] = footnotes.index(why) + 1
                d[m.key] = value
                if m.key in ("psnr", "ssim", "lpips"):
                    d[f"{m.key}_ci"] = _ci(cell, m.key, per_image, n_boot, seed) if len(cell) else None
                    per_seed = seed_values(cell, m.key)
                    d[f"{m.key}_seed_sd"] = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None
            d["kid"] = mean(_col(cell, MET + "kid")) if len(cell) else None
            d["nfe_per_image"] = mean(_col(cell, MET + "nfe_per_image"))
            d["sec_per_image"] = mean(_col(cell, MET + "sec_per_image"))
            if len(cell):
                details.append(d)
        rows.append(row)

    all_notes = [f"Measured rows: MLflow experiment `{experiment or spec.experiment}`, {describe_data(runs, data_axis)}; "
                 "each value is the mean over its runs (training seeds: their number and seed-to-seed SD per "
                 "cell in the measured cells' table). The paper's rows are typed from the paper "
                 "(reports/paper_reference.yaml).",
                 f"Dash ({MISSING}): not reported by the paper, or not run here. NFE/img and s/img: network evaluations and "
                 "seconds per image (not in the paper)."]
    measured_cols = set(runs["_col"])
    if spec.axis == "mask_set" and MASK_BIN in runs.columns:
        sets = [f"{c} = {', '.join(sorted(runs.loc[runs['_col'] == c, MASK_BIN].dropna().astype(str).unique(), key=bin_key))}"
                for c in ref["columns"] if c in measured_cols]
        if sets:
            all_notes.append(f"Hole-ratio bins of the mask sets (the paper does not define them): {'; '.join(sets)}.")
    missing_cols = [c for c in ref["columns"] if c not in measured_cols]
    if not runs.empty and not any(c in ref["columns"] for c in measured_cols) and not others:
        all_notes.append(f"None of the measured columns is one of the paper's ({', '.join(ref['columns'])}).")
    elif missing_cols and not runs.empty:
        all_notes.append(f"Paper columns not measured here: {', '.join(missing_cols)}.")
    if repeated:
        all_notes.append(f"{repeated} run(s) scoring the same configuration, seed, images and masks as a later run "
                         "left out: each image-mask pair is counted once.")
    detail_df = pd.DataFrame(details, columns=DETAIL_COLUMNS)
    all_notes += extra_metric_notes(metrics, detail_df)
    all_notes += list(notes)
    warnings = mixed_configurations(runs, spec.axis, f"Table {number}: ")
    if others:
        warnings.insert(0, mask_sets_warning(number, experiment or spec.experiment, others,
                                             [c for c in columns if c not in ref["columns"]], ref["columns"]))
    return ReportTable(number, _caption(ref, runs, data_axis), experiment or spec.experiment, columns, rows,
                       footnotes, all_notes, detail_df, warnings, spec.axis, describe_data(runs, data_axis), metrics)


def mask_sets_warning(number: int, experiment: str, others: Sequence[str], bin_columns: Sequence[str],
                      paper_columns: Sequence[str]) -> str:
    """Why some measured values of a mask-set table sit under hole-ratio bins instead of the paper's columns."""
    names = ", ".join(f"`{s}`" for s in others)
    want = " and ".join(f"`{c}`" for c in paper_columns)
    return (f"Table {number} compares the mask sets {want}; experiment `{experiment}` has runs of mask set(s) "
            f"{names}, shown by hole-ratio bin ({', '.join(bin_columns)}), which the paper does not report. For "
            f"the paper's columns define `masks.sets` with `hard` and `easy` in the experiment YAML, as "
            f"{MASK_SETS_EXAMPLE} does (`{TABLES[number].run_hint}`).")


TIDY_COLUMNS = ["table", "experiment", "method", "source", "mask_set", "mask_bin", "metric", "value", "ci_low",
                "ci_high", "n", "runs", "seeds", "seed_sd"]


def tidy_frame(rt: ReportTable) -> pd.DataFrame:
    """One long table: a row per (method, source, column, metric), with the interval and the number of images
    (n) where measured. mask_set / mask_bin carry the table's column (the other from the runs' tags)."""
    recs = []
    axis_set = rt.axis == "mask_set"
    for r in rt.rows:
        if r.source != "paper":
            continue
        for m in rt.metrics:
            for c in rt.columns:
                v = r.values.get((m.key, c))
                if v is not None:
                    recs.append({"table": rt.number, "experiment": "paper", "method": r.name, "source": "paper",
                                 "mask_set": c if axis_set else "", "mask_bin": "" if axis_set else c,
                                 "metric": m.key, "value": v})
    for d in rt.details.itertuples(index=False):  # on the mask-set axis a column may be a bin (axis_values)
        base = {"table": rt.number, "experiment": rt.experiment, "method": d.method, "source": "measured",
                "mask_set": (d.mask_set or d.column) if axis_set else d.mask_set,
                "mask_bin": d.mask_bin if axis_set else d.column, "n": d.images, "runs": d.runs, "seeds": d.seeds}
        shown = [m.key for m in rt.metrics if not m.paper]  # columns of strbench's own, where the table has them
        for key in ("psnr", "ssim", "fid", "kid", "nfe_per_image", "sec_per_image", *shown):
            v = num(getattr(d, key))
            rec = {**base, "metric": key, "value": v}
            ci = getattr(d, f"{key}_ci", None)
            if ci is not None:
                rec["ci_low"], rec["ci_high"] = ci
            sd = getattr(d, f"{key}_seed_sd", None)
            if sd is not None and not (isinstance(sd, float) and math.isnan(sd)):
                rec["seed_sd"] = sd
            recs.append(rec)
    df = pd.DataFrame(recs, columns=TIDY_COLUMNS)
    df["n"] = df["n"].astype("Int64")
    df["runs"] = df["runs"].astype("Int64")
    df["seeds"] = df["seeds"].astype("Int64")
    return df


# ----------------------------------------------------------------------------------------------- paired, frontier
def paired_for_table(rt_runs: pd.DataFrame, per_image: dict[str, pd.DataFrame], axis: str, *,
                     n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Paired comparisons (strbench.paired.paired_table) of the measured rows of a table's runs."""
    from strbench import paired

    runs = finished(rt_runs)
    if runs.empty:
        return pd.DataFrame(columns=paired.PAIR_COLUMNS)
    runs = labelled(runs, axis)
    long = paired.per_image_long(per_image, runs)
    order = sorted(runs["_row"].unique(), key=case_key)
    if long.empty:
        return pd.DataFrame(columns=paired.PAIR_COLUMNS)
    cols = column_order(long["column"].tolist(), axis, TABLE_COLUMNS.get(axis, []))
    return paired.paired_table(long, order, columns=cols, n_resamples=n_resamples, seed=seed)


FRONTIER_COLUMNS = ["label", "family", "nfe", "psnr", "fid", "columns"]


def frontier_frame(runs: pd.DataFrame, axis: str = "mask_bin") -> tuple[pd.DataFrame, list[str]]:
    """One point per (case, setting) = report row: NFE per image, PSNR (and FID where logged), each the mean
    over the columns (bins) that every point has (so the points compare like with like). Returns (points,
    notes). Columns: label, family (method, with the ablation for StrDiffusion), nfe, psnr, fid, columns."""
    runs = finished(runs)
    if runs.empty:
        return pd.DataFrame(columns=FRONTIER_COLUMNS), []
    runs = labelled(runs, axis)
    have = runs.groupby("_row")["_col"].agg(lambda s: set(s))
    common = set.intersection(*have.tolist())
    notes = []
    if common:
        left = sorted(set.union(*have.tolist()) - common, key=bin_key)
        if left:
            notes.append(f"Columns not run for every point are left out: {', '.join(left)}.")
    else:
        notes.append("No column was run for every point: each point averages its own columns.")
    recs = []
    for label in sorted(have.index, key=case_key):
        mine = runs[runs["_row"] == label]
        use = sorted(common or have[label], key=bin_key)
        mine = mine[mine["_col"].isin(use)]
        per_col = mine.groupby("_col")
        method = _str(mine[METHOD].iloc[0]) if METHOD in mine else ""
        family = METHOD_NAMES.get(method, method or label.split(" [")[0])
        abl = _str(mine[ABLATION].iloc[0]) if ABLATION in mine else ""
        if method == "strdiffusion" and abl and abl != "D":
            family += f" ({abl})"
        family += _solver_suffix(mine)
        fid = [mean(_col(g, MET + "fid")) for _, g in per_col]
        recs.append({"label": label, "family": family, "nfe": mean(_col(mine, MET + "nfe_per_image")),
                     "psnr": float(np.mean([mean(_col(g, MET + "psnr")) for _, g in per_col])),
                     "fid": float(np.mean(fid)) if fid and all(f is not None for f in fid) else None,
                     "columns": ", ".join(use)})
    return pd.DataFrame(recs, columns=FRONTIER_COLUMNS), notes


def _solver_suffix(runs: pd.DataFrame) -> str:
    """' · posterior', ' · mr o2 ode', ...: a run's solver (docs/SCIENCE.md#solvers) from its logged settings
    (params method.* or settings.*); '' for euler (every level), which logs no solver key."""
    def setting(key):
        for name in (K.param_column("method." + key), K.param_column("settings." + key)):
            if name in runs and runs[name].notna().any():
                return _str(runs[name].dropna().iloc[0])
        return ""

    solver = setting("solver")
    if not solver or solver == "euler":
        return ""
    extra = [f"o{setting('order')}" if setting("order") else "", setting("solver_type")]
    return " · " + " ".join([solver] + [e for e in extra if e])


def paired_notes(n_resamples: int) -> list[str]:
    """What the paired comparisons are (every output that shows them carries this note)."""
    return [f"A − B: mean over image-mask pairs (same mask set and bin, same image id, same training seed; "
            f"over seeds, the pair's mean) of the per-image difference (per_image.csv). 95% CI with two or more "
            f"seeds both rows ran: two levels, seeds and image-mask pairs both random (the seeds x pairs table "
            f"of the pairs every seed scored: Var = (MS_seed + MS_pair) / (S n), t with S - 1 df, scipy.stats.t; "
            f"docs/SCIENCE.md#replicates), with the seed-to-seed SD beside it; with one seed it is the "
            f"image-level interval only (and says so). Image-level 95% CI: bootstrap "
            f"over the pairs (scipy.stats.bootstrap, BCa, {n_resamples} resamples, seed 0). p: two-sided Wilcoxon "
            "signed-rank test over the pairs (scipy.stats.wilcoxon, zero differences dropped); not corrected for "
            "multiple comparisons. Mask `all`: pooled over the columns both rows have."]
