"""`strbench report`: the paper's Tables 1-3 and Fig. 8 from tracked runs, the paper's numbers beside them.

Pure builders take a runs DataFrame in `mlflow.search_runs` layout (columns `run_id`, `status`,
`tags.strbench.case`, `tags.strbench.mask_bin`, `metrics.psnr`, ...) and return a `ReportTable`; renderers
turn it into Markdown, LaTeX (booktabs, best measured value in bold) or CSV. Only the loaders touch
MLflow, through `strbench.tracking` (imported lazily: this module never imports mlflow).

Default experiments: Table 1 `table1_places2`, falling back to `quickstart` when that has no runs (the
quickstart has Table 1's shape: methods x mask bins); Table 2 `ablation_resampling`; Table 3
`table3_celeba`; Fig. 8 `structure_variants`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from strbench import atomic
from strbench.errors import StrbenchError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
REFERENCE_PATH = Path(__file__).resolve().parents[1] / "reports" / "paper_reference.yaml"
TAG = "tags.strbench."
MET = "metrics."
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
CASE_ORDER = ("IR-SDE", "RePaint*", "StrDiffusion", "A", "B", "C", "D")
VARIANT_ORDER = ("gray2gray", "edge2edge", "edge2gray", "gray2edge")
SPLIT_TAGS = ("ablation", "variant")  # appended to a row label when they vary within one case


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


def _col(runs: pd.DataFrame, name: str) -> pd.Series:
    return runs[name] if name in runs.columns else pd.Series([None] * len(runs), index=runs.index, dtype=object)


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


def _column_order(values: Sequence[str], axis: str, paper_columns: Sequence[str]) -> list[str]:
    vals = list(dict.fromkeys(values))
    if axis == "mask_bin":
        return sorted(vals, key=_bin_key)
    first = [c for c in paper_columns if c in vals]
    return first + sorted(v for v in vals if v not in first)


def _case_key(label: str) -> tuple:
    base = label.split(" [")[0]
    return (CASE_ORDER.index(base) if base in CASE_ORDER else len(CASE_ORDER), label)


def _row_labels(runs: pd.DataFrame) -> pd.Series:
    """Case, plus the ablation/variant when those vary within the case (never silently pooled)."""
    case = _col(runs, TAG + "case").fillna(_col(runs, TAG + "method")).fillna("?").astype(str)
    labels = case.copy()
    for c in case.unique():
        sel = case == c
        extra = []
        for tag in SPLIT_TAGS:
            vals = _col(runs, TAG + tag)[sel].fillna("").astype(str)
            if vals.nunique() > 1:
                extra.append(vals)
        if extra:
            suffix = extra[0].str.cat(extra[1:], sep=", ") if len(extra) > 1 else extra[0]
            labels[sel] = case[sel] + " [" + suffix + "]"
    return labels


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
    col = _col(runs, TAG + axis).fillna(_col(runs, TAG + "mask_set")).fillna("all").astype(str)
    return _row_labels(runs) + "\x00" + col


def _mean(values: pd.Series) -> float | None:
    v = [x for x in (_num(a) for a in values) if x is not None]
    return float(np.mean(v)) if v else None


def _missing_reason(runs: pd.DataFrame, metric: str) -> str:
    reasons = [str(r) for r in _col(runs, f"{TAG}{metric}_missing").dropna().unique()]
    if metric != "fid" and not reasons:
        reasons = [str(r) for r in _col(runs, TAG + "fid_missing").dropna().unique()]
    return "; ".join(reasons) if reasons else f"no `{metric}` metric was logged for these runs"


# ----------------------------------------------------------------------------------------------- builder
def build_table(runs: pd.DataFrame, number: int, reference: dict | None = None, *,
                per_image: dict[str, pd.DataFrame] | None = None, experiment: str = "",
                notes: Sequence[str] = (), n_boot: int = 1000, seed: int = 0) -> ReportTable:
    """Pivot finished cell runs into the paper's layout of table `number`, with the paper's rows."""
    if number not in TABLES:
        raise StrbenchError(f"unknown table {number}; choose one of {sorted(TABLES)}")
    spec, ref = TABLES[number], (reference if reference is not None else load_reference())[number]
    per_image = per_image or {}
    runs = runs[_col(runs, "status").fillna("FINISHED") == "FINISHED"].copy()
    runs["_row"] = _row_labels(runs)
    runs["_col"] = _cell_keys(runs, spec.axis).str.split("\x00").str[1]
    columns = _column_order(runs["_col"].tolist(), spec.axis, ref["columns"])

    rows: list[Row] = []
    for r in ref["rows"]:
        values = {}
        for m in METRICS:
            for c in columns:
                values[(m.key, c)] = _num(r[m.key][ref["columns"].index(c)]) if c in ref["columns"] else None
        rows.append(Row(f"{r['method']} (paper)", r.get("venue") or "", "paper", values))

    footnotes: list[str] = []
    details = []
    for label in sorted(runs["_row"].unique(), key=_case_key):
        mine = runs[runs["_row"] == label]
        row = Row(f"{label} (measured)", "strbench", "measured", {},
                  nfe=_mean(_col(mine, MET + "nfe_per_image")), sec=_mean(_col(mine, MET + "sec_per_image")))
        for c in columns:
            cell = mine[mine["_col"] == c]
            d = {"method": label, "column": c, "runs": len(cell),
                 "images": int(sum(_num(x) or 0 for x in _col(cell, MET + "n_images")))}
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

    datasets = sorted(str(x) for x in _col(runs, TAG + "dataset").dropna().unique())
    all_notes = [f"Measured rows: MLflow experiment `{experiment or spec.experiment}`"
                 + (f", dataset {', '.join(datasets)}" if datasets else "") + "; each value is the mean over its "
                 "runs (seeds). The paper's rows are typed from the paper (reports/paper_reference.yaml).",
                 f"Dash ({MISSING}): not reported by the paper, or not run here. NFE/img and s/img: network evaluations and "
                 "seconds per image (not in the paper)."]
    if spec.axis == "mask_set" and (TAG + "mask_bin") in runs.columns:
        sets = [f"{c} = {', '.join(sorted(runs.loc[runs['_col'] == c, TAG + 'mask_bin'].dropna().astype(str).unique(), key=_bin_key))}"
                for c in columns]
        all_notes.append(f"Hole-ratio bins of the mask sets (the paper does not define them): {'; '.join(sets)}.")
    missing_cols = [c for c in ref["columns"] if c not in columns]
    if not any(c in ref["columns"] for c in columns):
        all_notes.append(f"None of the measured columns is one of the paper's ({', '.join(ref['columns'])}).")
    elif missing_cols:
        all_notes.append(f"Paper columns not measured here: {', '.join(missing_cols)}.")
    all_notes += list(notes)
    detail_df = pd.DataFrame(details, columns=["method", "column", "runs", "images", "psnr", "psnr_ci", "ssim",
                                               "ssim_ci", "fid", "kid", "nfe_per_image", "sec_per_image"])
    return ReportTable(number, ref["caption"], experiment or spec.experiment, columns, rows, footnotes,
                       all_notes, detail_df)


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


def to_markdown(rt: ReportTable) -> str:
    from tabulate import tabulate

    headers = ["Method", "Venue"] + [f"{_header(m, '↑', '↓')} {c}" for m in METRICS for c in rt.columns] \
        + ["NFE/img", "s/img"]
    best = _best(rt)
    body = []
    for r in rt.rows:
        cells = [r.label, r.venue]
        for m in METRICS:
            for c in rt.columns:
                text, _ = _cell_text(r, m, c, lambda s, k: f"{s} [{k}]")
                if r.source == "measured" and best.get((m.key, c)) == r.values.get((m.key, c)) and text != MISSING \
                        and (m.key, c) not in r.footnotes:
                    text = f"**{text}**"
                cells.append(text)
        cells += [_fmt_g(r.nfe), _fmt_g(r.sec)] if r.source == "measured" else [MISSING, MISSING]
        body.append(cells)
    align = ["left", "left"] + ["right"] * (len(headers) - 2)
    lines = [f"**Table {rt.number}.** {rt.caption}. Best measured value in bold.", "",
             tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True, colalign=align), ""]
    lines += [f"[{i}] {f}" for i, f in enumerate(rt.footnotes, 1)]
    lines += [f"- {n}" for n in rt.notes]
    if len(rt.details):
        lines += ["", f"**Table {rt.number} (measured cells).** 95% bootstrap intervals of the mean over images.", "",
                  tabulate(_details_rows(rt), headers=DETAIL_HEADERS, tablefmt="pipe", disable_numparse=True,
                           colalign=["left", "left"] + ["right"] * (len(DETAIL_HEADERS) - 2))]
    return "\n".join(lines) + "\n"


_LATEX_ESCAPE = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "–": "--"}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials; Markdown `code` becomes \\texttt{code}."""
    parts = str(text).split("`")
    esc = ["".join(_LATEX_ESCAPE.get(ch, ch) for ch in part) for part in parts]
    return "".join(rf"\texttt{{{e}}}" if i % 2 else e for i, e in enumerate(esc))


