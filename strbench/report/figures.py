"""Report figures (matplotlib figures, no pyplot state): Fig. 8 (KL along the reverse process per structure
variant), quality against compute (PSNR, FID against NFE per image), and saving them as PNG and PDF."""
from __future__ import annotations

import io
import os
from pathlib import Path

import pandas as pd

from strbench import atomic
from strbench.errors import StrbenchError
from strbench.report.reference import VARIANT_ORDER


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


def figure_frontier(points: pd.DataFrame, *, title_columns: str = ""):
    """PSNR (and FID where every point has it) against NFE per image: one marker per (case, setting), a line
    per method family through its settings in NFE order (a solver other than euler is its own family, e.g.
    'IR-SDE · mr o2 ode', its points labelled by their steps)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    pts = points[points["nfe"].notna()]
    if pts.empty:
        raise StrbenchError("no run logged `nfe_per_image`: nothing to plot against compute")
    with_fid = pts["fid"].notna().all()
    fig = Figure(figsize=(13 if with_fid else 8, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if with_fid else 1, squeeze=False)[0]
    positive = pts.loc[pts["nfe"] > 0, "nfe"]
    spread = positive.max() / positive.min() if len(positive) else 1.0
    # a colour per method, a marker and line style per solver: 15 lines stay tellable apart
    split = {f: (f.split(" · ", 1) + [""])[:2] for f in pts["family"].unique()}  # family -> [method, solver]
    methods = list(dict.fromkeys(m for m, _ in split.values()))
    solvers = list(dict.fromkeys(s for _, s in split.values()))
    colour = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    style = {s: _STYLES[i % len(_STYLES)] for i, s in enumerate(solvers)}
    for ax, metric, name in zip(axes, ("psnr", "fid"), ("PSNR (dB) ↑", "FID ↓")):
        for family, g in pts.groupby("family", sort=False):
            g = g.sort_values("nfe")
            method, solver = split[family]
            marker, line = style[solver]
            ax.plot(g["nfe"], g[metric], marker=marker, linestyle=line, color=colour[method], label=family)
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
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the plot, not on it
    cols = f" (mean over {title_columns})" if title_columns else ""
    fig.suptitle(f"Quality against compute{cols}")
    return fig


_STYLES = [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."), ("v", (0, (5, 1))), ("P", (0, (1, 1)))]


def _point_text(label: str, family: str) -> str:
    """What sets a point apart within its line: the setting ('u3', 'jump_n_sample=2'); '' for a lone case."""
    if " [" in label:
        return label.split(" [", 1)[1].rstrip("]")
    if " · " in family and label.split()[-1].isdigit():  # a solver's line: the point is its number of steps
        return label.split()[-1]
    base = family.split(" (")[0]
    return label[len(base):].strip() if label.startswith(base) else label


def save_figure(fig, out_dir: str | os.PathLike, stem: str) -> list[Path]:
    """Write `stem`.png and `stem`.pdf atomically; returns the paths."""
    paths = []
    for fmt, kw in (("png", {"dpi": 150}), ("pdf", {})):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, **kw)
        path = Path(out_dir) / f"{stem}.{fmt}"
        atomic.write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths
