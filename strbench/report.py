"""`strbench report`: the paper's Tables 1-3, Fig. 8, paired comparisons, the paper's claims, quality against
compute, and a static HTML report, from tracked runs, with the paper's numbers beside them.

Run selection (`select_runs`, pure): by default every FINISHED cell run of the experiment counts, pooled
over invocations (parent runs) by cell identity (tag `strbench.cell_hash`, the latest FINISHED run of each);
`run` (a parent run id or unique prefix), `profile` (parent tag `strbench.profile`) and `since` (cell runs
started at or after a date) narrow it. What was used (parent ids, dates, profiles) is part of every output.

Pure builders take a runs DataFrame in `mlflow.search_runs` layout (columns `run_id`, `status`,
`tags.strbench.case`, `tags.strbench.mask_bin`, `params.settings.*`, `metrics.psnr`, ...) and return a
`ReportTable`; renderers turn it into Markdown, LaTeX (pandas Styler, booktabs, sized to a column or the
text width) or CSV (one tidy long table). Rows: the paper's methods first, then every other measured case
(e.g. `biharmonic`); when one case was run with several configurations (settings other than the seed), each
gets its own row, labelled with the settings that differ, and a warning says so. Only the loaders touch
MLflow, through `strbench.tracking` (imported lazily: this module never imports mlflow).

Default experiments: Table 1 `table1_places2`, falling back to `quickstart` when that has no runs (the
quickstart has Table 1's shape: methods x mask bins); Table 2 `ablation_resampling`; Table 3
`table3_celeba`; Fig. 8 `structure_variants`; the frontier `nfe_frontier`, falling back to `quickstart`.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from strbench import atomic
from strbench.errors import StrbenchError
from strbench.latex import LatexBlock, fit_latex, latex_escape  # noqa: F401  (part of this module's API)
from strbench.selection import SPLIT_TAGS, Selection, SelectionError, empty_selection, row_labels, select_runs  # noqa: F401
from strbench.selection import mixed_configurations as _mixed
from strbench.selection import as_str as _str
from strbench.selection import column as _col

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
REFERENCE_PATH = Path(__file__).resolve().parents[1] / "reports" / "paper_reference.yaml"
TAG = "tags.strbench."
MET = "metrics."
PAR = "params."
MISSING = "–"  # not reported by the paper / not run here
NA = "n/a"  # measured but not computable (footnote says why)


@dataclass(frozen=True)
class MetricSpec:
    key: str
    name: str
    higher_is_better: bool
    digits: int


METRICS = (MetricSpec("psnr", "PSNR", True, 2), MetricSpec("ssim", "SSIM", True, 3),
           MetricSpec("fid", "FID", False, 2))


@dataclass(frozen=True)
class TableSpec:
    number: int
    experiment: str
    axis: str  # run tag whose values are the column groups: mask_bin or mask_set
    run_hint: str  # the command that makes the runs
    fallbacks: tuple[str, ...] = ()


TABLES: dict[int, TableSpec] = {
    1: TableSpec(1, "table1_places2", "mask_bin", "strbench run experiments/table1_places2.yaml",
                 fallbacks=("quickstart",)),
    2: TableSpec(2, "ablation_resampling", "mask_set", "strbench run experiments/ablation_resampling.yaml"),
    3: TableSpec(3, "table3_celeba", "mask_bin", "strbench run experiments/table3_celeba.yaml"),
}
FIGURE8_EXPERIMENT = "structure_variants"
FIGURE8_HINT = "strbench run experiments/structure_variants.yaml --profile cpu"
FRONTIER_EXPERIMENT = "nfe_frontier"
FRONTIER_FALLBACKS = ("quickstart",)
FRONTIER_HINT = "strbench run experiments/nfe_frontier.yaml"
CASE_ORDER = ("IR-SDE", "RePaint*", "StrDiffusion", "A", "B", "C", "D")
VARIANT_ORDER = ("gray2gray", "edge2edge", "edge2gray", "gray2edge")
DATASET_NAMES = {"builtin": "built-in", "psv": "Paris StreetView", "places2": "Places2", "celeba": "CelebA",
                 "folder": "image folder"}


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


# ----------------------------------------------------------------------------------------------- helpers
def load_reference(path: str | os.PathLike | None = None) -> dict:
    """The paper's numbers (reports/paper_reference.yaml), keyed by table number."""
    import yaml

    p = Path(path) if path is not None else REFERENCE_PATH
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise StrbenchError(f"paper reference {p} unreadable ({e.strerror})") from None
    return {int(k): v for k, v in data["tables"].items()}


def _num(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _bin_key(label: str) -> tuple:
    try:
        lo, hi = label.rstrip("%").split("-")
        return (0, float(lo), float(hi), label)
    except ValueError:
        return (1, 0.0, 0.0, label)


def _other_key(label: str) -> tuple:
    """Sort key of a column that is not one of the paper's: "10-20%", or "<mask set> 10-20%" (see _axis_values)."""
    head, _, tail = label.rpartition(" ")
    return (head, *_bin_key(tail)) if head else ("", *_bin_key(label))


def _column_order(values: Sequence[str], axis: str, paper_columns: Sequence[str]) -> list[str]:
    vals = list(dict.fromkeys(values))
    if axis == "mask_bin":
        return sorted(vals, key=_bin_key)
    first = [c for c in paper_columns if c in vals]
    return first + sorted((v for v in vals if v not in first), key=_other_key)


def _case_key(label: str) -> tuple:
    base = label.split(" [")[0]
    return (CASE_ORDER.index(base) if base in CASE_ORDER else len(CASE_ORDER), label)


TABLE_COLUMNS = {"mask_set": ["hard", "easy"]}  # the paper's order of Table 2's columns


def _axis_values(runs: pd.DataFrame, axis: str) -> pd.Series:
    """The table column of each run: its tag `axis` (mask_bin or mask_set). On the mask_set axis (Table 2), a run
    whose mask set is not one of the paper's (hard, easy) goes to its hole-ratio bin's column ("10-20%"; "<set>
    10-20%" when several such sets), never pooled with the set's other bins (other_mask_sets says so)."""
    vals = _col(runs, TAG + axis).fillna(_col(runs, TAG + "mask_set")).fillna("all").astype(str)
    paper = TABLE_COLUMNS.get(axis)
    if not paper or runs.empty:
        return vals
    bins = _col(runs, TAG + "mask_bin").map(_str)
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
    sets = _col(runs, TAG + "mask_set").map(_str)
    bins = _col(runs, TAG + "mask_bin").map(_str)
    return sorted({x or "(untagged)" for x in sets[~sets.isin(paper) & (bins != "")]})


def _row_labels(runs: pd.DataFrame, axis: str = "mask_bin") -> pd.Series:
    """Row label per run (selection.row_labels over the table's columns)."""
    return row_labels(runs, _axis_values(runs, axis))


def mixed_configurations(runs: pd.DataFrame, axis: str, what: str = "") -> list[str]:
    """Warnings for table cells holding runs of more than one configuration (selection.mixed_configurations)."""
    return _mixed(runs, _axis_values(runs, axis), what)


def _logged_ci(run: pd.Series, metric: str) -> tuple[float, float] | None:
    lo, hi = _num(run.get(f"{MET}{metric}_ci_low")), _num(run.get(f"{MET}{metric}_ci_high"))
    return None if lo is None or hi is None else (lo, hi)


def _ci(runs: pd.DataFrame, metric: str, per_image: dict[str, pd.DataFrame], n_boot: int, seed: int
        ) -> tuple[float, float] | None:
    """A single run's own logged interval; several runs (seeds): bootstrap over their pooled per-image values."""
    from strbench.metrics import bootstrap_ci

    if len(runs) == 1 and _logged_ci(runs.iloc[0], metric) is not None:
        return _logged_ci(runs.iloc[0], metric)
    frames = [per_image.get(r) for r in runs["run_id"]]
    if frames and all(f is not None and metric in f.columns for f in frames):
        return bootstrap_ci(pd.concat([f[metric] for f in frames]).to_numpy(), n=n_boot, seed=seed)
    return None


def _cell_keys(runs: pd.DataFrame, axis: str) -> pd.Series:
    """(row label, column) of each run, as build_table groups them."""
    return _row_labels(runs, axis) + "\x00" + _axis_values(runs, axis)


def _mean(values: pd.Series) -> float | None:
    v = [x for x in (_num(a) for a in values) if x is not None]
    return float(np.mean(v)) if v else None


def _missing_reason(runs: pd.DataFrame, metric: str) -> str:
    reasons = [str(r) for r in _col(runs, f"{TAG}{metric}_missing").dropna().unique()]
    if metric != "fid" and not reasons:
        reasons = [str(r) for r in _col(runs, TAG + "fid_missing").dropna().unique()]
    return "; ".join(reasons) if reasons else f"no `{metric}` metric was logged for these runs"


def describe_data(runs: pd.DataFrame, axis: str = "mask_bin") -> str:
    """The data the measured rows used, from the runs' tags/metrics: e.g. "built-in 32 px, 16 test images per
    bin". Never a dataset the runs did not use."""
    if runs.empty:
        return "no runs"
    names = []
    for d, s in sorted({(_str(a), _str(b)) for a, b in zip(_col(runs, TAG + "dataset"), _col(runs, TAG + "size"))}):
        name = DATASET_NAMES.get(d, d or "unknown dataset")
        names.append(f"{name} {s} px" if s else name)
    n = sorted({int(v) for v in (_num(x) for x in _col(runs, MET + "n_images")) if v is not None})
    unit = "bin" if axis == "mask_bin" else "mask set"
    imgs = (f", {n[0]} test images per {unit}" if len(n) == 1 else
            f", {n[0]}-{n[-1]} test images per {unit}" if n else "")
    src = sorted({_str(x) for x in _col(runs, PAR + "mask.source") if _str(x)})
    masks = {"generator": "generated masks", "folder": "masks from a folder"}
    msk = f", {', '.join(masks.get(s, s + ' masks') for s in src)}" if src else ""
    return " + ".join(names) + imgs + msk


# ----------------------------------------------------------------------------------------------- builder
def _caption(ref: dict, runs: pd.DataFrame, axis: str) -> str:
    subject = ref.get("subject") or ref["caption"]
    paper = ref.get("dataset", "")
    masks = ref.get("masks_short") or ""
    return (f"{subject}. Measured rows: {describe_data(runs, axis)}; the paper's rows: {paper}"
            + (f", {masks}" if masks else ""))


def build_table(runs: pd.DataFrame, number: int, reference: dict | None = None, *,
                per_image: dict[str, pd.DataFrame] | None = None, experiment: str = "",
                notes: Sequence[str] = (), n_boot: int = 1000, seed: int = 0) -> ReportTable:
    """Pivot finished cell runs into the paper's layout of table `number`, with the paper's rows first and every
    measured case after (unknown cases after the paper's)."""
    if number not in TABLES:
        raise StrbenchError(f"unknown table {number}; choose one of {sorted(TABLES)}")
    spec, ref = TABLES[number], (reference if reference is not None else load_reference())[number]
    per_image = per_image or {}
    runs = runs[_col(runs, "status").fillna("FINISHED") == "FINISHED"].copy()
    runs["_row"] = _row_labels(runs, spec.axis)
    runs["_col"] = _axis_values(runs, spec.axis)
    others = other_mask_sets(runs, spec.axis)  # Table 2 runs without hard/easy mask sets: shown by bin
    by_bin = bool(others) and not runs["_col"].isin(ref["columns"]).any()
    data_axis = "mask_bin" if by_bin else spec.axis  # what "test images per ..." counts in the caption
    columns = _column_order(runs["_col"].tolist(), spec.axis, ref["columns"])
    if spec.axis in TABLE_COLUMNS:  # the paper's few named columns always show, so its rows keep their numbers
        columns = list(ref["columns"]) + [c for c in columns if c not in ref["columns"]]

    rows: list[Row] = []
    for r in ref["rows"]:
        values = {}
        for m in METRICS:
            for c in columns:
                values[(m.key, c)] = _num(r[m.key][ref["columns"].index(c)]) if c in ref["columns"] else None
        rows.append(Row(f"{r['method']} (paper)", r.get("venue") or "", "paper", values, name=r["method"]))

    footnotes: list[str] = []
    details = []
    for label in sorted(runs["_row"].unique(), key=_case_key):
        mine = runs[runs["_row"] == label]
        row = Row(f"{label} (measured)", "strbench", "measured", {},
                  nfe=_mean(_col(mine, MET + "nfe_per_image")), sec=_mean(_col(mine, MET + "sec_per_image")),
                  name=label)
        for c in columns:
            cell = mine[mine["_col"] == c]
            d = {"method": label, "column": c, "runs": len(cell),
                 "images": int(sum(_num(x) or 0 for x in _col(cell, MET + "n_images"))),
                 "mask_set": ", ".join(sorted(set(_col(cell, TAG + "mask_set").map(_str)) - {""})),
                 "mask_bin": ", ".join(sorted(set(_col(cell, TAG + "mask_bin").map(_str)) - {""}, key=_bin_key))}
            for m in METRICS:
                col = _col(cell, MET + m.key)
                complete = len(cell) > 0 and all(_num(x) is not None for x in col)
                value = _mean(col) if complete else None
                row.values[(m.key, c)] = value
                if len(cell) > 0 and value is None:
                    why = f"{m.name} n/a: {_missing_reason(cell, m.key)}"
                    if why not in footnotes:
                        footnotes.append(why)
                    row.footnotes[(m.key, c)] = footnotes.index(why) + 1
                d[m.key] = value
                if m.key in ("psnr", "ssim"):
                    d[f"{m.key}_ci"] = _ci(cell, m.key, per_image, n_boot, seed) if len(cell) else None
            d["kid"] = _mean(_col(cell, MET + "kid")) if len(cell) else None
            d["nfe_per_image"] = _mean(_col(cell, MET + "nfe_per_image"))
            d["sec_per_image"] = _mean(_col(cell, MET + "sec_per_image"))
            if len(cell):
                details.append(d)
        rows.append(row)

    all_notes = [f"Measured rows: MLflow experiment `{experiment or spec.experiment}`, {describe_data(runs, data_axis)}; "
                 "each value is the mean over its runs (seeds). The paper's rows are typed from the paper "
                 "(reports/paper_reference.yaml).",
                 f"Dash ({MISSING}): not reported by the paper, or not run here. NFE/img and s/img: network evaluations and "
                 "seconds per image (not in the paper)."]
    measured_cols = set(runs["_col"])
    if spec.axis == "mask_set" and (TAG + "mask_bin") in runs.columns:
        sets = [f"{c} = {', '.join(sorted(runs.loc[runs['_col'] == c, TAG + 'mask_bin'].dropna().astype(str).unique(), key=_bin_key))}"
                for c in ref["columns"] if c in measured_cols]
        if sets:
            all_notes.append(f"Hole-ratio bins of the mask sets (the paper does not define them): {'; '.join(sets)}.")
    missing_cols = [c for c in ref["columns"] if c not in measured_cols]
    if not runs.empty and not any(c in ref["columns"] for c in measured_cols) and not others:
        all_notes.append(f"None of the measured columns is one of the paper's ({', '.join(ref['columns'])}).")
    elif missing_cols and not runs.empty:
        all_notes.append(f"Paper columns not measured here: {', '.join(missing_cols)}.")
    all_notes += list(notes)
    detail_df = pd.DataFrame(details, columns=["method", "column", "mask_set", "mask_bin", "runs", "images", "psnr",
                                               "psnr_ci", "ssim", "ssim_ci", "fid", "kid", "nfe_per_image",
                                               "sec_per_image"])
    warnings = mixed_configurations(runs, spec.axis, f"Table {number}: ")
    if others:
        warnings.insert(0, mask_sets_warning(number, experiment or spec.experiment, others,
                                             [c for c in columns if c not in ref["columns"]], ref["columns"]))
    return ReportTable(number, _caption(ref, runs, data_axis), experiment or spec.experiment, columns, rows,
                       footnotes, all_notes, detail_df, warnings, spec.axis, describe_data(runs, data_axis))


MASK_SETS_EXAMPLE = "experiments/ablation_resampling.yaml"  # an experiment with Table 2's hard/easy mask sets


def mask_sets_warning(number: int, experiment: str, others: Sequence[str], bin_columns: Sequence[str],
                      paper_columns: Sequence[str]) -> str:
    """Why some measured values of a mask-set table sit under hole-ratio bins instead of the paper's columns."""
    names = ", ".join(f"`{s}`" for s in others)
    want = " and ".join(f"`{c}`" for c in paper_columns)
    return (f"Table {number} compares the mask sets {want}; experiment `{experiment}` has runs of mask set(s) "
            f"{names}, shown by hole-ratio bin ({', '.join(bin_columns)}), which the paper does not report. For "
            f"the paper's columns define `masks.sets` with `hard` and `easy` in the experiment YAML, as "
            f"{MASK_SETS_EXAMPLE} does (`{TABLES[number].run_hint}`).")


# ----------------------------------------------------------------------------------------------- formatting
def _fmt(v: float | None, digits: int) -> str:
    return MISSING if v is None else f"{v:.{digits}f}"


def _fmt_g(v: float | None) -> str:
    if v is None:
        return MISSING
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.3g}"