def to_latex(rt: ReportTable) -> str:
    nc = len(rt.columns)
    best = _best(rt)
    spec = "ll" + " ".join("r" * nc for _ in METRICS) + " rr"
    up, down = r" $\uparrow$", r" $\downarrow$"
    group = " & ".join(rf"\multicolumn{{{nc}}}{{c}}{{{_header(m, up, down)}}}" for m in METRICS)
    rules = "".join(rf"\cmidrule(lr){{{3 + i * nc}-{2 + (i + 1) * nc}}}" for i in range(len(METRICS)))
    cols = " & ".join(latex_escape(c) for _ in METRICS for c in rt.columns)
    out = [r"\begin{table}[t]", r"\centering", r"\small",
           rf"\caption{{{latex_escape(rt.caption)}. Best measured value in bold.}}",
           rf"\label{{tab:strbench-table{rt.number}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
           rf" & & {group} & & \\", rules, rf"Method & Venue & {cols} & NFE/img & s/img \\", r"\midrule"]
    for source in ("paper", "measured"):
        part = [r for r in rt.rows if r.source == source]
        for r in part:
            cells = [latex_escape(r.label), latex_escape(r.venue)]
            for m in METRICS:
                for c in rt.columns:
                    text, _ = _cell_text(r, m, c, lambda s, k: f"{s}$^{{{k}}}$")
                    if text == MISSING:
                        text = "--"
                    elif r.source == "measured" and (m.key, c) not in r.footnotes \
                            and best.get((m.key, c)) == r.values.get((m.key, c)):
                        text = rf"\textbf{{{text}}}"
                    cells.append(text)
            cells += [_fmt_g(r.nfe), _fmt_g(r.sec)] if source == "measured" else ["--", "--"]
            out.append(" & ".join(cells).replace(MISSING, "--") + r" \\")
        if source == "paper" and part and any(r.source == "measured" for r in rt.rows):
            out.append(r"\midrule")
    out += [r"\bottomrule", r"\end{tabular}"]
    notes = [rf"$^{{{i}}}$ {latex_escape(f)}" for i, f in enumerate(rt.footnotes, 1)] \
        + [latex_escape(n) for n in rt.notes]
    if notes:
        out += [r"\par\smallskip\footnotesize", r" \\ ".join(notes)]
    out += [r"\end{table}"]
    if len(rt.details):
        dh = " & ".join(latex_escape(h) for h in DETAIL_HEADERS)
        out += ["", r"\begin{table}[t]", r"\centering", r"\small",
                rf"\caption{{Table {rt.number}, measured cells: 95\% bootstrap intervals of the mean over images.}}",
                r"\begin{tabular}{ll" + "r" * (len(DETAIL_HEADERS) - 2) + "}", r"\toprule", dh + r" \\", r"\midrule"]
        out += [" & ".join(latex_escape(x) for x in row) + r" \\" for row in _details_rows(rt)]
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"


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


