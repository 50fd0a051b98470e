"""Labelled image grids (matplotlib, no file I/O): a cell run's ``samples.png`` (logged through MLflow's
log_image) and the HTML report's side-by-side comparisons draw their tiles with a label over every column and,
optionally, beside every row."""
from __future__ import annotations

import io
from typing import Optional, Sequence

import numpy as np

GRID_COLUMNS = ("masked input", "structure", "output", "ground truth")  # a cell's samples grid, left to right


def figure_png(fig, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def labelled_grid_png(tiles: np.ndarray, labels: Sequence[str], row_labels: Optional[Sequence[str]] = None,
                      max_images: Optional[int] = None, title: str = "") -> bytes:
    """PNG of tiles (rows, cols, S, S, C; uint8 or floats in [0, 1]) with a label above every column and, when
    given, one at the left of every row (e.g. image and mask ids, the row's PSNR)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = tiles.shape[0] if max_images is None else min(tiles.shape[0], max_images)
    cols = tiles.shape[1]
    left = 0.9 if row_labels else 0.0
    fig = Figure(figsize=(1.25 * cols + left, 1.25 * rows + 0.35 + (0.25 if title else 0)), layout="constrained")
    FigureCanvasAgg(fig)
    if title:
        fig.suptitle(title, fontsize=7)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i in range(rows):
        for j in range(cols):
            ax = axes[i][j]
            ax.imshow(np.squeeze(tiles[i, j]), interpolation="nearest", cmap="gray", vmin=0,
                      vmax=255 if tiles.dtype == np.uint8 else 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(wrap_label(labels[j]), fontsize=6.5)
            if j == 0 and row_labels:
                ax.set_ylabel(row_labels[i], fontsize=5.5, rotation=0, ha="right", va="center")
    return figure_png(fig, dpi=100)


def wrap_label(label: str, width: int = 24) -> str:
    """A short column title: the case, then up to two of its settings with keys cut to their last two parts
    (`train.roles.discriminator.steps=60` -> `discriminator.steps=60`); captions name every column in full."""
    import textwrap

    case, _, rest = label.partition(" [")
    lines = textwrap.wrap(case, width) or [""]
    for item in [x.strip() for x in rest.rstrip("]").split(", ") if x.strip()][:2]:
        key, eq, value = item.partition("=")
        short = ".".join(key.split(".")[-2:]) + eq + value
        lines.append(short if len(short) <= width else short[:width - 1] + "…")
    return "\n".join(lines)