def _fmt_ci(ci: tuple[float, float] | None, digits: int) -> str:
    if ci is None or any(math.isnan(x) for x in ci):
        return MISSING
    return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _best(rt: ReportTable) -> dict[tuple[str, str], float]:
    """Best measured value per metric column (max PSNR/SSIM, min FID)."""
    out = {}
    for m in METRICS:
        for c in rt.columns:
            vals = [r.values[(m.key, c)] for r in rt.rows if r.source == "measured" and r.values.get((m.key, c)) is not None]
            if vals:
                out[(m.key, c)] = max(vals) if m.higher_is_better else min(vals)
    return out


def _cell_text(row: Row, m: MetricSpec, c: str, mark: Callable[[str, int], str]) -> tuple[str, bool]:
    v = row.values.get((m.key, c))
    if (m.key, c) in row.footnotes:
        return mark(NA, row.footnotes[(m.key, c)]), False
    return _fmt(v, m.digits), v is not None


def _is_best(rt: ReportTable, best: dict, r: Row, m: MetricSpec, c: str) -> bool:
    return (r.source == "measured" and (m.key, c) not in r.footnotes and r.values.get((m.key, c)) is not None
            and best.get((m.key, c)) == r.values.get((m.key, c)))


def _header(m: MetricSpec, arrow_up: str, arrow_down: str) -> str:
    return f"{m.name}{arrow_up if m.higher_is_better else arrow_down}"


def _details_rows(rt: ReportTable) -> list[list[str]]:
    out = []
    for d in rt.details.itertuples(index=False):
        out.append([d.method, d.column, str(d.runs), str(d.images), _fmt(_num(d.psnr), 2), _fmt_ci(d.psnr_ci, 2),
                    _fmt(_num(d.ssim), 3), _fmt_ci(d.ssim_ci, 3), _fmt(_num(d.fid), 2) if _num(d.fid) is not None else NA,
                    _fmt(_num(d.kid), 4), _fmt_g(_num(d.nfe_per_image)),
                    _fmt_g(_num(d.sec_per_image))])
    return out


DETAIL_HEADERS = ["Method", "Mask", "runs", "images", "PSNR", "PSNR 95% CI", "SSIM", "SSIM 95% CI", "FID", "KID",
                  "NFE/img", "s/img"]


def main_rows(rt: ReportTable, mark: Callable[[str, int], str], bold: Callable[[str], str]) -> list[list[str]]:
    """The main table's cells as text: label, venue, metric x column values, NFE/img, s/img."""
    best = _best(rt)
    body = []
    for r in rt.rows:
        cells = [r.label, r.venue]
        for m in METRICS:
            for c in rt.columns:
                text, _ = _cell_text(r, m, c, mark)
                cells.append(bold(text) if _is_best(rt, best, r, m, c) else text)
        cells += [_fmt_g(r.nfe), _fmt_g(r.sec)] if r.source == "measured" else [MISSING, MISSING]
        body.append(cells)
    return body


def to_markdown(rt: ReportTable) -> str:
    from tabulate import tabulate

    headers = ["Method", "Venue"] + [f"{_header(m, '↑', '↓')} {c}" for m in METRICS for c in rt.columns] \
        + ["NFE/img", "s/img"]
    body = main_rows(rt, lambda s, k: f"{s} [{k}]", lambda s: f"**{s}**")
    align = ["left", "left"] + ["right"] * (len(headers) - 2)
    lines = [f"**Table {rt.number}.** {rt.caption}. Best measured value in bold.", "",
             tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True, colalign=align), ""]
    lines += [f"[{i}] {f}" for i, f in enumerate(rt.footnotes, 1)]
    lines += [f"- {n}" for n in rt.notes]
    lines += [f"- **Warning:** {w}" for w in rt.warnings]
    if len(rt.details):
        lines += ["", f"**Table {rt.number} (measured cells).** 95% bootstrap intervals of the mean over images.", "",
                  tabulate(_details_rows(rt), headers=DETAIL_HEADERS, tablefmt="pipe", disable_numparse=True,
                           colalign=["left", "left"] + ["right"] * (len(DETAIL_HEADERS) - 2))]
        lines += ["", f"Paired comparisons of the measured rows: `strbench report --table {rt.number} --paired`."]
    return "\n".join(lines) + "\n"


def _main_block(rt: ReportTable) -> LatexBlock:
    best = _best(rt)
    paper = [r for r in rt.rows if r.source == "paper"]
    measured = [r for r in rt.rows if r.source == "measured"]
    keys = [[latex_escape(r.name or r.label), latex_escape(r.venue or "paper")] for r in paper + measured]
    groups, cells = [], []
    pct = bool(rt.columns) and all(c.endswith("%") for c in rt.columns)  # "10-20" under "PSNR (hole %)": narrower
    subs = [latex_escape(c[:-1] if pct else c) for c in rt.columns]
    for m in METRICS:
        groups.append((latex_escape(m.name) + (r" $\uparrow$" if m.higher_is_better else r" $\downarrow$")
                       + (r" (hole \%)" if pct else ""), subs))
        part = []
        for r in paper + measured:
            row = []
            for c in rt.columns:
                text, _ = _cell_text(r, m, c, lambda s, k: f"{s}$^{{{k}}}$")
                text = "--" if text == MISSING else (rf"\textbf{{{text}}}" if _is_best(rt, best, r, m, c) else text)
                row.append(text)
            part.append(row)
        cells.append(part)
    groups.append(("", ["NFE/img", "s/img"]))
    cells.append([[_fmt_g(r.nfe).replace(MISSING, "--"), _fmt_g(r.sec).replace(MISSING, "--")]
                  if r.source == "measured" else ["--", "--"] for r in paper + measured])
    return LatexBlock(["Method", "Venue"], groups, keys, cells, rule_after=len(paper) if paper and measured else None)


def _details_block(rt: ReportTable) -> LatexBlock:
    rows = _details_rows(rt)
    esc = [[latex_escape(x) for x in r] for r in rows]
    return LatexBlock(["Method", "Mask"], [("", [latex_escape(h) for h in DETAIL_HEADERS[4:8]]),
                                           ("", [latex_escape(h) for h in DETAIL_HEADERS[2:4] + DETAIL_HEADERS[8:]])],
                      [r[:2] for r in esc], [[r[4:8] for r in esc], [r[2:4] + r[8:] for r in esc]])


def to_latex(rt: ReportTable) -> str:
    notes = [rf"$^{{{i}}}$ {latex_escape(f)}" for i, f in enumerate(rt.footnotes, 1)] \
        + [latex_escape(n) for n in rt.notes] + [latex_escape("Warning: " + w) for w in rt.warnings]
    main = _main_block(rt)
    out = fit_latex(main, f"{latex_escape(rt.caption)}. Rows above the rule: the paper's; below (venue strbench): "
                          f"measured here, best value in bold.", f"tab:strbench-table{rt.number}", notes,
                    optional=[len(main.groups) - 1],
                    optional_note=f"NFE/img and s/img: in Table~\\ref{{tab:strbench-table{rt.number}-cells}}.")
    if len(rt.details):
        out += fit_latex(_details_block(rt), rf"Table {rt.number}, measured cells: 95\% bootstrap intervals of the "
                                             rf"mean over images ({latex_escape(rt.data)}).",
                         f"tab:strbench-table{rt.number}-cells")
    return "\n\n".join(out) + "\n"


def table_frame(rt: ReportTable) -> pd.DataFrame:
    """The main table as numbers: one row per method (paper and measured), columns `psnr 10-20%` ..."""
    recs = []
    for r in rt.rows:
        rec = {"method": r.label, "venue": r.venue, "source": r.source}
        for m in METRICS:
            for c in rt.columns:
                rec[f"{m.key} {c}"] = r.values.get((m.key, c))
        rec["nfe_per_image"], rec["sec_per_image"] = r.nfe, r.sec
        recs.append(rec)
    return pd.DataFrame(recs)


def details_frame(rt: ReportTable) -> pd.DataFrame:
    d = rt.details.copy()
    for m in ("psnr", "ssim"):
        d[f"{m}_ci_low"] = [None if ci is None else ci[0] for ci in d[f"{m}_ci"]]
        d[f"{m}_ci_high"] = [None if ci is None else ci[1] for ci in d[f"{m}_ci"]]
        d = d.drop(columns=f"{m}_ci")
    return d


TIDY_COLUMNS = ["table", "experiment", "method", "source", "mask_set", "mask_bin", "metric", "value", "ci_low",
                "ci_high", "n", "runs"]


def tidy_frame(rt: ReportTable) -> pd.DataFrame:
    """One long table: a row per (method, source, column, metric), with the interval and the number of images
    (n) where measured. mask_set / mask_bin carry the table's column (the other from the runs' tags)."""
    recs = []
    axis_set = rt.axis == "mask_set"
    for r in rt.rows:
        if r.source != "paper":
            continue
        for m in METRICS:
            for c in rt.columns:
                v = r.values.get((m.key, c))
                if v is not None:
                    recs.append({"table": rt.number, "experiment": "paper", "method": r.name, "source": "paper",
                                 "mask_set": c if axis_set else "", "mask_bin": "" if axis_set else c,
                                 "metric": m.key, "value": v})
    for d in rt.details.itertuples(index=False):  # on the mask-set axis a column may be a bin (_axis_values)
        base = {"table": rt.number, "experiment": rt.experiment, "method": d.method, "source": "measured",
                "mask_set": (d.mask_set or d.column) if axis_set else d.mask_set,
                "mask_bin": d.mask_bin if axis_set else d.column, "n": d.images, "runs": d.runs}
        for key in ("psnr", "ssim", "fid", "kid", "nfe_per_image", "sec_per_image"):
            v = _num(getattr(d, key))
            rec = {**base, "metric": key, "value": v}
            ci = getattr(d, f"{key}_ci", None)
            if ci is not None:
                rec["ci_low"], rec["ci_high"] = ci
            recs.append(rec)
    df = pd.DataFrame(recs, columns=TIDY_COLUMNS)
    df["n"] = df["n"].astype("Int64")
    df["runs"] = df["runs"].astype("Int64")
    return df


CSV_FLOAT = "%.6g"


