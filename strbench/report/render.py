"""Reports as text. One path for every table: a TextTable (strbench.report.tables) becomes Markdown (tabulate's
pipe table), LaTeX (pandas' Styler, booktabs, sized by strbench.report.latex.fit_latex) or HTML (pandas' Styler);
CSV is the tidy data itself (DataFrame.to_csv). The documents below add captions and notes around the tables.
"""
from __future__ import annotations

import hashlib
import html
from typing import Callable, Sequence

import pandas as pd

from strbench.report.build import ReportTable, tidy_frame
from strbench.report.latex import fit_latex, latex_escape
from strbench.report.tables import (Cell, TextTable, claims_table, details_table, frontier_table, main_table,
                                    paired_table)

CSV_FLOAT = "%.6g"


# ----------------------------------------------------------------------------------------------- one table
def _md_cell(c: Cell) -> str:
    text = c.text + (f" [{c.note}]" if c.note is not None else "")
    return f"**{text}**" if c.bold else text


def markdown(t: TextTable) -> str:
    """A pipe table (tabulate), cells as they are: no number parsing."""
    from tabulate import tabulate

    return tabulate([[_md_cell(c) for c in r] for r in t.rows], headers=t.headers(), tablefmt="pipe",
                     disable_numparse=True, colalign=t.alignment())


