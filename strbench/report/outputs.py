"""What one `strbench report` request produces, as data: the text for stdout, the lines for stderr, the files
written (`--out`, figures). `report(...)` is the command's one library call; it never prints."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from strbench import atomic
from strbench.errors import StrbenchError
from strbench.report import figures, load, render
from strbench.report.build import describe_data
from strbench.report.reference import FIGURE8_EXPERIMENT, TABLES


@dataclass
class Output:
    text: str = ""  # stdout
    notes: list[str] = field(default_factory=list)  # stderr
    paths: list[Path] = field(default_factory=list)  # figures written, one line each
    paths_to_stderr: bool = False  # figure paths beside a CSV on stdout go to stderr
    name: str = ""  # the file `text` is written to under --out ("" for none)


def table_output(number: int, experiment: str | None, uri: str, select: dict, *, paired: bool = False,
                 fmt: str = "markdown") -> Output:
    """Table `number` (or its paired comparisons) as `fmt`; the selection and warnings as notes."""
    tr = load.table_report(number, experiment, uri, select=select, paired=paired)
    rt, name = tr.table, tr.selection.experiment
    stem = f"table{number}" if experiment is None else f"table{number}_{name}"
    if paired:
        title = (f"Table {number}, paired comparisons of the measured rows (experiment `{name}`, "
                 f"{describe_data(tr.selection.runs, rt.axis)}).")
        notes = load.paired_notes(2000) + tr.selection.lines() + rt.warnings
        text = {"markdown": lambda: render.paired_markdown(tr.pairs, title, notes),
                "latex": lambda: render.paired_latex(tr.pairs, title, notes, f"tab:strbench-table{number}-paired"),
                "csv": lambda: render.paired_csv(tr.pairs, number, name)}[fmt]()
        stem += "_paired"
    else:
        text = render.RENDERERS[fmt][0](rt)
    warnings = [f"warning: {w}" for w in rt.warnings]
    # markdown carries the selection in its notes; CSV/LaTeX on stdout stay clean, so it goes to stderr
    return Output(text, warnings if fmt == "markdown" else tr.selection.lines() + warnings,
                  name=f"{stem}.{render.EXTENSIONS[fmt]}")


def claims_output(uri: str, experiment: str | None, select: dict, fmt: str = "markdown") -> Output:
    claims, notes = load.claims_report(uri, experiment, select)
    return Output(render.claims_text(claims, notes, fmt), notes if fmt == "csv" else [],
                  name=f"claims.{render.EXTENSIONS[fmt]}")


def figure_output(figure: str, experiment: str | None, uri: str, select: dict, fmt: str = "markdown",
                  out: str | os.PathLike | None = None) -> Output:
    """Fig. 8 or the frontier, written as PNG and PDF to `out` (default reports/); the frontier's points as
    Markdown (or CSV) text."""
    folder = out or "reports"
    if figure == "8":
        fig = figures.figure8(load.load_kl_trajectories(uri, experiment or FIGURE8_EXPERIMENT, **select))
        return Output(paths=figures.save_figure(fig, folder, "fig8_kl"))
    if figure == "frontier":
        sel, points, notes = load.frontier_report(experiment, uri, select)
        fig = figures.figure_frontier(points, title_columns=points["columns"].iloc[0] if len(points) else "")
        text = render.csv(points) if fmt == "csv" else render.frontier_markdown(points, notes + sel.lines())
        return Output(text, paths=figures.save_figure(fig, folder, "frontier"), paths_to_stderr=fmt == "csv")
    raise StrbenchError(f"unknown figure {figure!r}; choose 8 or frontier")


def report(table: int | None = None, figure: int | str | None = None, *, claims: bool = False,
           experiment: str | None = None, uri: str, select: dict | None = None, paired: bool = False,
           fmt: str = "markdown", out: str | os.PathLike | None = None) -> Output:
    """`strbench report`: table `table` (its paired comparisons with `paired`), a figure (8 or "frontier"), or
    the paper's claims; with `out`, the text is also written to OUT/<name> (atomically)."""
    if fmt not in render.RENDERERS:
        raise StrbenchError(f"unknown report format {fmt!r}; choose one of {sorted(render.RENDERERS)}")
    select = select or {}
    if claims:
        o = claims_output(uri, experiment, select, fmt)
    elif figure is not None:
        return figure_output(str(figure), experiment, uri, select, fmt, out)
    elif table not in TABLES:
        raise StrbenchError(f"unknown table {table}; choose one of {sorted(TABLES)}" if table is not None else
                            "choose what to report: --table N, --figure 8|frontier, --claims or --html DIR")
    else:
        o = table_output(table, experiment, uri, select, paired=paired, fmt=fmt)
    if out:
        atomic.write_bytes(Path(out) / o.name, o.text.encode())
    return o