def to_csv(rt: ReportTable) -> str:
    """One tidy long table (see tidy_frame): `pandas.read_csv` reads it back as one frame."""
    return tidy_frame(rt).to_csv(index=False, lineterminator="\n", float_format=CSV_FLOAT)


RENDERERS: dict[str, tuple[Callable[[ReportTable], str], str]] = {
    "markdown": (to_markdown, "md"), "latex": (to_latex, "tex"), "csv": (to_csv, "csv")}


# ----------------------------------------------------------------------------------------------- paired


def paired_for_table(rt_runs: pd.DataFrame, per_image: dict[str, pd.DataFrame], axis: str, *,
                     n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Paired comparisons (strbench.paired.paired_table) of the measured rows of a table's runs."""
    from strbench import paired

    runs = rt_runs[_col(rt_runs, "status").fillna("FINISHED") == "FINISHED"].copy()
    if runs.empty:
        return pd.DataFrame(columns=paired.PAIR_COLUMNS)
    runs["_row"] = _row_labels(runs, axis)
    runs["_col"] = _axis_values(runs, axis)
    long = paired.per_image_long(per_image, runs)
    order = sorted(runs["_row"].unique(), key=_case_key)
    if long.empty:
        return pd.DataFrame(columns=paired.PAIR_COLUMNS)
    cols = _column_order(long["column"].tolist(), axis, TABLE_COLUMNS.get(axis, []))
    return paired.paired_table(long, order, columns=cols, n_resamples=n_resamples, seed=seed)


def _fmt_p(p) -> str:
    p = _num(p)
    return NA if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


PAIRED_HEADERS = ["A", "B", "Mask", "metric", "n", "mean A", "mean B", "A − B", "95% CI", "Wilcoxon p", "note"]


def paired_rows(pairs: pd.DataFrame) -> list[list[str]]:
    out = []
    for r in pairs.itertuples(index=False):
        d = 2 if r.metric == "psnr" else 4
        ci = NA if _num(r.ci_low) is None else f"[{r.ci_low:+.{d}f}, {r.ci_high:+.{d}f}]"
        out.append([r.a, r.b, str(r.column), r.metric.upper(), str(r.n), _fmt(_num(r.mean_a), d), _fmt(_num(r.mean_b), d),
                    NA if _num(r.diff) is None else f"{r.diff:+.{d}f}", ci, _fmt_p(r.p_wilcoxon), r.note or ""])
    return out


def paired_notes(n_resamples: int) -> list[str]:
    return [f"A − B: mean over image-mask pairs (same mask set and bin, same image id; several seeds of one row "
            f"are averaged per pair first) of the per-image difference (per_image.csv). 95% CI: bootstrap over "
            f"the pairs (scipy.stats.bootstrap, BCa, {n_resamples} resamples, seed 0). p: two-sided Wilcoxon "
            "signed-rank test (scipy.stats.wilcoxon, zero differences dropped); not corrected for multiple "
            "comparisons. Mask `all`: pooled over the columns both rows have."]


def paired_markdown(pairs: pd.DataFrame, title: str, notes: Sequence[str]) -> str:
    from tabulate import tabulate

    if pairs.empty:
        return f"**{title}**\n\nNo pairs: the rows need per_image.csv artifacts with image ids, on common cells.\n"
    body = tabulate(paired_rows(pairs), headers=PAIRED_HEADERS, tablefmt="pipe", disable_numparse=True,
                    colalign=["left"] * 4 + ["right"] * 6 + ["left"])
    return "\n".join([f"**{title}**", "", body, ""] + [f"- {n}" for n in notes]) + "\n"


def paired_latex(pairs: pd.DataFrame, title: str, notes: Sequence[str], label: str) -> str:
    """One table per metric (columns A, B, mask, n, A - B, interval, p), each sized by fit_latex."""
    out = []
    metrics = list(dict.fromkeys(pairs["metric"])) if len(pairs) else []
    for k, metric in enumerate(metrics):
        rows = [[latex_escape(x) for x in r] for r in paired_rows(pairs[pairs["metric"] == metric])]
        heads = [latex_escape(h) for h in PAIRED_HEADERS]
        keep = [4, 7, 8, 9]  # n, A - B, 95% CI, p
        b = LatexBlock(heads[:3], [("", [heads[i] for i in keep])], [r[:3] for r in rows],
                       [[[r[i] for i in keep] for r in rows]])
        out += fit_latex(b, f"{latex_escape(title)} {metric.upper()}.", f"{label}-{metric}",
                         [latex_escape(n) for n in notes] if k == len(metrics) - 1 else ())
    return "\n\n".join(out) + "\n" if out else "% no paired comparisons: no per_image.csv on common cells\n"


PAIRED_CSV_COLUMNS = ["table", "experiment", "a", "b", "mask", "metric", "n", "mean_a", "mean_b", "diff", "ci_low",
                      "ci_high", "p_wilcoxon", "note"]


def paired_csv(pairs: pd.DataFrame, number: int, experiment: str) -> str:
    df = pairs.rename(columns={"column": "mask"}).assign(table=number, experiment=experiment)
    return df.reindex(columns=PAIRED_CSV_COLUMNS).to_csv(index=False, lineterminator="\n", float_format=CSV_FLOAT)


# ----------------------------------------------------------------------------------------------- figures
def figure8(kl: pd.DataFrame, *, seed: int = 0):
    """Seaborn line plot of KL against the reverse-process step per structure variant, masked and unmasked
    panels (columns variant, step, region, kl; several runs per variant give a 95% band)."""
    import seaborn as sns
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    need = {"variant", "step", "region", "kl"}
    if not need <= set(kl.columns):
        raise StrbenchError(f"KL trajectories need columns {sorted(need)}; got {sorted(kl.columns)}")
    present = list(dict.fromkeys(kl["variant"].astype(str)))
    order = [v for v in VARIANT_ORDER if v in present] + sorted(v for v in present if v not in VARIANT_ORDER)
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=False)
    several = kl.groupby(["variant", "region", "step"]).size().max() > 1
    for ax, region in zip(axes, ("masked", "unmasked")):
        part = kl[kl["region"] == region]
        if len(part):
            sns.lineplot(data=part, x="step", y="kl", hue="variant", hue_order=order, ax=ax,
                         errorbar=("ci", 95) if several else None, n_boot=200, seed=seed)
        ax.set_title(f"{region} region")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("reverse-process step")
        ax.set_ylabel("KL(state || ground truth)")
    fig.suptitle("Fig. 8: KL divergence to the ground truth along the reverse process")
    return fig


METHOD_NAMES = {"irsde": "IR-SDE", "repaint": "RePaint*", "strdiffusion": "StrDiffusion"}