CSV_FLOAT = "%.6g"


def to_csv(rt: ReportTable) -> str:
    main = table_frame(rt).to_csv(index=False, lineterminator="\n", float_format=CSV_FLOAT)
    if not len(rt.details):
        return main
    return main + "\n" + details_frame(rt).to_csv(index=False, lineterminator="\n", float_format=CSV_FLOAT)


RENDERERS: dict[str, tuple[Callable[[ReportTable], str], str]] = {
    "markdown": (to_markdown, "md"), "latex": (to_latex, "tex"), "csv": (to_csv, "csv")}


# ----------------------------------------------------------------------------------------------- Fig. 8
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


def load_kl_trajectories(tracking_uri: str, experiment: str) -> pd.DataFrame:
    runs = load_runs(tracking_uri, experiment)
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


def load_runs(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """Finished cell runs of an experiment (empty DataFrame when there are none)."""
    if _sqlite_missing(tracking_uri):
        return pd.DataFrame()
    runs = _tracking().search_cell_runs(tracking_uri, experiment)
    if runs is None or runs.empty:
        return pd.DataFrame()
    if "status" in runs.columns:
        runs = runs[runs["status"] == "FINISHED"]
    return runs.reset_index(drop=True)


def load_per_image(tracking_uri: str, runs: pd.DataFrame, axis: str = "mask_bin"
                   ) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """per_image.csv of the runs whose interval must be computed here: runs without a logged interval and
    runs that share a table cell with others (seeds, pooled). Returns (frames by run_id, notes)."""
    frames, failed = {}, []
    if runs.empty:
        return frames, []
    runs = runs.reset_index(drop=True)
    keys = _cell_keys(runs, axis)
    shared = keys.map(keys.value_counts()) > 1
    tracking = _tracking()
    for i, run in runs.iterrows():
        if not shared[i] and _logged_ci(run, "psnr") is not None and _logged_ci(run, "ssim") is not None:
            continue
        try:
            frames[run["run_id"]] = tracking.read_csv_artifact(tracking_uri, run["run_id"], "per_image.csv")
        except Exception:  # noqa: BLE001 - reported as a note: that cell's interval shows as missing
            failed.append(str(run["run_id"]))
    notes = [f"per_image.csv unreadable for {len(failed)} run(s) ({', '.join(f[:8] for f in failed)}): "
             f"their intervals are missing."] if failed else []
    return frames, notes


def _runs_for_table(spec: TableSpec, experiment: str | None, uri: str) -> tuple[pd.DataFrame, str, list[str]]:
    names = [experiment] if experiment else [spec.experiment, *spec.fallbacks]
    for name in names:
        runs = load_runs(uri, name)
        if not runs.empty:
            notes = [f"No runs in `{spec.experiment}`: showing experiment `{name}` instead."] \
                if name != names[0] else []
            return runs, name, notes
    tried = " nor ".join(f"'{n}'" for n in names)
    hint = f"`{spec.run_hint}`" if experiment is None or experiment == spec.experiment \
        else f"`strbench run experiments/{experiment}.yaml`"
    extra = " (CPU-sized: `strbench run experiments/quickstart.yaml`)" if "quickstart" in names else ""
    raise StrbenchError(f"no finished cell runs in MLflow experiment {tried} at {uri}; make them with "
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


def report_command(table: int | None, figure: int | None, experiment: str | None, tracking_uri: str | None,
                   fmt: str = "markdown", out: str | None = None) -> int:
    """`strbench report`: print table `table` (and write it to `out`), or write figure `figure`."""
    uri = tracking_uri or DEFAULT_TRACKING_URI
    if fmt not in RENDERERS:
        raise StrbenchError(f"unknown report format {fmt!r}; choose one of {sorted(RENDERERS)}")
    if figure is not None:
        if figure != 8:
            raise StrbenchError(f"unknown figure {figure}; only --figure 8 exists")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        name = experiment or FIGURE8_EXPERIMENT
        fig = figure8(load_kl_trajectories(uri, name))
        for p in save_figure(fig, out or "reports", "fig8_kl"):
            print(p)
        return 0
    if table not in TABLES:
        raise StrbenchError(f"unknown table {table}; choose one of {sorted(TABLES)}")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no download bars in the report
    runs, name, notes = _runs_for_table(TABLES[table], experiment, uri)
    runs = runs[_col(runs, "status").fillna("FINISHED") == "FINISHED"].reset_index(drop=True)
    per_image, more = load_per_image(uri, runs, TABLES[table].axis)
    rt = build_table(runs, table, per_image=per_image, experiment=name, notes=notes + more)
    render, ext = RENDERERS[fmt]
    text = render(rt)
    print(text, end="")
    if out:
        stem = f"table{table}" if experiment is None else f"table{table}_{name}"
        if fmt == "csv":
            for suffix, frame in (("", table_frame(rt)), ("_details", details_frame(rt))):
                atomic.write_bytes(Path(out) / f"{stem}{suffix}.csv",
                                   frame.to_csv(index=False, float_format=CSV_FLOAT).encode())
        else:
            atomic.write_bytes(Path(out) / f"{stem}.{ext}", text.encode())
    return 0
