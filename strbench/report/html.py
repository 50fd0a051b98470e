"""`strbench report --html OUT/`: one static, self-contained HTML page (OUT/index.html) with Tables 1-3 and
the paper's rows, the paired comparisons, the paper's claims, Fig. 8, the quality-against-compute frontier and
sample grids. Images are inlined as base64 PNG; the page loads nothing (no external CSS, JS, fonts or links).

Tables are rendered by strbench.report.render.html_table (pandas' Styler) from the same TextTables as the
Markdown and LaTeX; notes keep their `code` and **bold** marks (md_inline).

Sections (element ids, stable for tests and links): `selection`, `table1`, `table2`, `table3`, `paired`,
`claims`, `fig8`, `frontier`, `samples`. A section whose runs do not exist says which command makes them.

Sample grids: each cell run logs the tile grid `samples_tiles.png` (rows: images; columns: masked input,
structure, output, ground truth; `samples.png` of runs before it was labelled). When the cells of one table
column show the same images (their input and ground-truth tiles are identical), they are merged into one
labelled grid: input, structure, each method, ground truth; otherwise each cell's own grid is shown with a
caption naming its columns.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from strbench import atomic
from strbench.errors import StrbenchError
from strbench.grids import GRID_COLUMNS, figure_png, labelled_grid_png
from strbench.report import build, figures, load, tables
from strbench.report.load import TableReport
from strbench.report.reference import FIGURE8_EXPERIMENT, TABLES
from strbench.report.render import esc, html_table

SECTION_IDS = ("selection", "table1", "table2", "table3", "paired", "claims", "fig8", "frontier", "samples")
GRID_PAD = 2  # torchvision make_grid padding of samples_tiles.png
MAX_GRID_IMAGES = 4
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1200px;
padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.25rem;border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2.2rem}
h3{font-size:1.05rem}table{border-collapse:collapse;margin:.6rem 0;font-size:.85rem}
th,td{border-bottom:1px solid #ddd;padding:.2rem .5rem;text-align:right;white-space:nowrap}
th{border-bottom:2px solid #555;background:#f6f6f6}td.l{text-align:left}
td.paper{color:#555}td.first-measured{border-top:2px solid #555}
.note{font-size:.82rem;color:#444;margin:.15rem 0}.warn{color:#8a4b00}.missing{color:#8a0000}
.verdict-holds{color:#006400;font-weight:600}.verdict-reversed{color:#8a0000;font-weight:600}
.verdict-missing{color:#777}figure{margin:1rem 0}figcaption{font-size:.82rem;color:#444}
img{max-width:100%;image-rendering:pixelated}nav a{margin-right:.8rem}
.scroll{overflow-x:auto;max-width:100%}
"""


@dataclass
class Section:
    id: str
    title: str
    body: str  # HTML


# ----------------------------------------------------------------------------------------------- html helpers
def md_inline(text: str) -> str:
    """Escape, then the two marks report notes use: `code` -> <code>, **bold** -> <b>."""
    parts = esc(text).split("`")
    out = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    bits = out.split("**")
    return "".join(f"<b>{b}</b>" if i % 2 else b for i, b in enumerate(bits))