def frontier_frame(runs: pd.DataFrame, axis: str = "mask_bin") -> tuple[pd.DataFrame, list[str]]:
    """One point per (case, setting) = report row: NFE per image, PSNR (and FID where logged), each the mean
    over the columns (bins) that every point has (so the points compare like with like). Returns (points,
    notes). Columns: label, family (method, with the ablation for StrDiffusion), nfe, psnr, fid, columns."""
    cols_out = ["label", "family", "nfe", "psnr", "fid", "columns"]
    runs = runs[_col(runs, "status").fillna("FINISHED") == "FINISHED"].copy()
    if runs.empty:
        return pd.DataFrame(columns=cols_out), []
    runs["_row"] = _row_labels(runs, axis)
    runs["_col"] = _axis_values(runs, axis)
    have = runs.groupby("_row")["_col"].agg(lambda s: set(s))
    common = set.intersection(*have.tolist())
    notes = []
    if common:
        left = sorted(set.union(*have.tolist()) - common, key=_bin_key)
        if left:
            notes.append(f"Columns not run for every point are left out: {', '.join(left)}.")
    else:
        notes.append("No column was run for every point: each point averages its own columns.")
    recs = []
    for label in sorted(have.index, key=_case_key):
        mine = runs[runs["_row"] == label]
        use = sorted(common or have[label], key=_bin_key)
        mine = mine[mine["_col"].isin(use)]
        per_col = mine.groupby("_col")
        method = _str(mine[TAG + "method"].iloc[0]) if TAG + "method" in mine else ""
        family = METHOD_NAMES.get(method, method or label.split(" [")[0])
        abl = _str(mine[TAG + "ablation"].iloc[0]) if TAG + "ablation" in mine else ""
        if method == "strdiffusion" and abl and abl != "D":
            family += f" ({abl})"
        fid = [_mean(_col(g, MET + "fid")) for _, g in per_col]
        recs.append({"label": label, "family": family, "nfe": _mean(_col(mine, MET + "nfe_per_image")),
                     "psnr": float(np.mean([_mean(_col(g, MET + "psnr")) for _, g in per_col])),
                     "fid": float(np.mean(fid)) if fid and all(f is not None for f in fid) else None,
                     "columns": ", ".join(use)})
    return pd.DataFrame(recs, columns=cols_out), notes


def figure_frontier(points: pd.DataFrame, *, title_columns: str = ""):
    """PSNR (and FID where every point has it) against NFE per image: one marker per (case, setting), a line
    per method family through its settings in NFE order."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    pts = points[points["nfe"].notna()]
    if pts.empty:
        raise StrbenchError("no run logged `nfe_per_image`: nothing to plot against compute")
    with_fid = pts["fid"].notna().all()
    fig = Figure(figsize=(11 if with_fid else 6, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if with_fid else 1, squeeze=False)[0]
    positive = pts.loc[pts["nfe"] > 0, "nfe"]
    spread = positive.max() / positive.min() if len(positive) else 1.0
    for ax, metric, name in zip(axes, ("psnr", "fid"), ("PSNR (dB) ↑", "FID ↓")):
        for family, g in pts.groupby("family", sort=False):
            g = g.sort_values("nfe")
            ax.plot(g["nfe"], g[metric], marker="o", label=family)
            for r in g.itertuples():
                text = _point_text(r.label, family)
                if text:
                    ax.annotate(text, (r.nfe, getattr(r, metric)), textcoords="offset points", xytext=(4, 4),
                                fontsize=7)
        if spread > 20:  # budgets over decades (e.g. the paper's T = 100 settings): log, linear near an NFE of 0
            if len(positive) == len(pts):
                ax.set_xscale("log")
            else:
                ax.set_xscale("symlog", linthresh=float(positive.min()))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("network evaluations per image (NFE)")
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    cols = f" (mean over {title_columns})" if title_columns else ""
    fig.suptitle(f"Quality against compute{cols}")
    return fig


def _point_text(label: str, family: str) -> str:
    """What sets a point apart within its line: the setting ('u3', 'jump_n_sample=2'); '' for a lone case."""
    if " [" in label:
        return label.split(" [", 1)[1].rstrip("]")
    base = family.split(" (")[0]
    return label[len(base):].strip() if label.startswith(base) else label


def load_kl_trajectories(tracking_uri: str, experiment: str, **select) -> pd.DataFrame:
    """The KL trajectories (kl_trajectory.csv) of the experiment's structure-variant runs: Fig. 8 compares the
    variants, so runs of methods without a structure (variant `none`: IR-SDE, the floor methods, whose
    "trajectory" may be a single step) are left out of the figure and of its claims."""
    sel = load_selection(tracking_uri, experiment, **select)
    runs = sel.runs
    if not runs.empty and TAG + "variant" in runs.columns:
        runs = runs[runs[TAG + "variant"].map(_str) != "none"]
    if runs.empty:
        raise StrbenchError(f"no finished cell runs in MLflow experiment '{experiment}' at {tracking_uri}; make "
                            f"them with `{FIGURE8_HINT}`")
    tracking = _tracking()
    frames = []
    for _, run in runs.iterrows():
        try:
            df = tracking.read_csv_artifact(tracking_uri, run["run_id"], "kl_trajectory.csv")
        except Exception:  # noqa: BLE001 - a run without trajectories is reported below, not fatal
            continue
        df = df.copy()
        df["variant"] = run.get(TAG + "variant") or "?"
        df["run_id"] = run["run_id"]
        frames.append(df)
    if not frames:
        raise StrbenchError(f"runs of '{experiment}' have no kl_trajectory.csv artifact; run with "
                            f"`metrics.trajectories: true` (as in experiments/structure_variants.yaml)")
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------------------------- I/O
def _tracking():
    from strbench import tracking  # the only module that imports mlflow

    return tracking


def _sqlite_missing(uri: str) -> bool:
    """A local sqlite store that does not exist holds no runs (and searching it would create it)."""
    if not uri.startswith("sqlite:///"):
        return False
    path = uri[len("sqlite:///"):]
    return path not in ("", ":memory:") and not Path(path).exists()


def load_selection(tracking_uri: str, experiment: str, *, run: str | None = None, profile: str | None = None,
                   since=None) -> Selection:
    """The selected cell runs of an experiment (see select_runs); empty when there are none."""
    if _sqlite_missing(tracking_uri):
        return empty_selection(experiment)
    cells, parents = _tracking().search_experiment_runs(tracking_uri, experiment)
    return select_runs(cells, parents, experiment=experiment, run=run, profile=profile, since=since)


def load_runs(tracking_uri: str, experiment: str, **select) -> pd.DataFrame:
    """Selected finished cell runs of an experiment (empty DataFrame when there are none)."""
    return load_selection(tracking_uri, experiment, **select).runs


def load_per_image(tracking_uri: str, runs: pd.DataFrame, axis: str = "mask_bin", *, everything: bool = False
                   ) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """per_image.csv of the runs whose interval must be computed here (runs without a logged interval and
    runs that share a table cell with others: seeds, pooled), or of every run (`everything`, for paired
    comparisons). Returns (frames by run_id, notes)."""
    frames, failed = {}, []
    if runs.empty:
        return frames, []
    runs = runs.reset_index(drop=True)
    keys = _cell_keys(runs, axis)
    shared = keys.map(keys.value_counts()) > 1
    tracking = _tracking()
    for i, run in runs.iterrows():
        if not everything and not shared[i] and _logged_ci(run, "psnr") is not None \
                and _logged_ci(run, "ssim") is not None:
            continue
        try:
            frames[run["run_id"]] = tracking.read_csv_artifact(tracking_uri, run["run_id"], "per_image.csv")
        except Exception:  # noqa: BLE001 - reported as a note: that cell's interval shows as missing
            failed.append(str(run["run_id"]))
    notes = [f"per_image.csv unreadable for {len(failed)} run(s) ({', '.join(f[:8] for f in failed)}): "
             f"their intervals are missing."] if failed else []
    return frames, notes


def _select_first(names: Sequence[str], uri: str, select: dict) -> tuple[Selection | None, list[str]]:
    """The first experiment of `names` with selected runs (notes say when it is not the first)."""
    error = None
    for name in names:
        try:
            sel = load_selection(uri, name, **select)
        except SelectionError as e:
            error = e
            continue
        if not sel.runs.empty:
            notes = [f"No runs in `{names[0]}`: showing experiment `{name}` instead."] if name != names[0] else []
            return sel, notes
    if error is not None:
        raise error
    return None, []


def _runs_for_table(spec: TableSpec, experiment: str | None, uri: str, select: dict | None = None
                    ) -> tuple[Selection, str, list[str]]:
    names = [experiment] if experiment else [spec.experiment, *spec.fallbacks]
    sel, notes = _select_first(names, uri, select or {})
    if sel is not None:
        return sel, sel.experiment, notes
    tried = " nor ".join(f"'{n}'" for n in names)
    hint = f"`{spec.run_hint}`" if experiment is None or experiment == spec.experiment \
        else f"`strbench run experiments/{experiment}.yaml`"
    extra = " (CPU-sized: `strbench run experiments/quickstart.yaml`)" if "quickstart" in names else ""
    narrowed = " matching the selection" if select and any(v is not None for v in select.values()) else ""
    raise StrbenchError(f"no finished cell runs{narrowed} in MLflow experiment {tried} at {uri}; make them with "
                        f"{hint}{extra}, or pick another with --experiment")


def save_figure(fig, out_dir: str | os.PathLike, stem: str) -> list[Path]:
    """Write `stem`.png and `stem`.pdf atomically; returns the paths."""
    import io

    paths = []
    for fmt, kw in (("png", {"dpi": 150}), ("pdf", {})):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, **kw)
        path = Path(out_dir) / f"{stem}.{fmt}"
        atomic.write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths


def _say(lines: Sequence[str]) -> None:
    for ln in lines:
        print(ln, file=sys.stderr)


# ----------------------------------------------------------------------------------------------- assembled
@dataclass
class TableReport:
    """Everything one table's report needs: the selection, the table and (when asked) the paired comparisons."""

    selection: Selection
    table: ReportTable
    per_image: dict[str, pd.DataFrame]
    pairs: pd.DataFrame | None = None


