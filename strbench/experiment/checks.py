"""Pre-flight checks of what a run will read, before any tracking store, run or cache entry exists."""
from __future__ import annotations

from pathlib import Path

from strbench.config import Experiment
from strbench.errors import ConfigError, DataError, WeightsError
from strbench.experiment.plan import Cell


def check_resources(exp: Experiment, cells: list[Cell]) -> None:
    """Dataset and mask folders, split lists, weights files and the device: raise one line naming
    the key and the fix."""
    src = exp.source
    seen: set = set()
    for c in cells:
        ds, mk = c.config.dataset, c.config.mask
        splits = ds.splits.model_dump()
        key = (ds.type, ds.root, tuple(sorted(splits.items())), mk.source, mk.path)
        if key in seen:
            continue
        seen.add(key)
        if ds.type == "builtin":
            if ds.root or any(splits.values()):
                raise ConfigError(f"{src}: dataset.root/splits are for folder datasets; dataset.type 'builtin' "
                                  "uses the photos shipped with strbench's dependencies: remove them or set dataset.type")
        else:
            if not ds.root:
                raise ConfigError(f"{src}: dataset.root: required for dataset.type {ds.type!r}; set it in the "
                                  f"YAML or with --set dataset.root=/path/to/{ds.type}")
            root = Path(ds.root).expanduser()
            if not root.is_dir():
                raise DataError(f"{src}: dataset.root: folder {root} does not exist; point dataset.root at the "
                                f"{ds.type} dataset (--set dataset.root=/path)")
            for split, f in splits.items():
                if f and not (Path(f).expanduser().is_file() or (root / f).is_file()):
                    raise DataError(f"{src}: dataset.splits.{split}: file list {f} not found (absolute or "
                                    f"relative to dataset.root {root})")
        if mk.source == "folder":
            if not mk.path:
                raise ConfigError(f"{src}: masks.path: required when masks.source is 'folder'; set it to a folder "
                                  "of mask PNGs (e.g. --set masks.path=/data/irregular_mask/test)")
            if mk.polarity is None:
                raise ConfigError(f"{src}: masks.polarity: required when masks.source is 'folder'; open one mask "
                                  "and set white_is_hole or white_is_known (e.g. --set masks.polarity=white_is_hole)")
            p = Path(mk.path).expanduser()
            if not p.is_dir():
                raise DataError(f"{src}: masks.path: folder {p} does not exist; point it at a folder of mask "
                                "PNGs (e.g. the NVIDIA irregular mask test set)")
    w = exp.metrics.fid_weights
    if (exp.metrics.fid or exp.metrics.kid) and w and not Path(w).expanduser().is_file():
        raise WeightsError(f"{src}: metrics.fid_weights: file {w} not found; give the path of the Inception "
                           "weights file or remove the key to use the built-in converted weights")
    if exp.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{src}: device: 'cuda' requested but CUDA is not available; use auto or cpu")