def esc(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _html_cell(c: Cell) -> str:
    text = esc(c.text) + (f"<sup>{c.note}</sup>" if c.note is not None else "")
    return f"<b>{text}</b>" if c.bold else text


def html_table(t: TextTable, cell_html: Callable[[int, int, Cell], str] | None = None) -> str:
    """The table through pandas' Styler: left-aligned columns have class `l`, rows their `row_classes`;
    `cell_html(i, j, cell)` may give a cell's HTML itself (e.g. a verdict's colour)."""
    text = [[(cell_html(i, j, c) if cell_html else None) or _html_cell(c) for j, c in enumerate(r)]
            for i, r in enumerate(t.rows)]
    headers = t.headers()
    frame = pd.DataFrame(text, columns=range(len(headers)))
    align = t.alignment()
    classes = [[" ".join(x for x in ("l" if align[j] == "left" else "", t.row_classes[i] if i < len(t.row_classes)
                                     else "") if x) for j in range(len(headers))] for i in range(len(t.rows))]
    uuid = hashlib.sha1(repr((headers, text)).encode()).hexdigest()[:10]  # stable: the page is reproducible
    styler = (frame.style.hide(axis="index").relabel_index([esc(h) for h in headers], axis="columns")
              .set_td_classes(pd.DataFrame(classes, columns=frame.columns))
              .set_table_styles([{"selector": f"th.col{j}", "props": [("text-align", "left")]}
                                 for j, a in enumerate(align) if a == "left"]))
    styler.set_uuid(uuid)
    styler.cell_ids = False
    return f'<div class="scroll">{styler.to_html()}</div>'


# ----------------------------------------------------------------------------------------------- Tables 1-3
DETAILS_CAPTION = ("95% intervals of the mean: over training seeds and images (two levels, docs/SCIENCE.md#replicates) "
                   "where a cell has two or more seeds, else bootstrap over its images; seed SD: the seed-to-seed "
                   "standard deviation.")


def to_markdown(rt: ReportTable) -> str:
    lines = [f"**Table {rt.number}.** {rt.caption}. Best measured value in bold.", "", markdown(main_table(rt)), ""]
    lines += [f"[{i}] {f}" for i, f in enumerate(rt.footnotes, 1)]
    lines += [f"- {n}" for n in rt.notes]
    lines += [f"- **Warning:** {w}" for w in rt.warnings]
    if len(rt.details):
        lines += ["", f"**Table {rt.number} (measured cells).** {DETAILS_CAPTION}", "",
                  markdown(details_table(rt))]
        lines += ["", f"Paired comparisons of the measured rows: `strbench report --table {rt.number} --paired`."]
    return "\n".join(lines) + "\n"


def to_latex(rt: ReportTable) -> str:
    notes = [rf"$^{{{i}}}$ {latex_escape(f)}" for i, f in enumerate(rt.footnotes, 1)] \
        + [latex_escape(n) for n in rt.notes] + [latex_escape("Warning: " + w) for w in rt.warnings]
    main = main_table(rt, compact=True)
    out = fit_latex(main, f"{latex_escape(rt.caption)}. Rows above the rule: the paper's; below (venue strbench): "
                          f"measured here, best value in bold.", f"tab:strbench-table{rt.number}", notes,
                    optional=[len(main.groups) - 1],
                    optional_note=f"NFE/img and s/img: in Table~\\ref{{tab:strbench-table{rt.number}-cells}}.")
    if len(rt.details):
        out += fit_latex(details_table(rt, compact=True),
                         rf"Table {rt.number}, measured cells ({latex_escape(rt.data)}). "
                         + latex_escape(DETAILS_CAPTION), f"tab:strbench-table{rt.number}-cells")
    return "\n\n".join(out) + "\n"


def to_csv(rt: ReportTable) -> str:
    """One tidy long table (see build.tidy_frame): `pandas.read_csv` reads it back as one frame."""
    return csv(tidy_frame(rt))


def csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n", float_format=CSV_FLOAT)


RENDERERS: dict[str, tuple[Callable[[ReportTable], str], str]] = {
    "markdown": (to_markdown, "md"), "latex": (to_latex, "tex"), "csv": (to_csv, "csv")}
EXTENSIONS = {fmt: ext for fmt, (_, ext) in RENDERERS.items()}


# ----------------------------------------------------------------------------------------------- paired
def paired_markdown(pairs: pd.DataFrame, title: str, notes: Sequence[str]) -> str:
    if pairs.empty:
        return f"**{title}**\n\nNo pairs: the rows need per_image.csv artifacts with image ids, on common cells.\n"
    return "\n".join([f"**{title}**", "", markdown(paired_table(pairs)), ""] + [f"- {n}" for n in notes]) + "\n"


def paired_latex(pairs: pd.DataFrame, title: str, notes: Sequence[str], label: str) -> str:
    """One table per metric (columns A, B, mask, n, A - B, interval, p), each sized by fit_latex."""
    out = []
    metrics = list(dict.fromkeys(pairs["metric"])) if len(pairs) else []
    for k, metric in enumerate(metrics):
        out += fit_latex(paired_table(pairs[pairs["metric"] == metric], compact=True),
                         f"{latex_escape(title)} {metric.upper()}.", f"{label}-{metric}",
                         [latex_escape(n) for n in notes] if k == len(metrics) - 1 else ())
    return "\n\n".join(out) + "\n" if out else "% no paired comparisons: no per_image.csv on common cells\n"


PAIRED_CSV_COLUMNS = ["table", "experiment", "a", "b", "mask", "metric", "n", "seeds", "mean_a", "mean_b", "diff",
                      "ci_low", "ci_high", "img_ci_low", "img_ci_high", "seed_sd", "p_wilcoxon", "interval", "note"]


def paired_csv(pairs: pd.DataFrame, number: int, experiment: str) -> str:
    df = pairs.rename(columns={"column": "mask"}).assign(table=number, experiment=experiment)
    return csv(df.reindex(columns=PAIRED_CSV_COLUMNS))


# ----------------------------------------------------------------------------------------------- claims, frontier
CLAIMS_TITLE = "The paper's claims, checked on the runs found."


def claims_markdown(claims: pd.DataFrame, notes: Sequence[str]) -> str:
    return "\n".join([f"**{CLAIMS_TITLE}**", "", markdown(claims_table(claims)), ""] + [f"- {n}" for n in notes]) + "\n"


def claims_latex(claims: pd.DataFrame, notes: Sequence[str]) -> str:
    """The claims as one table (claim, compared, verdict, difference, interval, p), sized by fit_latex."""
    return "\n\n".join(fit_latex(claims_table(claims, compact=True), CLAIMS_TITLE, "tab:strbench-claims",
                                 [latex_escape(n) for n in notes])) + "\n"


def claims_text(claims: pd.DataFrame, notes: Sequence[str], fmt: str) -> str:
    return {"csv": lambda: csv(claims), "latex": lambda: claims_latex(claims, notes),
            "markdown": lambda: claims_markdown(claims, notes)}[fmt]()


def frontier_markdown(points: pd.DataFrame, notes: Sequence[str]) -> str:
    return "\n".join(["**Quality against compute.** One point per (case, setting); PSNR and FID are means over "
                      "the columns listed.", "", markdown(frontier_table(points)), ""]
                     + [f"- {n}" for n in notes]) + "\n"