def table_report(number: int, experiment: str | None, uri: str, *, select: dict | None = None,
                 paired: bool = False, n_resamples: int = 2000) -> TableReport:
    spec = TABLES[number]
    sel, _, notes = _runs_for_table(spec, experiment, uri, select)
    per_image, more = load_per_image(uri, sel.runs, spec.axis, everything=paired)
    rt = build_table(sel.runs, number, per_image=per_image, experiment=sel.experiment,
                     notes=notes + more + sel.lines())
    pairs = paired_for_table(sel.runs, per_image, spec.axis, n_resamples=n_resamples) if paired else None
    return TableReport(sel, rt, per_image, pairs)


def frontier_report(experiment: str | None, uri: str, select: dict | None = None
                    ) -> tuple[Selection, pd.DataFrame, list[str]]:
    names = [experiment] if experiment else [FRONTIER_EXPERIMENT, *FRONTIER_FALLBACKS]
    sel, notes = _select_first(names, uri, select or {})
    if sel is None:
        raise StrbenchError(f"no finished cell runs in MLflow experiment {' nor '.join(repr(n) for n in names)} at "
                            f"{uri}; make them with `{FRONTIER_HINT}`")
    points, more = frontier_frame(sel.runs)
    return sel, points, notes + more


def frontier_markdown(points: pd.DataFrame, notes: Sequence[str]) -> str:
    from tabulate import tabulate

    body = [[r.label, r.family, _fmt_g(_num(r.nfe)), _fmt(_num(r.psnr), 2), _fmt(_num(r.fid), 2), r.columns]
            for r in points.itertuples()]
    return "\n".join(["**Quality against compute.** One point per (case, setting); PSNR and FID are means over "
                      "the columns listed.", "",
                      tabulate(body, headers=["Point", "Method", "NFE/img", "PSNR", "FID", "columns"],
                               tablefmt="pipe", disable_numparse=True), ""] + [f"- {n}" for n in notes]) + "\n"


CLAIM_SOURCES = {"table1": 1, "table2": 2}


def claims_report(uri: str, experiment: str | None = None, select: dict | None = None, *,
                  n_resamples: int = 2000, tables: dict[int, TableReport] | None = None
                  ) -> tuple[pd.DataFrame, list[str]]:
    """The paper's claims (strbench.paired.CLAIMS) checked on the runs found. Returns (claims, notes).
    `tables`: table reports already built with paired comparisons (the HTML report passes its own)."""
    from strbench import paired

    out, notes = [], []
    for source, number in CLAIM_SOURCES.items():
        claims = [c for c in paired.CLAIMS if c.source == source]
        spec = TABLES[number]  # the hint names the experiment made for these claims, whatever was read
        hint = spec.run_hint + (" (or, CPU-sized, strbench run experiments/quickstart.yaml)" if number == 1 else "")
        try:
            tr = (tables or {}).get(number)
            if tr is None or tr.pairs is None:
                tr = table_report(number, experiment, uri, select=select, paired=True, n_resamples=n_resamples)
        except StrbenchError as e:  # no runs, or --run/--profile not in this experiment
            name = experiment or " / ".join([spec.experiment, *spec.fallbacks])
            why = str(e) if isinstance(e, SelectionError) else f"no finished cell runs in `{name}`; run `{hint}`"
            out += [paired._missing(c, name, why) for c in claims]
            continue
        rows = [r.name for r in tr.table.rows if r.source == "measured"]
        out += paired.claims_from_pairs(claims, tr.pairs, rows, experiment=tr.selection.experiment, hint=hint)
        notes += [f"Claims from Table {number}: " + tr.selection.lines()[0]] + tr.table.warnings
    claims = [c for c in paired.CLAIMS if c.source == "fig8"]
    name = experiment or FIGURE8_EXPERIMENT
    try:
        kl = load_kl_trajectories(uri, name, **(select or {}))
    except StrbenchError:  # reported as missing runs below
        kl = None
    out += paired.claims_from_kl(claims, kl, experiment=name, hint=FIGURE8_HINT, n_resamples=n_resamples)
    notes += paired_notes(n_resamples) + [
        "Verdict: holds = the paired 95% interval of (better - worse) excludes 0 in the paper's direction; "
        "not shown = it contains 0; reversed = it excludes 0 the other way. Table claims use the comparison "
        "pooled over the table's columns (per column in `detail`). Fig. 8 claims pair the KL curves over the "
        "reverse steps (one trajectory per run, mean over images): how consistently one curve lies below the "
        "other, not a test over images."]
    return pd.DataFrame(out, columns=paired.CLAIM_COLUMNS), notes