def notes_html(notes: Sequence[str], cls: str = "note") -> str:
    return "".join(f'<p class="{cls}">{md_inline(n)}</p>' for n in notes)


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img_html(png: bytes, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{md_inline(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{png_data_uri(png)}" alt="{esc(alt)}">{cap}</figure>'


def page(sections: Sequence[Section], title: str, intro: Sequence[str] = ()) -> str:
    nav = "".join(f'<a href="#{s.id}">{esc(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{s.id}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>{notes_html(intro)}<nav>{nav}</nav>{body}"
            "</body></html>\n")


# ----------------------------------------------------------------------------------------------- sections
def table_section_html(rt: build.ReportTable) -> str:
    out = [f"<p><b>Table {rt.number}.</b> {md_inline(rt.caption)}. Best measured value in bold.</p>",
           html_table(tables.main_table(rt))]
    out.append(notes_html([f"[{i}] {f}" for i, f in enumerate(rt.footnotes, 1)]))
    out.append(notes_html(rt.notes))
    out.append(notes_html([f"Warning: {w}" for w in rt.warnings], "note warn"))
    if len(rt.details):
        out.append(f"<h3>Table {rt.number}, measured cells (95% intervals: bootstrap over images for one seed, "
                   "over seeds and images for several)</h3>")
        out.append(html_table(tables.details_table(rt)))
    return "".join(out)


def paired_section_html(tr: TableReport) -> str:
    rt = tr.table
    title = f"Table {rt.number} (experiment {tr.selection.experiment}, {rt.data})"
    if tr.pairs is None or tr.pairs.empty:
        return f"<h3>{esc(title)}</h3><p class=\"note\">No pairs: the rows need per_image.csv artifacts on common " \
               "cells.</p>"
    return f"<h3>{esc(title)}</h3>" + html_table(tables.paired_table(tr.pairs))


def claims_section_html(claims: pd.DataFrame, notes: Sequence[str]) -> str:
    def verdict(i: int, j: int, c: tables.Cell) -> str | None:  # the verdict column, coloured by its class
        kind = c.text.split(" — ")[0]  # "holds — one training seed: ...": coloured as "holds"
        return f'<span class="verdict-{esc(kind).replace(" ", "-")}">{esc(c.text)}</span>' if j == 3 else None

    return html_table(tables.claims_table(claims), verdict) + notes_html(notes)


def missing_html(e: Exception) -> str:
    return f'<p class="missing">{md_inline(str(e))}</p>'


# ----------------------------------------------------------------------------------------------- samples
def grid_tiles(img: np.ndarray, columns: int = 4, pad: int = GRID_PAD) -> np.ndarray | None:
    """Split a torchvision grid (`columns` tiles per row, `pad` px padding) into tiles (rows, cols, S, S, 3);
    None when the image does not have that geometry."""
    h, w = img.shape[:2]
    s = (w - pad) / columns - pad
    if s <= 0 or not float(s).is_integer():
        return None
    s = int(s)
    n_rows = (h - pad) / (s + pad)
    if not float(n_rows).is_integer() or n_rows < 1:
        return None
    n_rows = int(n_rows)
    tiles = np.empty((n_rows, columns, s, s, img.shape[2]), dtype=img.dtype)
    for i in range(n_rows):
        for j in range(columns):
            y, x = pad + i * (s + pad), pad + j * (s + pad)
            tiles[i, j] = img[y:y + s, x:x + s]
    return tiles


def merge_grids(grids: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str], str | None] | None:
    """One grid (rows: images; columns: input, structure, each method's output, ground truth) from per-cell
    grids of the same images, or None when they do not show the same images (or are not 4-column grids).
    Returns (tiles, column labels, the row whose structure is shown: the first with a non-black one)."""
    tiles = {k: grid_tiles(v) for k, v in grids.items()}
    if not tiles or any(t is None for t in tiles.values()):
        return None
    first = next(iter(tiles.values()))
    n = min(t.shape[0] for t in tiles.values())
    if any(t.shape[2:] != first.shape[2:] for t in tiles.values()):
        return None
    for t in tiles.values():
        if not (np.array_equal(t[:n, 0], first[:n, 0]) and np.array_equal(t[:n, 3], first[:n, 3])):
            return None
    source = next((k for k, t in tiles.items() if t[:n, 1].max() > 0), None)
    structure = tiles[source][:n, 1] if source is not None else first[:n, 1]
    cols = [first[:n, 0], structure] + [t[:n, 2] for t in tiles.values()] + [first[:n, 3]]
    labels = ["input", "structure"] + list(tiles) + ["ground truth"]
    return np.stack(cols, axis=1), labels, source


def _read_png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _grid_bytes(tracking, uri: str, run_id: str) -> bytes:
    """A cell's unlabelled tile grid: samples_tiles.png (runs logging a labelled samples.png), else samples.png
    (runs of earlier versions, where it was the tile grid)."""
    try:
        return tracking.read_artifact_bytes(uri, run_id, "samples_tiles.png")
    except Exception:  # noqa: BLE001 - an older run
        return tracking.read_artifact_bytes(uri, run_id, "samples.png")


def samples_html(tr: TableReport, uri: str) -> str:
    runs = tr.selection.runs
    if runs.empty:
        return ""
    axis = tr.table.axis
    runs = build.labelled(runs, axis)
    tracking = load._tracking()
    out = [f"<h3>Table {tr.table.number} (experiment {esc(tr.selection.experiment)})</h3>"]
    for col in build.column_order(runs["_col"].tolist(), axis, []):
        cell = runs[runs["_col"] == col]
        grids, failed = {}, []
        for label in sorted(cell["_row"].unique(), key=build.case_key):
            r = cell[cell["_row"] == label].iloc[0]  # one seed's grid per row
            try:
                grids[label] = _read_png(_grid_bytes(tracking, uri, r["run_id"]))
            except Exception:  # noqa: BLE001 - a run without the artifact is named below
                failed.append(label)
        if grids:
            merged = merge_grids(grids)
            if merged is not None:
                tiles, labels, source = merged
                struct = f"{source}'s final structure state" if source else "no method with a structure"
                out.append(img_html(labelled_grid_png(tiles, labels, max_images=MAX_GRID_IMAGES), f"samples {col}",
                                    f"{col}: the first {min(tiles.shape[0], MAX_GRID_IMAGES)} test images; columns: "
                                    f"{', '.join(labels)} (structure: {struct})."))
            else:
                for label, g in grids.items():
                    out.append(img_html(_png(g), f"samples {label} {col}",
                                        f"{label}, {col}: rows are test images; columns: {', '.join(GRID_COLUMNS)} "
                                        "(structure black for methods without one)."))
        if failed:
            out.append(notes_html([f"{col}: no samples.png for {', '.join(failed)}."]))
    return "".join(out)


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------- assembly
def build_sections(uri: str, *, experiment: str | None = None, select: dict | None = None) -> list[Section]:
    select = select or {}
    reports: dict[int, TableReport | StrbenchError] = {}
    for n in TABLES:
        try:
            reports[n] = load.table_report(n, experiment, uri, select=select, paired=True)
        except StrbenchError as e:  # no runs, or --run/--profile not in this table's experiment: said there
            reports[n] = e
    said: dict[tuple, list[int]] = {}  # the selection's lines -> the tables it is for (one paragraph per selection)
    for n, tr in reports.items():
        lines = tuple(ln.strip() for ln in tr.selection.lines()) if isinstance(tr, TableReport) else (str(tr),)
        said.setdefault(lines, []).append(n)
    sel_lines = []
    for lines, ns in said.items():
        which = f"Table {ns[0]}" if len(ns) == 1 else "Tables " + ", ".join(map(str, ns))
        sel_lines += [f"{which}: {ln}" for ln in lines]
    sections = [Section("selection", "Runs used", notes_html(sel_lines))]
    for n, tr in reports.items():
        body = table_section_html(tr.table) if isinstance(tr, TableReport) else missing_html(tr)
        sections.append(Section(f"table{n}", f"Table {n}", body))
    paired_body = "".join(paired_section_html(tr) for tr in reports.values() if isinstance(tr, TableReport))
    sections.append(Section("paired", "Paired comparisons",
                            (paired_body + notes_html(build.paired_notes(2000))) if paired_body else
                            missing_html(StrbenchError("no table has runs to compare"))))
    try:
        claims, notes = load.claims_report(uri, experiment, select,
                                           tables={n: t for n, t in reports.items() if isinstance(t, TableReport)})
        sections.append(Section("claims", "The paper's claims", claims_section_html(claims, notes)))
    except StrbenchError as e:
        sections.append(Section("claims", "The paper's claims", missing_html(e)))
    try:
        kl = load.load_kl_trajectories(uri, experiment or FIGURE8_EXPERIMENT, **select)
        png = figure_png(figures.figure8(kl))
        body = img_html(png, "Fig. 8", "Fig. 8: KL divergence between the pixel distribution of the masked (left) and "
                                       "unmasked (right) region of each reverse-process state and the ground truth, "
                                       "per structure variant (lower is better).")
    except StrbenchError as e:
        body = missing_html(e)
    sections.append(Section("fig8", "Fig. 8: structure variants", body))
    try:
        sel, points, notes = load.frontier_report(experiment, uri, select)
        cols = points["columns"].iloc[0] if len(points) else ""
        png = figure_png(figures.figure_frontier(points, title_columns=cols))
        body = (img_html(png, "frontier", f"PSNR (and FID where logged) against NFE per image, one point per (case, "
                                          f"setting), mean over {cols} (experiment `{sel.experiment}`).")
                + html_table(tables.frontier_table(points))
                + notes_html(notes + sel.lines()))
    except StrbenchError as e:
        body = missing_html(e)
    sections.append(Section("frontier", "Quality against compute", body))
    grids = "".join(samples_html(tr, uri) for tr in reports.values() if isinstance(tr, TableReport))
    sections.append(Section("samples", "Sample grids", grids or missing_html(StrbenchError("no runs with samples"))))
    return sections


def write_report(out_dir: str, uri: str, *, experiment: str | None = None, select: dict | None = None) -> Path:
    """Build every section and write OUT/index.html atomically; returns its path."""
    sections = build_sections(uri, experiment=experiment, select=select)
    text = page(sections, "strbench report: Structure Matters (StrDiffusion, CVPR 2024) reproduced",
                ["Measured rows come from the tracked runs listed under Runs used; rows marked (paper) are the "
                 "paper's numbers (reports/paper_reference.yaml)."])
    path = Path(out_dir) / "index.html"
    atomic.write_bytes(path, text.encode("utf-8"))
    return path
