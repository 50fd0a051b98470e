"""Every table a report shows, as one format-free `TextTable` (text cells with bold and footnote marks, key
columns and column groups); strbench.report.render turns a TextTable into Markdown, LaTeX or HTML, so each
table is laid out once. `compact` asks for the layout of a printed page (LaTeX): the paper's rows by name
above a rule, percent signs in the group header, the columns a narrow page may move to another table last."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import pandas as pd

from strbench.report.build import MISSING, ReportTable, Row, num
from strbench.report.reference import NOT_IN_PAPER, MetricSpec
from strbench.selection import as_str

NA = "n/a"  # measured but not computable (a footnote says why)


@dataclass(frozen=True)
class Cell:
    text: str
    bold: bool = False
    note: int | None = None  # footnote number shown beside the text


@dataclass
class TextTable:
    """Key columns (left), then groups of value columns under an optional spanning header; rows of cells (keys
    first, then every group's columns in order)."""

    keys: list[str]
    groups: list[tuple[str, list[str]]]  # (group header, column headers); "" = no group header
    rows: list[list[Cell]]
    rule_after: int | None = None  # a rule after this many rows (the paper's | measured)
    row_classes: list[str] = field(default_factory=list)  # per row, for HTML ("paper", "first-measured")
    align: list[str] | None = None  # "left"/"right" per column; default: keys left, values right

    def alignment(self) -> list[str]:
        n = len(self.keys) + sum(len(s) for _, s in self.groups)
        return list(self.align) if self.align else ["left"] * len(self.keys) + ["right"] * (n - len(self.keys))

    def headers(self) -> list[str]:
        """One header per column: the group header and the column's ("PSNR↑ 10-20%")."""
        return self.keys + [f"{g} {s}" if g else s for g, subs in self.groups for s in subs]

    def group_span(self, g: int) -> range:
        """The columns of group `g` in a row."""
        start = len(self.keys) + sum(len(s) for _, s in self.groups[:g])
        return range(start, start + len(self.groups[g][1]))


def plain(rows: Sequence[Sequence[str]]) -> list[list[Cell]]:
    return [[Cell(x) for x in r] for r in rows]


# ----------------------------------------------------------------------------------------------- formatting
def fmt(v: float | None, digits: int) -> str:
    return MISSING if v is None else f"{v:.{digits}f}"


def fmt_g(v: float | None) -> str:
    if v is None:
        return MISSING
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.3g}"


def fmt_ci(ci: tuple[float, float] | None, digits: int) -> str:
    if ci is None or any(math.isnan(x) for x in ci):
        return MISSING
    return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def fmt_p(p) -> str:
    p = num(p)
    return NA if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _signed(v, digits: int) -> str:
    return NA if num(v) is None else f"{v:+.{digits}f}"


# ----------------------------------------------------------------------------------------------- Tables 1-3
def _best(rt: ReportTable) -> dict[tuple[str, str], float]:
    """Best measured value per metric column (max PSNR/SSIM/P-IDS/U-IDS, min FID/LPIPS)."""
    out = {}
    for m in rt.metrics:
        for c in rt.columns:
            vals = [r.values[(m.key, c)] for r in rt.rows
                    if r.source == "measured" and r.values.get((m.key, c)) is not None]
            if vals and (m.paper or len(set(vals)) > 1):  # a column of our own where all tie: nobody is best
                out[(m.key, c)] = max(vals) if m.higher_is_better else min(vals)
    return out


def _value(rt: ReportTable, best: dict, r: Row, m: MetricSpec, c: str) -> Cell:
    if (m.key, c) in r.footnotes:
        return Cell(NA, note=r.footnotes[(m.key, c)])
    v = r.values.get((m.key, c))
    return Cell(fmt(v, m.digits), bold=r.source == "measured" and v is not None and best.get((m.key, c)) == v)


def main_table(rt: ReportTable, compact: bool = False) -> TextTable:
    """The paper's layout: method, venue, each metric per column, NFE/img and s/img; the best measured value
    bold. `compact`: the paper's rows by name above a rule ("Method", venue "paper" when the paper gives none)."""
    best = _best(rt)
    paper = [r for r in rt.rows if r.source == "paper"]
    measured = [r for r in rt.rows if r.source == "measured"]
    rows = paper + measured if compact else rt.rows
    pct = compact and bool(rt.columns) and all(c.endswith("%") for c in rt.columns)  # "10-20" under "(hole %)"
    subs = [c[:-1] if pct else c for c in rt.columns]
    groups = [(f"{m.name} {'↑' if m.higher_is_better else '↓'}" + ("" if m.paper else NOT_IN_PAPER)
               + (" (hole %)" if pct else "") if compact else m.header, subs) for m in rt.metrics]
    groups.append(("", ["NFE/img", "s/img"]))
    body, classes, seen = [], [], False
    for r in rows:
        keys = [r.name or r.label, r.venue or "paper"] if compact else [r.label, r.venue]
        cells = [Cell(k) for k in keys] + [_value(rt, best, r, m, c) for m in rt.metrics for c in rt.columns]
        cost = [fmt_g(r.nfe), fmt_g(r.sec)] if r.source == "measured" else [MISSING, MISSING]
        body.append(cells + [Cell(x) for x in cost])
        first = r.source == "measured" and not seen
        seen = seen or r.source == "measured"
        classes.append("paper" if r.source == "paper" else ("first-measured" if first else ""))
    return TextTable(["Method", "Venue"], groups, body, rule_after=len(paper) if compact and paper and measured
                     else None, row_classes=classes)