def claims_rows(claims: pd.DataFrame) -> list[list[str]]:
    out = []
    for r in claims.itertuples(index=False):
        d = 2 if r.metric == "psnr" else 4
        ci = "" if _num(r.ci_low) is None else f"[{r.ci_low:+.{d}f}, {r.ci_high:+.{d}f}]"
        out.append([r.text, r.experiment, f"{r.better} vs {r.worse}", r.verdict,
                    "" if _num(r.diff) is None else f"{r.diff:+.{d}f}", ci, _fmt_p(r.p_wilcoxon) if r.n else "",
                    str(r.n) if r.n else "", r.detail])
    return out


CLAIM_HEADERS = ["Claim", "experiment", "compared", "verdict", "better − worse", "95% CI", "Wilcoxon p", "n",
                 "detail"]


def claims_markdown(claims: pd.DataFrame, notes: Sequence[str]) -> str:
    from tabulate import tabulate

    return "\n".join(["**The paper's claims, checked on the runs found.**", "",
                      tabulate(claims_rows(claims), headers=CLAIM_HEADERS, tablefmt="pipe", disable_numparse=True),
                      ""] + [f"- {n}" for n in notes]) + "\n"


def claims_latex(claims: pd.DataFrame, notes: Sequence[str]) -> str:
    """The claims as one table (claim, compared, verdict, difference, interval, p), sized by fit_latex."""
    from strbench import paired

    where = {"table1": "Table 1", "table2": "Table 2", "fig8": "Fig. 8"}
    source = {c.key: where[c.source] for c in paired.CLAIMS}
    rows = [[latex_escape(x) for x in (f"{source.get(k, '')} {m.removeprefix('kl_')}", r[2].replace(" vs ", " > "),
                                       r[3], r[4], r[5], r[6])]
            for k, m, r in zip(claims["claim"], claims["metric"], claims_rows(claims))]
    heads = [latex_escape(h) for h in ("Claim", "better > worse", "verdict", "difference", "95% CI", "p")]
    b = LatexBlock(heads[:3], [("", heads[3:])], [r[:3] for r in rows], [[r[3:] for r in rows]])
    return "\n\n".join(fit_latex(b, "The paper's claims, checked on the runs found.", "tab:strbench-claims",
                                  [latex_escape(n) for n in notes])) + "\n"


# ----------------------------------------------------------------------------------------------- command
def report_command(table: int | None, figure: int | str | None, experiment: str | None, tracking_uri: str | None,
                   fmt: str = "markdown", out: str | None = None, *, run: str | None = None,
                   profile: str | None = None, since: str | None = None, paired: bool = False,
                   claims: bool = False) -> int:
    """`strbench report`: print table `table` (its paired comparisons with `paired`), write a figure (8 or
    "frontier"), or check the paper's claims (the HTML report: strbench.report_html.write_report)."""
    uri = tracking_uri or DEFAULT_TRACKING_URI
    if fmt not in RENDERERS:
        raise StrbenchError(f"unknown report format {fmt!r}; choose one of {sorted(RENDERERS)}")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no download bars in the report
    select = {"run": run, "profile": profile, "since": since}
    if claims:
        frame, notes = claims_report(uri, experiment, select)
        text = {"csv": lambda: frame.to_csv(index=False, lineterminator="\n", float_format=CSV_FLOAT),
                "latex": lambda: claims_latex(frame, notes), "markdown": lambda: claims_markdown(frame, notes)}[fmt]()
        print(text, end="")
        if fmt == "csv":
            _say(notes)
        if out:
            atomic.write_bytes(Path(out) / f"claims.{RENDERERS[fmt][1]}", text.encode())
        return 0
    if figure is not None:
        return _figure_command(str(figure), experiment, uri, out, select, fmt)
    if table not in TABLES:
        raise StrbenchError(f"unknown table {table}; choose one of {sorted(TABLES)}" if table is not None else
                            "choose what to report: --table N, --figure 8|frontier, --claims or --html DIR")
    tr = table_report(table, experiment, uri, select=select, paired=paired)
    rt, name = tr.table, tr.selection.experiment
    stem = f"table{table}" if experiment is None else f"table{table}_{name}"
    if paired:
        title = (f"Table {table}, paired comparisons of the measured rows (experiment `{name}`, "
                 f"{describe_data(tr.selection.runs, rt.axis)}).")
        notes = paired_notes(2000) + tr.selection.lines() + rt.warnings
        text = {"markdown": lambda: paired_markdown(tr.pairs, title, notes),
                "latex": lambda: paired_latex(tr.pairs, title, notes, f"tab:strbench-table{table}-paired"),
                "csv": lambda: paired_csv(tr.pairs, table, name)}[fmt]()
        stem += "_paired"
        ext = RENDERERS[fmt][1]
    else:
        render, ext = RENDERERS[fmt]
        text = render(rt)
    print(text, end="")
    if fmt != "markdown":  # markdown carries these in its notes; CSV/LaTeX on stdout stay clean
        _say(tr.selection.lines() + [f"warning: {w}" for w in rt.warnings])
    elif rt.warnings:
        _say([f"warning: {w}" for w in rt.warnings])
    if out:
        atomic.write_bytes(Path(out) / f"{stem}.{ext}", text.encode())
    return 0


def _figure_command(figure: str, experiment: str | None, uri: str, out: str | None, select: dict, fmt: str) -> int:
    if figure == "8":
        name = experiment or FIGURE8_EXPERIMENT
        fig = figure8(load_kl_trajectories(uri, name, **select))
        for p in save_figure(fig, out or "reports", "fig8_kl"):
            print(p)
        return 0
    if figure == "frontier":
        sel, points, notes = frontier_report(experiment, uri, select)
        fig = figure_frontier(points, title_columns=points["columns"].iloc[0] if len(points) else "")
        text = (points.to_csv(index=False, lineterminator="\n", float_format=CSV_FLOAT) if fmt == "csv"
                else frontier_markdown(points, notes + sel.lines()))
        print(text, end="")
        for p in save_figure(fig, out or "reports", "frontier"):
            print(p, file=sys.stderr if fmt == "csv" else sys.stdout)
        return 0
    raise StrbenchError(f"unknown figure {figure!r}; choose 8 or frontier")
