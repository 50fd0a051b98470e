"""What the reports compare against and how they are laid out: the paper's numbers (reports/paper_reference.yaml),
its tables' metrics and columns, and the experiment that makes the runs of each table and figure."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from strbench.errors import StrbenchError
from strbench.structure import VARIANTS

REFERENCE_PATH = Path(__file__).resolve().parents[2] / "reports" / "paper_reference.yaml"


@dataclass(frozen=True)
class MetricSpec:
    key: str
    name: str
    higher_is_better: bool
    digits: int
    paper: bool = True  # reported by the paper (False: a column of strbench's own, marked NOT_IN_PAPER)

    @property
    def header(self) -> str:
        """"PSNR↑", "LPIPS↓*" (the mark: not in the paper)."""
        return f"{self.name}{'↑' if self.higher_is_better else '↓'}" + ("" if self.paper else NOT_IN_PAPER)


NOT_IN_PAPER = "*"
METRICS = (MetricSpec("psnr", "PSNR", True, 2), MetricSpec("ssim", "SSIM", True, 3),
           MetricSpec("fid", "FID", False, 2))
# metrics the paper does not report: a table shows each one whose runs logged it (or logged why not)
EXTRA_METRICS = (MetricSpec("lpips", "LPIPS", False, 4, paper=False),
                 MetricSpec("p_ids", "P-IDS", True, 3, paper=False),
                 MetricSpec("u_ids", "U-IDS", True, 3, paper=False))
IDS_DIMENSIONS = 2048  # Inception pool3: P-IDS/U-IDS need many more image pairs than this to mean anything


def run_hint(experiment: str) -> str:
    """The command that makes the runs of a default experiment (its YAML is experiments/<name>.yaml)."""
    return f"strbench run experiments/{experiment}.yaml"


@dataclass(frozen=True)
class TableSpec:
    number: int
    experiment: str  # the MLflow experiment read by default (= the name of experiments/<experiment>.yaml)
    axis: str  # run tag whose values are the column groups: mask_bin or mask_set
    fallbacks: tuple[str, ...] = ()

    @property
    def run_hint(self) -> str:
        return run_hint(self.experiment)


TABLES: dict[int, TableSpec] = {
    1: TableSpec(1, "table1_places2", "mask_bin", fallbacks=("quickstart",)),
    2: TableSpec(2, "ablation_resampling", "mask_set"),
    3: TableSpec(3, "table3_celeba", "mask_bin"),
}
TABLE_COLUMNS = {"mask_set": ["hard", "easy"]}  # the paper's order of Table 2's columns
MASK_SETS_EXAMPLE = "experiments/ablation_resampling.yaml"  # an experiment with Table 2's hard/easy mask sets
FIGURE8_EXPERIMENT = "structure_variants"
FIGURE8_HINT = run_hint(FIGURE8_EXPERIMENT) + " --profile cpu"
FRONTIER_EXPERIMENT = "nfe_frontier"
FRONTIER_FALLBACKS = ("quickstart",)
FRONTIER_HINT = run_hint(FRONTIER_EXPERIMENT)
CLAIM_SOURCES = {"table1": 1, "table2": 2}  # strbench.paired.Claim.source -> the table its runs come from

CASE_ORDER = ("IR-SDE", "RePaint*", "StrDiffusion", "A", "B", "C", "D")
VARIANT_ORDER = VARIANTS  # the paper's order of Fig. 8's legend = the declared order
DATASET_NAMES = {"builtin": "built-in", "psv": "Paris StreetView", "places2": "Places2", "celeba": "CelebA",
                 "folder": "image folder"}
METHOD_NAMES = {"irsde": "IR-SDE", "repaint": "RePaint*", "strdiffusion": "StrDiffusion"}


def load_reference(path: str | os.PathLike | None = None) -> dict:
    """The paper's numbers (reports/paper_reference.yaml), keyed by table number."""
    import yaml

    p = Path(path) if path is not None else REFERENCE_PATH
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise StrbenchError(f"paper reference {p} unreadable ({e.strerror})") from None
    return {int(k): v for k, v in data["tables"].items()}