DETAIL_HEADERS = ["Method", "Mask", "runs", "seeds", "images", "PSNR", "PSNR 95% CI", "PSNR seed SD", "SSIM",
                  "SSIM 95% CI", "SSIM seed SD", "FID", "KID", "NFE/img", "s/img"]
EXTRA_DETAIL = {"lpips": ["LPIPS", "LPIPS 95% CI"], "p_ids": ["P-IDS"], "u_ids": ["U-IDS"]}  # after the paper's


def _extra_cells(rt: ReportTable, d) -> list[str]:
    out = []
    for m in rt.metrics:
        if m.key in EXTRA_DETAIL:
            v = num(getattr(d, m.key))
            out.append(fmt(v, m.digits) if v is not None else NA)
            if m.key == "lpips":
                out.append(fmt_ci(d.lpips_ci, m.digits))
    return out


def details_table(rt: ReportTable, compact: bool = False) -> TextTable:
    """One row per measured cell: runs, training seeds, images, PSNR and SSIM with their 95% intervals (over
    seeds with two or more, else over images) and seed-to-seed SDs, FID, KID, cost, then the metrics the paper
    does not have (LPIPS with its interval, P-IDS, U-IDS) where the table shows them. `compact`: the values and
    intervals first (a group of their own), the counts and cost after."""
    extra = [h + NOT_IN_PAPER if i == 0 else h for m in rt.metrics for i, h in enumerate(EXTRA_DETAIL.get(m.key, []))]
    rows = [[d.method, d.column, str(d.runs), str(getattr(d, "seeds", 1)), str(d.images), fmt(num(d.psnr), 2),
             fmt_ci(d.psnr_ci, 2), _sd_text(getattr(d, "psnr_seed_sd", None), 2) or MISSING, fmt(num(d.ssim), 3),
             fmt_ci(d.ssim_ci, 3), _sd_text(getattr(d, "ssim_seed_sd", None), 3) or MISSING,
             fmt(num(d.fid), 2) if num(d.fid) is not None else NA,
             fmt(num(d.kid), 4), fmt_g(num(d.nfe_per_image)), fmt_g(num(d.sec_per_image))] + _extra_cells(rt, d)
            for d in rt.details.itertuples(index=False)]
    if not compact:
        return TextTable(DETAIL_HEADERS[:2], [("", DETAIL_HEADERS[2:] + extra)], plain(rows))
    order = [0, 1, 5, 6, 7, 8, 9, 10, 2, 3, 4, 11, 12, 13, 14] + list(range(15, 15 + len(extra)))
    return TextTable(DETAIL_HEADERS[:2], [("", DETAIL_HEADERS[5:11]),
                                          ("", DETAIL_HEADERS[2:5] + DETAIL_HEADERS[11:] + extra)],
                     plain([[r[i] for i in order] for r in rows]))


# ----------------------------------------------------------------------------------------------- paired, claims
PAIRED_HEADERS = ["A", "B", "Mask", "metric", "n", "seeds", "mean A", "mean B", "A − B", "95% CI", "seed SD",
                  "image-level 95% CI", "Wilcoxon p", "note"]


def _ci_text(lo, hi, d: int, empty: str = NA) -> str:
    return empty if num(lo) is None or num(hi) is None else f"[{lo:+.{d}f}, {hi:+.{d}f}]"


def _sd_text(v, d: int) -> str:
    return "" if num(v) is None else f"{v:.{d}f}"


def _get(r, key: str, default=None):
    return getattr(r, key, default)


def _paired_rows(pairs: pd.DataFrame) -> list[list[str]]:
    out = []
    for r in pairs.itertuples(index=False):
        d = 2 if r.metric == "psnr" else 4
        seeds = num(_get(r, "seeds"))
        out.append([r.a, r.b, str(r.column), r.metric.upper(), str(r.n), "" if seeds is None else str(int(seeds)),
                    fmt(num(r.mean_a), d), fmt(num(r.mean_b), d), _signed(r.diff, d), _ci_text(r.ci_low, r.ci_high, d),
                    _sd_text(_get(r, "seed_sd"), d), _ci_text(_get(r, "img_ci_low"), _get(r, "img_ci_high"), d),
                    fmt_p(r.p_wilcoxon), "; ".join(x for x in (as_str(_get(r, "interval")), as_str(r.note)) if x)])
    return out


def paired_table(pairs: pd.DataFrame, compact: bool = False) -> TextTable:
    """Every compared pair of rows per column: n, seeds, means, A - B with its interval (two levels with
    several seeds), the seed-to-seed SD, the image-level interval, Wilcoxon p, how the interval was computed.
    `compact` (one metric's pairs): A, B, mask; n, seeds, A - B, interval, seed SD, p."""
    rows = _paired_rows(pairs)
    if compact:
        keep = [4, 5, 8, 9, 10, 12]
        return TextTable(PAIRED_HEADERS[:3], [("", [PAIRED_HEADERS[i] for i in keep])],
                         plain([r[:3] + [r[i] for i in keep] for r in rows]))
    return TextTable(PAIRED_HEADERS[:4], [("", PAIRED_HEADERS[4:13]), ("", PAIRED_HEADERS[13:])], plain(rows),
                     align=["left"] * 4 + ["right"] * 9 + ["left"])


CLAIM_HEADERS = ["Claim", "experiment", "compared", "verdict", "better − worse", "95% CI", "seeds", "seed SD",
                 "image-level 95% CI", "Wilcoxon p", "n", "detail"]
CLAIM_WHERE = {"table1": "Table 1", "table2": "Table 2", "fig8": "Fig. 8"}


def verdict_text(verdict: str, interval: str, compact: bool = False) -> str:
    """The verdict as shown: with one training seed it says the interval is image-level only."""
    from strbench import paired

    if verdict == paired.MISSING or "image-level interval only" not in as_str(interval):
        return verdict
    return f"{verdict} (1 seed)" if compact else f"{verdict} — {interval}"


def _claim_rows(claims: pd.DataFrame) -> list[list[str]]:
    out = []
    for r in claims.itertuples(index=False):
        d = 2 if r.metric == "psnr" else 4
        seeds = num(_get(r, "seeds"))
        how = as_str(_get(r, "interval"))
        detail = "; ".join(x for x in (how if "image-level interval only" not in how else "", r.detail) if x)
        out.append([r.text, r.experiment, f"{r.better} vs {r.worse}", verdict_text(r.verdict, how),
                    "" if num(r.diff) is None else f"{r.diff:+.{d}f}", _ci_text(r.ci_low, r.ci_high, d, ""),
                    str(int(seeds)) if seeds else "", _sd_text(_get(r, "seed_sd"), d),
                    _ci_text(_get(r, "img_ci_low"), _get(r, "img_ci_high"), d, ""),
                    fmt_p(r.p_wilcoxon) if r.n else "", str(r.n) if r.n else "", detail])
    return out


def claims_table(claims: pd.DataFrame, compact: bool = False) -> TextTable:
    """One row per claim and compared pair: verdict, better - worse, interval (two levels with several seeds),
    seeds, seed SD, image-level interval, p, n, detail. `compact`: the claim by source and metric,
    "better > worse", verdict; difference, interval, seed SD, p."""
    from strbench import paired

    rows = _claim_rows(claims)
    if not compact:
        return TextTable(CLAIM_HEADERS[:4], [("", CLAIM_HEADERS[4:])], plain(rows), align=["left"] * len(CLAIM_HEADERS))
    source = {c.key: CLAIM_WHERE[c.source] for c in paired.CLAIMS}
    short = [[f"{source.get(k, '')} {m.removeprefix('kl_')}", r[2].replace(" vs ", " > "),
              verdict_text(v, how, compact=True), r[4], r[5], r[7], r[9]]
             for k, m, v, how, r in zip(claims["claim"], claims["metric"], claims["verdict"],
                                        claims.get("interval", pd.Series([""] * len(claims))).map(as_str), rows)]
    return TextTable(["Claim", "better > worse", "verdict"], [("", ["difference", "95% CI", "seed SD", "p"])],
                     plain(short))


FRONTIER_HEADERS = ["Point", "Method", "NFE/img", "PSNR", "FID", "columns"]


def frontier_table(points: pd.DataFrame) -> TextTable:
    rows = [[r.label, r.family, fmt_g(num(r.nfe)), fmt(num(r.psnr), 2), fmt(num(r.fid), 2), r.columns]
            for r in points.itertuples()]
    return TextTable(FRONTIER_HEADERS[:2], [("", FRONTIER_HEADERS[2:])], plain(rows),
                     align=["left"] * len(FRONTIER_HEADERS))
