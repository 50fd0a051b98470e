"""The experiment runner: expand sweeps into frozen hashed cells, train what is missing through the
model cache, sample, score and log each cell to MLflow; resume where a previous run stopped.

    exp = config.load_experiment("experiments/quickstart.yaml")
    cells = expand(exp)                      # frozen, hashed, before anything runs
    summary = run_experiment(exp)            # what `strbench run` does
    metrics = evaluate(exp, split="val")     # what `strbench tune` does per trial

The runner knows no equation: it calls strbench.train, strbench.sample and strbench.metrics.
Only strbench.tracking talks to MLflow. Everything is validated (schema, every cell's training and
sampling settings, dataset and mask folders, weights files) before tracking is opened, so bad input
never creates an MLflow run or database.
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import json
import math
import os
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Optional

from strbench import atomic
from strbench import config as cfgmod
from strbench.config import Experiment
from strbench.errors import ConfigError, DataError, StrbenchError, WeightsError
from strbench.hashing import config_hash

ReportFn = Callable[[int, dict], None]
BOOKKEEPING = ("checkpoint_every", "log_every")  # training fields that do not change a model


# ================================================================================================
# frozen data
# ================================================================================================


def freeze(x: Any) -> Any:
    """Deep read-only copy: mappings -> MappingProxyType, lists -> tuples."""
    if isinstance(x, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in x.items()})
    if isinstance(x, (list, tuple)):
        return tuple(freeze(v) for v in x)
    return x


def thaw(x: Any) -> Any:
    """Plain dicts and lists again (for JSON/YAML and for editing a copy)."""
    if isinstance(x, Mapping):
        return {k: thaw(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [thaw(v) for v in x]
    return x


@dataclass(frozen=True)
class ModelSpec:
    """A model to train once and share: its role, the TrainConfig dict and the training data spec."""

    role: str
    hash: str  # = TrainConfig.hash(role), also the checkpoint's config_hash
    train: Mapping  # TrainConfig fields
    data: Mapping  # {"dataset": {...}, "masks": {...}} of the training data
    needs: tuple = ()  # ModelSpecs that must exist before this one trains (structure net for guidance "net")

    @property
    def short(self) -> str:
        return self.hash[:12]


@dataclass(frozen=True)
class Cell:
    """One evaluation: a method on one mask bin with one resolved configuration (frozen, hashed)."""

    index: int
    hash: str
    config: Mapping  # resolved, read-only (see cell_config)
    axes: Mapping  # sweep values: case, method, mask_set, mask_bin, variant, seed, and any swept key
    models: tuple  # ModelSpec per role the method needs

    @property
    def short(self) -> str:
        return self.hash[:12]

    @property
    def label(self) -> str:
        a = self.axes
        extra = " ".join(f"{k}={v}" for k, v in a.items()
                         if k not in ("case", "method", "mask_set", "mask_bin", "variant", "seed", "n_mask_sets"))
        var = f" {a['variant']}" if a.get("variant") else ""
        mset = f"{a['mask_set']}/" if a.get("n_mask_sets", 1) > 1 else ""
        return f"{a['case']} {mset}{a['mask_bin']}{var} seed={a['seed']}" + (f" {extra}" if extra else "")

    def model(self, role: str) -> ModelSpec:
        for m in self.models:
            if m.role == role:
                return m
        raise KeyError(role)


# ================================================================================================
# expansion
# ================================================================================================


def _bin_label(lo: float, hi: float) -> str:
    from strbench.masks import bin_label

    return bin_label(lo, hi)


def _axis_values(exp: Experiment) -> list[tuple[str, list]]:
    return [(k, list(v)) for k, v in exp.sweep.items()]


def model_specs(resolved: Mapping, roles: Iterable[str], *, source: str = "<dict>") -> dict[str, ModelSpec]:
    """TrainConfig and data spec of each role (with its dependencies); validated by strbench.train."""
    from strbench.train import TrainConfig

    ds, tr, nets = resolved["dataset"], resolved["train"], resolved["nets"]
    data = {
        "dataset": {"type": ds["type"], "root": ds["root"], "size": ds["size"], "resize": ds["resize"],
                    "split_file": ds["splits"]["train"], "limit": ds["train_limit"],
                    "test_fraction": ds["test_fraction"]},
        "masks": {**resolved["masks"]["train"], "seed": resolved["seed"], "size": ds["size"]},
    }
    sdes = {"sde": cfgmod.sde_dict(resolved, "texture"), "sde_structure": None}
    if any(v is not None for v in resolved["schedule"]["structure"].values()):
        sdes["sde_structure"] = cfgmod.sde_dict(resolved, "structure")
    out: dict[str, ModelSpec] = {}

    def spec(role: str) -> ModelSpec:
        if role in out:
            return out[role]
        needs: tuple = ()
        data_r = dict(data)
        if role in ("texture", "discriminator") and tr["guidance"] == "net":
            needs = (spec("structure"),)
            data_r["structure_model"] = needs[0].hash
        fields = {k: v for k, v in tr.items() if k != "roles"}
        for k, v in (tr["roles"].get(role) or {}).items():
            if v is not None:
                fields[k] = v
        net = dict(nets["roles"].get(role) or {})
        if role != "discriminator":
            net = {**nets["unet"], **net}
        tc = {**fields, "seed": resolved["seed"], "preset": nets["preset"], "net": net, **sdes,
              "variant": resolved["variant"], "canny_sigma": resolved["structure"]["canny_sigma"],
              "data_id": config_hash(data_r)}
        try:
            cfg = TrainConfig.from_dict(tc, path="train")
            cfg.validate(role)
        except ConfigError as e:
            raise ConfigError(f"{source}: model {role!r} (train/nets sections): {e}") from None
        out[role] = ModelSpec(role=role, hash=cfg.hash(role), train=freeze(cfg.to_dict()), data=freeze(data_r),
                              needs=needs)
        return out[role]

    for r in roles:
        spec(r)
    return out


def sampler_settings(resolved: Mapping, method: Mapping) -> dict:
    """Keyword settings of strbench.sample.sample for this method (None = the sampler's default)."""
    s = {k: v for k, v in method.items() if k != "method" and v is not None}
    if method["method"] == "strdiffusion" and cfgmod.uses_structure(method):
        st = resolved["structure"]
        s["variant"] = resolved["variant"]
        s["canny_sigma"] = st["test_canny_sigma"] if st["test_canny_sigma"] is not None else st["canny_sigma"]
    return s


def cell_config(resolved: Mapping, case: str, method: Mapping, mask_set: str, mset: Mapping,
                lo: float, hi: float, models: Mapping[str, ModelSpec]) -> dict:
    """Everything one cell's result depends on (plus its models' full specs)."""
    m = resolved["masks"]
    uses = cfgmod.uses_structure(method)
    ds = resolved["dataset"]
    return {
        "case": case,
        "method": dict(method),
        "settings": sampler_settings(resolved, method),
        "mask": {"set": mask_set, "lo": lo, "hi": hi, "label": _bin_label(lo, hi), "per_bin": mset["per_bin"],
                 "families": list(mset["families"]), "bins": [list(b) for b in mset["bins"]],
                 "source": m["source"], "path": m["path"], "polarity": m["polarity"], "seed": m["seed"],
                 "val_seed": m["val_seed"]},
        "dataset": {"type": ds["type"], "root": ds["root"], "size": ds["size"], "resize": ds["resize"],
                    "splits": dict(ds["splits"]), "test_fraction": ds["test_fraction"]},
        "variant": resolved["variant"] if uses else None,
        "schedule": {"texture": cfgmod.sde_dict(resolved, "texture"),
                     "structure": cfgmod.sde_dict(resolved, "structure")},
        "sample": dict(resolved["sample"]),
        "metrics": dict(resolved["metrics"]),
        "seed": resolved["seed"],
        "models": {r: {"hash": s.hash, "train": thaw(s.train), "data": thaw(s.data),
                       "needs": [n.hash for n in s.needs]} for r, s in models.items()},
    }


def cell_hash(config: Mapping) -> str:
    """Hash of what determines a cell's result: models by their hash, bookkeeping left out."""
    c = thaw(config)
    c["models"] = {r: m["hash"] for r, m in c["models"].items()}
    return config_hash(c)


def expand(exp: Experiment) -> list[Cell]:
    """All cells of the experiment (every shard): sweep axes x methods x mask sets x bins, deduplicated
    (e.g. IR-SDE does not depend on the structure variant), in a stable order grouped by model."""
    from strbench import sample as sample_mod

    base = exp.resolved()
    axes = _axis_values(exp)
    sets = exp.mask_sets()
    n_sets = len(sets)
    cells: list[Cell] = []
    seen: set[str] = set()
    for combo in itertools.product(*[vals for _, vals in axes]):
        r = copy.deepcopy(base)
        r["sweep"] = {}
        for (key, _), value in zip(axes, combo):
            cfgmod.set_path(r, key, copy.deepcopy(value), source=f"{exp.source}: sweep.{key}")
        rexp = cfgmod.validate_dict(r, source=f"{exp.source} (sweep {dict(zip([k for k, _ in axes], combo))})")
        r = rexp.resolved()
        rsets = rexp.mask_sets() if axes else sets
        for case, method in r["methods"].items():
            roles = cfgmod.models_for(method)
            specs = model_specs(r, roles, source=exp.source)
            try:
                sample_mod.resolve_settings(method["method"], sampler_settings(r, method))
            except ConfigError as e:
                raise ConfigError(f"{exp.source}: methods.{case}: {e}") from None
            for set_name, mset in rsets.items():
                for lo, hi in mset["bins"]:
                    cc = cell_config(r, case, method, set_name, mset, lo, hi, specs)
                    h = cell_hash(cc)
                    if h in seen:
                        continue
                    seen.add(h)
                    ax = {"case": case, "method": method["method"], "mask_set": set_name,
                          "mask_bin": _bin_label(lo, hi), "variant": cc["variant"], "seed": r["seed"],
                          **{k: v for (k, _), v in zip(axes, combo) if k not in ("variant", "seed")}}
                    if n_sets > 1:
                        ax["n_mask_sets"] = n_sets
                    cells.append(Cell(index=len(cells), hash=h, config=freeze(cc), axes=freeze(ax),
                                      models=tuple(specs[x] for x in roles)))
    return cells


def experiment_hash(cells: list[Cell]) -> str:
    return config_hash(sorted(c.hash for c in cells))


def shard_cells(cells: list[Cell], index: int, count: int) -> list[Cell]:
    """Cells of one shard: whole model groups go to one shard (models are trained once per machine)
    when there are at least `count` groups, else cells are dealt round-robin."""
    if count <= 1:
        return list(cells)
    groups: dict[tuple, int] = {}
    for c in cells:
        groups.setdefault(tuple(m.hash for m in c.models), len(groups))
    if len(groups) >= count:
        return [c for c in cells if groups[tuple(m.hash for m in c.models)] % count == index]
    return [c for c in cells if c.index % count == index]


def unique_models(cells: Iterable[Cell]) -> list[ModelSpec]:
    out: dict[str, ModelSpec] = {}

    def add(m: ModelSpec):
        for n in m.needs:
            add(n)
        out.setdefault(m.hash, m)

    for c in cells:
        for m in c.models:
            add(m)
    return list(out.values())


# ================================================================================================
# resource checks (before tracking is opened)
# ================================================================================================


def check_resources(exp: Experiment, cells: list[Cell]) -> None:
    """Dataset and mask folders, split lists, weights files and the device: raise one line naming
    the key and the fix."""
    src = exp.source
    seen: set = set()
    for c in cells:
        ds, mk = c.config["dataset"], c.config["mask"]
        key = (ds["type"], ds["root"], tuple(sorted((ds["splits"] or {}).items())), mk["source"], mk["path"])
        if key in seen:
            continue
        seen.add(key)
        if ds["type"] == "builtin":
            if ds["root"] or any(ds["splits"].values()):
                raise ConfigError(f"{src}: dataset.root/splits are for folder datasets; dataset.type 'builtin' "
                                  "uses the photos shipped with strbench's dependencies: remove them or set dataset.type")
        else:
            if not ds["root"]:
                raise ConfigError(f"{src}: dataset.root: required for dataset.type {ds['type']!r}; set it in the "
                                  f"YAML or with --set dataset.root=/path/to/{ds['type']}")
            root = Path(ds["root"]).expanduser()
            if not root.is_dir():
                raise DataError(f"{src}: dataset.root: folder {root} does not exist; point dataset.root at the "
                                f"{ds['type']} dataset (--set dataset.root=/path)")
            for split, f in ds["splits"].items():
                if f and not (Path(f).expanduser().is_file() or (root / f).is_file()):
                    raise DataError(f"{src}: dataset.splits.{split}: file list {f} not found (absolute or "
                                    f"relative to dataset.root {root})")
        if mk["source"] == "folder":
            if not mk["path"]:
                raise ConfigError(f"{src}: masks.path: required when masks.source is 'folder'; set it to a folder "
                                  "of mask PNGs (e.g. --set masks.path=/data/irregular_mask/test)")
            if mk["polarity"] is None:
                raise ConfigError(f"{src}: masks.polarity: required when masks.source is 'folder'; open one mask "
                                  "and set white_is_hole or white_is_known (e.g. --set masks.polarity=white_is_hole)")
            p = Path(mk["path"]).expanduser()
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


# ================================================================================================
# data, masks and the model cache
# ================================================================================================


class Resources:
    """Datasets, mask sets and models of one process, memoised; models are cached on disk."""

    def __init__(self, cache_dir: str | os.PathLike, device: str = "auto"):
        from strbench.train import resolve_device

        self.root = Path(cache_dir)
        self.device = resolve_device(device)
        self._datasets: dict = {}
        self._masks: dict = {}
        self._models: dict = {}
        self.failed: dict[str, str] = {}  # model hash -> error (do not retrain a diverged model twice)

    # ---------------------------------------------------------------- data
    def dataset(self, ds: Mapping, split: str, *, limit: Optional[int] = None):
        from strbench.data import make_dataset

        resize = ds["resize"] if split == "train" or ds["resize"] != "random_crop" else "center_crop"
        cfg = {"type": ds["type"], "size": ds["size"], "split": split}
        if ds["type"] != "builtin":
            splits = {k: v for k, v in (ds.get("splits") or {}).items() if v}
            if ds.get("split_file"):
                splits["train"] = ds["split_file"]
            cfg.update(root=ds["root"], resize=resize, splits=splits)
            if ds["type"] == "folder" and ds.get("test_fraction") is not None:
                cfg["test_fraction"] = ds["test_fraction"]
        if limit:
            cfg["limit"] = limit
        key = json.dumps(cfg, sort_keys=True)
        if key not in self._datasets:
            self._datasets[key] = make_dataset(cfg)
        return self._datasets[key]

    def train_masks(self, spec: Mapping):
        from strbench.masks import random_masks

        key = json.dumps(thaw(spec), sort_keys=True)
        if key not in self._masks:
            self._masks[key] = random_masks(spec["count"], spec["size"], seed=spec["seed"],
                                            ratio_range=tuple(spec["ratio"]), families=tuple(spec["families"]))
        return self._masks[key]

    def eval_masks(self, mask: Mapping, size: int, split: str):
        """Known masks (n, 1, H, W) of one bin for the test or val split, and their file names."""
        from strbench import masks as masks_mod

        lo, hi, n = mask["lo"], mask["hi"], mask["per_bin"]
        if mask["source"] == "generator":
            seed = mask["seed"] if split == "test" else mask["val_seed"]
            spec = {"size": size, "bins": mask["bins"], "per_bin": n, "seed": seed, "families": mask["families"]}
            key = json.dumps(spec, sort_keys=True)
            if key not in self._masks:
                out = self.root / "masks" / config_hash(spec)[:16]
                self._masks[key] = masks_mod.build_mask_set(out, size, bins=[tuple(b) for b in mask["bins"]],
                                                            per_bin=n, seed=seed, families=mask["families"])
            sel = self._masks[key].select(lo, hi)
        else:
            key = json.dumps([mask["path"], size, mask["polarity"], lo, hi, 2 * n])
            if key not in self._masks:  # test: the first n masks of the bin; val: the next n
                self._masks[key] = masks_mod.load_mask_folder(mask["path"], size, mask["polarity"],
                                                              bins=[(lo, hi)], per_bin=2 * n)
            full = self._masks[key].select(lo, hi)
            if len(full) == 0:
                raise DataError(f"masks.path: no mask in {mask['path']} has a hole ratio in {mask['label']} "
                                f"({lo}, {hi}]; change masks.bins or the mask folder")
            start = 0 if split == "test" or len(full) < 2 * n else n  # val: the next masks when there are enough
            idx = list(range(start, min(start + n, len(full))))
            sel = masks_mod.MaskSet(full.masks[idx], full.ratios[idx], tuple(full.bin_of[i] for i in idx),
                                    masks_mod.content_hash(full.masks[idx]),
                                    tuple(full.files[i] for i in idx) if full.files else ())
        if len(sel) == 0:
            raise DataError(f"no {split} mask in bin {mask['label']}")
        return sel

    # ---------------------------------------------------------------- models
    def model_dir(self, spec: ModelSpec) -> Path:
        return self.root / "models" / spec.hash

    def model_status(self, spec: ModelSpec) -> str:
        d = self.model_dir(spec)
        if (d / "complete.json").is_file():
            return "cached"
        if (d / "model.pt").is_file():
            return "partial"
        return "missing"

    def model(self, spec: ModelSpec, *, on_train: Optional[Callable[[ModelSpec], Any]] = None,
              callback: Optional[Callable[[dict], Any]] = None):
        """The trained network of `spec`: memoised, else loaded from the cache, else trained (resuming a
        partial checkpoint). `on_train(spec)` is called before training starts."""
        from strbench.train import TrainConfig, load_model, train_model

        if spec.hash in self._models:
            return self._models[spec.hash]
        if spec.hash in self.failed:
            raise StrbenchError(f"model {spec.role} {spec.short} failed earlier in this run: {self.failed[spec.hash]}")
        d = self.model_dir(spec)
        ckpt = d / "model.pt"
        if self.model_status(spec) == "cached":
            net = load_model(ckpt, expected_hash=spec.hash, device=self.device)
        else:
            deps = {n.role: self.model(n, on_train=on_train, callback=callback) for n in spec.needs}
            d.mkdir(parents=True, exist_ok=True)
            atomic.write_text(d / "config.json", json.dumps({"role": spec.role, "hash": spec.hash,
                                                             "train": thaw(spec.train), "data": thaw(spec.data)},
                                                            indent=1, sort_keys=True))
            if on_train is not None:
                on_train(spec)
            cfg = TrainConfig.from_dict(thaw(spec.train))
            ds = self.dataset(spec.data["dataset"], "train", limit=spec.data["dataset"]["limit"])
            masks = self.train_masks(spec.data["masks"])
            t0 = time.time()
            try:
                net = train_model(spec.role, cfg, ds, masks, ckpt_path=ckpt, callback=callback, device=self.device,
                                  structure_net=deps.get("structure"))
            except StrbenchError as e:
                self.failed[spec.hash] = str(e)
                raise
            atomic.write_text(d / "complete.json", json.dumps({"role": spec.role, "hash": spec.hash, "steps": cfg.steps,
                                                               "train_seconds": time.time() - t0}))
        net.eval()
        self._models[spec.hash] = net
        return net


# ================================================================================================
# evaluating one cell
# ================================================================================================


@dataclass
class CellResult:
    metrics: dict  # psnr, ssim, fid?, kid?, *_ci_low/high, nfe_per_image, sec_per_image, n_images
    per_image: Any  # pandas DataFrame: image_id, hole_ratio, psnr, ssim
    tags: dict  # fid_missing / protocol tags
    artifacts: dict = field(default_factory=dict)  # name -> local file


def _pick_images(ds, n: int) -> tuple[list[int], Any]:
    """n images spread evenly over the split (cycled when it has fewer)."""
    import torch

    m = len(ds)
    if m == 0:
        raise DataError("the evaluation split has no images")
    if n <= m:
        idx = [int(round(i * (m - 1) / max(n - 1, 1))) for i in range(n)] if n > 1 else [0]
    else:
        idx = [i % m for i in range(n)]
    return idx, torch.stack([ds[i] for i in idx]).float()


class _Recorder:
    """Sampler callback: progress, trajectory frames of the first image, KL per level (Fig. 8)."""

    def __init__(self, T: int, frames: int, kl: Optional[dict], gt, known, bar, done_levels: int):
        self.T, self.kl, self.gt, self.known, self.bar, self.base = T, kl, gt, known, bar, done_levels
        # the sampler reports states from level T-1 down to 0
        self.frame_levels = sorted({round((T - 1) * (1 - i / (frames - 1))) for i in range(frames)}, reverse=True)
        self.frames: dict[int, tuple] = {}
        self.kl_rows: dict[int, dict] = {}
        self.min_t = T

    def __call__(self, d: dict) -> None:
        t = int(d["t"])
        if d.get("phase", "step") != "step":
            return
        if t < self.min_t:
            self.min_t = t
            if self.bar is not None:
                self.bar.n = self.base + (self.T - t)
                self.bar.refresh()
        if self.frames is not None and t in self.frame_levels:
            x = d.get("x")
            self.frames[t] = (d["y"][:1].detach().float().cpu().clone(),
                              None if x is None else x[:1].detach().float().cpu().clone())
        if self.kl is not None and t % self.kl["every"] == 0:
            from strbench.metrics import kl_regions

            r = kl_regions(d["y"].float(), self.gt, self.known, bins=self.kl["bins"])
            self.kl_rows[t] = {k: v for k, v in r.items()}


def _progress(quiet: bool, **kw):
    """A tqdm bar on stderr: off with -q, and off when stderr is not a terminal (logs stay readable)."""
    from tqdm.auto import tqdm

    return tqdm(disable=True if quiet else None, dynamic_ncols=True, **kw)


def evaluate_cell(cell_cfg: Mapping, res: Resources, *, split: str = "test", quiet: bool = True,
                  report: Optional[ReportFn] = None, step0: int = 0, workdir: Optional[Path] = None,
                  on_train: Optional[Callable[[ModelSpec], Any]] = None,
                  train_callback: Optional[Callable[[dict], Any]] = None) -> CellResult:
    """Train what is missing, sample the cell's images of `split`, score them; artifacts go to workdir."""
    import numpy as np
    import pandas as pd
    import torch

    from strbench import metrics as M
    from strbench.sample import Models, sample
    from strbench.sde import make_sde_pair

    c = cell_cfg
    specs = {r: _spec_from_cfg(r, c["models"]) for r in c["models"]}
    nets = {r: res.model(s, on_train=on_train, callback=train_callback) for r, s in specs.items()}
    models = Models(**nets)
    size = c["dataset"]["size"]
    known_all = res.eval_masks(c["mask"], size, split).masks.float()
    n = known_all.shape[0]
    ds = res.dataset(c["dataset"], split)
    image_ids, images = _pick_images(ds, n)
    tex, st = dict(c["schedule"]["texture"]), dict(c["schedule"]["structure"])
    sdes = make_sde_pair(tex, st)
    T = sdes.texture.T
    mcfg = c["metrics"]
    batch = c["sample"]["batch"]
    dev = res.device
    outputs, structures = [], []
    nfe_total, sample_sec = 0, 0.0
    frames = None
    kl_acc: dict[tuple, list] = {}
    rows = []
    n_batches = math.ceil(n / batch)
    bar = _progress(quiet, total=n_batches * T, desc=f"sample {c['case']} {c['mask']['label']}", leave=False,
                    unit="lvl")
    try:
        for b in range(n_batches):
            sl = slice(b * batch, min((b + 1) * batch, n))
            img, known = images[sl].to(dev), known_all[sl].to(dev)
            kl = {"every": mcfg["trajectory_every"], "bins": mcfg["kl_bins"]} if mcfg["trajectories"] else None
            rec = _Recorder(T, mcfg["strip_frames"], kl, img, known, bar, b * T)
            if b > 0:
                rec.frames = None
            gen = torch.Generator(device=dev)
            gen.manual_seed(int(c["seed"]) * 1_000_003 + b)
            t0 = time.perf_counter()
            out = sample(c["method"]["method"], models, img, known, sdes=sdes, generator=gen, callback=rec,
                         **thaw(c["settings"]))
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            sample_sec += time.perf_counter() - t0
            nfe_total += out.nfe * (sl.stop - sl.start)
            outputs.append(out.output.detach().float().cpu())
            s = out.info.get("structure")
            structures.append(None if s is None else s.detach().float().cpu())
            if b == 0:
                frames = rec.frames
            for t, v in rec.kl_rows.items():
                for region, kv in v.items():
                    if kv is not None:
                        kl_acc.setdefault((t, region), []).append((kv, sl.stop - sl.start))
            df_b = M.image_metrics(outputs[-1], images[sl], known_all[sl], protocol=mcfg["protocol"])
            rows.append(df_b)
            if report is not None:
                so_far = pd.concat(rows)
                report(step0 + b, {"psnr": float(np.mean(so_far["psnr"])), "ssim": float(np.mean(so_far["ssim"])),
                                   "n_images": int(len(so_far))})
            bar.n = (b + 1) * T
            bar.refresh()
    finally:
        bar.close()
    pred = torch.cat(outputs)
    df = pd.concat(rows, ignore_index=True)
    protocol = M.protocol_record(mcfg["protocol"], size, size, n)
    df.insert(0, "image_id", image_ids)
    df = df[["image_id", "hole_ratio", "psnr", "ssim"]]
    metrics: dict[str, float] = {"psnr": float(np.mean(df["psnr"])), "ssim": float(np.mean(df["ssim"])),
                                 "n_images": float(n), "nfe_per_image": nfe_total / n,
                                 "sec_per_image": sample_sec / n, "hole_ratio": float(np.mean(df["hole_ratio"]))}
    if mcfg["bootstrap"] > 0:
        for k in ("psnr", "ssim"):
            lo, hi = M.bootstrap_ci(df[k].to_numpy(), n=mcfg["bootstrap"], seed=int(c["seed"]))
            if math.isfinite(lo):
                metrics[f"{k}_ci_low"], metrics[f"{k}_ci_high"] = lo, hi
    tags = {"strbench.metric_protocol": json.dumps(protocol, sort_keys=True, default=str)}
    which = tuple(k for k in ("fid", "kid") if mcfg[k])
    missing = []
    if which:
        inc = M.inception_metrics(pred.to(dev), images.to(dev), weights_path=mcfg["fid_weights"], which=which)
        for k, r in inc.items():
            if r.value is None:
                missing.append(f"{k}: {r.reason}")
            else:
                metrics[k] = float(r.value)
            tags[f"strbench.{k}_protocol"] = json.dumps(r.protocol, sort_keys=True, default=str)
    for k in ("fid", "kid"):
        if k not in which:
            missing.append(f"{k}: off in the config (metrics.{k}: false)")
    if "fid" not in metrics:
        tags["strbench.fid_missing"] = "; ".join(m for m in missing if m.startswith("fid"))
    if "kid" not in metrics:
        tags["strbench.kid_missing"] = "; ".join(m for m in missing if m.startswith("kid"))
    result = CellResult(metrics=metrics, per_image=df, tags=tags)
    if workdir is not None:
        result.artifacts = _write_artifacts(workdir, c, images, known_all, pred, structures, frames, kl_acc, df, T,
                                            protocol)
    return result


def _spec_from_cfg(role: str, models: Mapping) -> ModelSpec:
    """Rebuild a ModelSpec from a cell config's `models` section (dependencies by hash)."""
    m = models[role]
    by_hash = {mm["hash"]: r for r, mm in models.items()}
    missing = [h for h in (m.get("needs") or ()) if h not in by_hash]
    if missing:
        raise ConfigError(f"cell config: model {role!r} needs model(s) {missing} that the cell does not list")
    needs = tuple(_spec_from_cfg(by_hash[h], models) for h in (m.get("needs") or ()))
    return ModelSpec(role=role, hash=m["hash"], train=freeze(m["train"]), data=freeze(m["data"]), needs=needs)


def _tile(x, size: int):
    import torch.nn.functional as F

    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    scale = max(1, math.ceil(96 / size))
    return F.interpolate(x.clamp(0, 1), scale_factor=scale, mode="nearest") if scale > 1 else x.clamp(0, 1)


def _write_artifacts(d: Path, c: Mapping, images, known, pred, structures, frames, kl_acc, df, T, protocol) -> dict:
    import pandas as pd
    import torch
    from torchvision.utils import save_image

    d.mkdir(parents=True, exist_ok=True)
    files = {}
    size = images.shape[-1]
    # resolved config
    (d / "config.yaml").write_text(cfgmod.dump_yaml(thaw(c)))
    files["config.yaml"] = d / "config.yaml"
    # per-image metrics
    df.to_csv(d / "per_image.csv", index=False)
    files["per_image.csv"] = d / "per_image.csv"
    (d / "protocol.json").write_text(json.dumps(protocol, indent=1, sort_keys=True, default=str))
    # samples: masked input | structure | output | ground truth
    k = min(int(c["metrics"]["grid_images"]), images.shape[0])
    struct = torch.cat([s if s is not None else torch.zeros(images[:0].shape[0], 1, size, size)
                        for s in structures]) if any(s is not None for s in structures) else None
    tiles = []
    for i in range(k):
        s = struct[i:i + 1] if struct is not None else torch.zeros(1, 1, size, size)
        tiles += [_tile(images[i:i + 1] * known[i:i + 1], size), _tile(s, size), _tile(pred[i:i + 1], size),
                  _tile(images[i:i + 1], size)]
    save_image(torch.cat(tiles), d / "samples.png", nrow=4, padding=2, pad_value=1.0)
    files["samples.png"] = d / "samples.png"
    # trajectory strip of the first image: texture row (and structure row)
    if frames:
        levels = sorted(frames, reverse=True)
        row_y = [_tile(frames[t][0], size) for t in levels]
        row_x = [_tile(frames[t][1], size) for t in levels if frames[t][1] is not None]
        grid = torch.cat(row_y + (row_x if len(row_x) == len(row_y) else []))
        save_image(grid, d / "trajectory.png", nrow=len(levels), padding=2, pad_value=1.0)
        (d / "trajectory_levels.json").write_text(json.dumps({"levels": levels, "T": T}))
        files["trajectory.png"] = d / "trajectory.png"
    if kl_acc:
        out = []
        for (t, region), vals in sorted(kl_acc.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
            w = sum(n for _, n in vals)
            out.append({"step": T - t, "t": t, "region": region, "kl": sum(v * n for v, n in vals) / w})
        pd.DataFrame(out, columns=["step", "t", "region", "kl"]).to_csv(d / "kl_trajectory.csv", index=False)
        files["kl_trajectory.csv"] = d / "kl_trajectory.csv"
    return files


# ================================================================================================
# running an experiment
# ================================================================================================


@dataclass
class RunSummary:
    experiment: str
    n_cells: int
    done_before: int = 0
    ran: int = 0
    failed: list = field(default_factory=list)  # (label, hash, error)
    elsewhere: list = field(default_factory=list)  # labels of cells running in another live process
    stale_marked: int = 0
    parent_run_id: Optional[str] = None
    seconds: float = 0.0
    results: dict = field(default_factory=dict)  # cell hash -> metrics

    @property
    def ok(self) -> bool:
        return not self.failed


def _cell_tags(cell: Cell, exp_hash: str) -> dict:
    c, a = cell.config, cell.axes
    m = c["method"]
    tags = {"strbench.method": m["method"], "strbench.case": c["case"], "strbench.variant": c["variant"] or "none",
            "strbench.dataset": c["dataset"]["type"], "strbench.mask_set": c["mask"]["set"],
            "strbench.mask_bin": c["mask"]["label"], "strbench.mask_lo": c["mask"]["lo"],
            "strbench.mask_hi": c["mask"]["hi"], "strbench.seed": c["seed"], "strbench.size": c["dataset"]["size"],
            "strbench.experiment_hash": exp_hash, "strbench.split": "test", "strbench.cell_index": cell.index}
    if m["method"] == "strdiffusion":
        tags["strbench.ablation"] = m["ablation"]
        tags["strbench.mode"] = m["mode"]
    for r, spec in c["models"].items():
        tags[f"strbench.model.{r}"] = spec["hash"]
    for k, v in a.items():
        if k not in ("case", "method", "mask_set", "mask_bin", "variant", "seed", "n_mask_sets"):
            tags[f"strbench.axis.{k}"] = v
    return tags


def _cell_params(cell: Cell, exp: Experiment) -> dict:
    from strbench.tracking import flatten

    c = thaw(cell.config)
    c["models"] = {r: m["hash"] for r, m in c["models"].items()}
    r = exp.resolved()
    c["train"] = r["train"]
    c["nets"] = r["nets"]
    c["structure"] = r["structure"]
    return flatten(c)


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        from tqdm.auto import tqdm

        tqdm.write(text)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM behaves like Ctrl-C (runs are marked KILLED, nothing is left half-written)."""
    if not hasattr(signal, "SIGTERM") or sys.platform == "win32":
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _fmt(v: Optional[float], spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def cell_summary(i: int, n: int, cell: Cell, m: dict, seconds: float) -> str:
    return (f"[{i}/{n}] {cell.label}: PSNR {_fmt(m.get('psnr'), '.2f')} SSIM {_fmt(m.get('ssim'), '.3f')} "
            f"FID {_fmt(m.get('fid'), '.2f')} | {int(m['n_images'])} img, {m['nfe_per_image']:.0f} NFE/img, "
            f"{m['sec_per_image']:.2f} s/img ({seconds:.0f} s)")


def run_experiment(exp: Experiment, *, quiet: bool = False, dry_run: bool = False,
                   cells: Optional[list[Cell]] = None) -> RunSummary:
    """Train what is missing (model cache), sample, score and log every cell not yet FINISHED in MLflow.
    Failed cells are collected (run FAILED, error tag), not raised; Ctrl-C/SIGTERM marks the current
    runs KILLED and re-raises KeyboardInterrupt."""
    t_start = time.time()
    all_cells = cells if cells is not None else expand(exp)
    check_resources(exp, all_cells)
    mine = shard_cells(all_cells, exp.shard.index, exp.shard.count)
    summary = RunSummary(experiment=exp.experiment_name, n_cells=len(mine))
    if dry_run:
        print(dry_run_report(exp, all_cells, mine))
        return summary

    from strbench import tracking

    exp_hash = experiment_hash(all_cells)
    tracker = tracking.Tracker(exp.tracking.uri, exp.experiment_name, exp.tracking.artifact_location)
    stale, elsewhere = tracker.fail_stale_runs([c.hash for c in mine])
    summary.stale_marked = len(stale)
    done = tracker.finished_cells()
    todo = [c for c in mine if c.hash not in done and c.hash not in elsewhere]
    summary.done_before = sum(c.hash in done for c in mine)
    summary.elsewhere = [c.label for c in mine if c.hash in elsewhere and c.hash not in done]
    for lbl in summary.elsewhere:
        _say(quiet, f"skip {lbl}: running in another process")
    if not todo:
        _say(quiet, f"{exp.name}: all {len(mine)} cells already finished in {exp.tracking.uri} "
                    f"(experiment {exp.experiment_name!r}); nothing to do")
        summary.seconds = time.time() - t_start
        return summary

    with tempfile.TemporaryDirectory(prefix="strbench-exp-") as td:
        resolved = {k: v for k, v in exp.resolved().items() if k != "profiles"}
        (Path(td) / "experiment.yaml").write_text(cfgmod.dump_yaml(resolved))
        parent = tracker.parent_run(
            exp_hash, run_name=f"{exp.name}" + (f" [{exp.profile}]" if exp.profile else ""),
            tags={"strbench.experiment": exp.name, "strbench.profile": exp.profile or "",
                  "strbench.config_path": exp.source, "strbench.n_cells": len(all_cells)},
            params={k: v for k, v in tracking.flatten(resolved).items()}, cell_hashes=[c.hash for c in all_cells],
            artifacts=td)
    summary.parent_run_id = parent
    res = Resources(exp.cache_dir, exp.device)
    _say(quiet, f"{exp.name}: {len(mine)} cells ({summary.done_before} already finished, {len(todo)} to run) "
                f"on {res.device}; tracking {exp.tracking.uri}, experiment {exp.experiment_name!r}")
    sweep = _progress(quiet, total=len(todo), desc="cells", unit="cell", position=0)
    try:
        with _sigterm_as_interrupt():
            for i, cell in enumerate(todo, 1):
                _run_one(exp, cell, tracker, parent, res, exp_hash, summary, quiet, i, len(todo))
                sweep.update(1)
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            tracker.end(parent, "KILLED")
        sweep.close()
        raise
    sweep.close()
    tracker.end(parent, "FINISHED" if not summary.failed else "FAILED",
                error=None if not summary.failed else f"{len(summary.failed)} cell(s) failed")
    summary.seconds = time.time() - t_start
    return summary


def _run_one(exp, cell: Cell, tracker, parent: str, res: Resources, exp_hash: str, summary: RunSummary,
             quiet: bool, i: int, n: int) -> None:
    from strbench.tracking import MetricBuffer

    t0 = time.time()
    run_id = tracker.start_cell(parent, cell.hash, run_name=cell.label, tags=_cell_tags(cell, exp_hash),
                                params=_cell_params(cell, exp))
    buf = MetricBuffer(tracker, run_id)
    bars: dict = {}

    def on_train(spec: ModelSpec):
        _say(quiet, f"train {spec.role} model {spec.short} ({spec.train['steps']} steps) for {cell.label}")
        bars[spec.role] = _progress(quiet, total=spec.train["steps"], desc=f"train {spec.role}", leave=False,
                                    unit="step", position=1)
        tracker.set_tags(run_id, {f"strbench.trained.{spec.role}": spec.hash})

    def train_cb(ev: dict):
        if ev.get("event") != "loss":
            return
        role, step = ev["role"], int(ev["step"])
        buf.add(f"train/{role}_loss", float(ev["loss"]), step)
        buf.add(f"train/{role}_lr", float(ev["lr"]), step)
        bar = bars.get(role)
        if bar is not None:
            bar.n = step
            bar.refresh()
            if step >= bar.total:
                bar.close()

    try:
        with tempfile.TemporaryDirectory(prefix="strbench-cell-") as td:
            result = evaluate_cell(cell.config, res, split="test", quiet=quiet, workdir=Path(td),
                                   on_train=on_train, train_callback=train_cb)
            for b in bars.values():
                b.close()
            buf.flush()
            tracker.log_metrics(run_id, result.metrics)
            tracker.set_tags(run_id, result.tags)
            tracker.log_artifacts(run_id, td)
        tracker.end(run_id, "FINISHED")
        summary.ran += 1
        summary.results[cell.hash] = result.metrics
        _say(quiet, cell_summary(i, n, cell, result.metrics, time.time() - t0))
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM: this cell's run is KILLED, the caller ends the parent
        for b in bars.values():
            b.close()
        with contextlib.suppress(Exception):
            buf.flush()
        with contextlib.suppress(Exception):
            tracker.end(run_id, "KILLED", error="interrupted (SIGINT/SIGTERM); run the same command again to resume")
        raise
    except Exception as e:  # a failing cell: FAILED with the error, the sweep goes on
        for b in bars.values():
            b.close()
        msg = f"{type(e).__name__}: {e}"
        with contextlib.suppress(Exception):
            buf.flush()
        with contextlib.suppress(Exception):
            with tempfile.TemporaryDirectory(prefix="strbench-err-") as td:
                (Path(td) / "error.txt").write_text(traceback.format_exc())
                tracker.log_artifacts(run_id, td)
        tracker.end(run_id, "FAILED", error=msg)
        summary.failed.append((cell.label, cell.hash, msg))
        _say(quiet, f"[{i}/{n}] {cell.label}: FAILED ({msg})")


# ================================================================================================
# dry run
# ================================================================================================


def dry_run_report(exp: Experiment, all_cells: list[Cell], mine: list[Cell]) -> str:
    """Cells, the models they need and what is cached / finished (reads tracking only if it exists)."""
    from strbench import tracking

    done: dict = {}
    note = ""
    if tracking.tracking_exists(exp.tracking.uri):
        try:
            done = _finished_readonly(exp)
        except Exception as e:  # e.g. an unreachable server: say so, list everything as pending
            note = f" (tracking not readable: {type(e).__name__})"
    else:
        note = " (no tracking database yet)"
    res_root = Path(exp.cache_dir)
    status = {}
    for m in unique_models(mine):
        d = res_root / "models" / m.hash
        status[m.hash] = "cached" if (d / "complete.json").is_file() else (
            "partial" if (d / "model.pt").is_file() else "missing")
    lines = [f"{exp.name}" + (f" (profile {exp.profile})" if exp.profile else "") +
             f": {len(mine)} cells" + (f" of {len(all_cells)} (shard {exp.shard.index}/{exp.shard.count})"
                                        if len(mine) != len(all_cells) else "") +
             f", {len(status)} models; tracking {exp.tracking.uri}{note}; cache {exp.cache_dir}",
             "", "models:"]
    users: dict[str, int] = {}
    for c in mine:
        for m in c.models:
            users[m.hash] = users.get(m.hash, 0) + 1
    for m in unique_models(mine):
        lines.append(f"  {m.role:<14} {m.short}  {status[m.hash]:<8} {m.train['steps']:>6} steps  "
                     f"used by {users.get(m.hash, 0)} cell(s)")
    lines += ["", "cells:", f"  {'#':>3}  {'cell':<12}  {'status':<8}  {'label':<44}  models"]
    for c in mine:
        st = "done" if c.hash in done else "pending"
        ms = " ".join(f"{m.role}:{m.short[:8]}({status[m.hash][0]})" for m in c.models)
        lines.append(f"  {c.index:>3}  {c.short}  {st:<8}  {c.label:<44}  {ms}")
    n_done = sum(c.hash in done for c in mine)
    lines += ["", f"{n_done} done, {len(mine) - n_done} to run; models: "
                  f"{sum(v == 'cached' for v in status.values())} cached, "
                  f"{sum(v == 'partial' for v in status.values())} partial, "
                  f"{sum(v == 'missing' for v in status.values())} to train. Nothing was trained or logged."]
    return "\n".join(lines)


def _finished_readonly(exp: Experiment) -> dict:
    from strbench import tracking

    df = tracking.search_cell_runs(exp.tracking.uri, exp.experiment_name, latest_only=False)
    if df.empty:
        return {}
    return dict(zip(df[f"tags.{tracking.CELL_HASH_TAG}"], df["run_id"]))


# ================================================================================================
# tune's entry point
# ================================================================================================


def evaluate(exp_or_cell_config: Any, *, split: str = "val", report: Optional[ReportFn] = None,
             quiet: bool = True) -> dict:
    """Train (through the cache) and evaluate on the `split` images and masks ('val' for tuning: the
    validation photos and masks drawn with masks.val_seed); no MLflow. Accepts an Experiment (all
    cells; metrics are averaged over cells), a Cell, or a cell config mapping. `report(step, metrics)`
    receives running PSNR/SSIM after every sampled batch (for pruning)."""
    if split not in ("val", "test"):
        raise ConfigError(f"evaluate: split must be 'val' or 'test', got {split!r}")
    if isinstance(exp_or_cell_config, Experiment):
        exp = exp_or_cell_config
        cells = expand(exp)
        check_resources(exp, cells)
        configs = [c.config for c in cells]
        cache_dir, device = exp.cache_dir, exp.device
    elif isinstance(exp_or_cell_config, Cell):
        configs, cache_dir, device = [exp_or_cell_config.config], ".strbench", "auto"
    elif isinstance(exp_or_cell_config, Mapping) and "models" in exp_or_cell_config and "method" in exp_or_cell_config:
        configs, cache_dir, device = [exp_or_cell_config], ".strbench", "auto"
    elif isinstance(exp_or_cell_config, Mapping):
        return evaluate(cfgmod.load_experiment(exp_or_cell_config), split=split, report=report, quiet=quiet)
    else:
        raise TypeError("evaluate() takes an Experiment, a Cell or a cell config mapping")
    res = Resources(cache_dir, device)
    per_cell, step = [], 0
    for cc in configs:
        r = evaluate_cell(cc, res, split=split, quiet=quiet, report=report, step0=step)
        step += math.ceil(r.metrics["n_images"] / cc["sample"]["batch"])
        per_cell.append(r.metrics)
    out: dict[str, Any] = {}
    for k in sorted({k for m in per_cell for k in m}):
        vals = [m[k] for m in per_cell if k in m]
        if k == "n_images":
            out[k] = float(sum(vals))
        elif len(vals) == len(per_cell):
            out[k] = float(sum(vals) / len(vals))
    out["n_cells"] = len(per_cell)
    if len(per_cell) > 1:
        out["cells"] = per_cell
    return out


# ================================================================================================
# CLI commands
# ================================================================================================


def validate_command(config: str, overrides: Iterable[str] = (), overlay: Optional[str] = None,
                     profile: Optional[str] = None) -> int:
    """`strbench validate X.yaml`: schema, every profile, sweep, training/sampling settings, folders."""
    exp = cfgmod.load_experiment(config, overrides=list(overrides), overlay=overlay, profile=profile,
                                 check_profiles=True)
    cells = expand(exp)
    check_resources(exp, cells)
    models = unique_models(cells)
    others = [p for p in exp.profiles if p != exp.profile]
    print(f"{config}: ok: {len(cells)} cells, {len(models)} models" +
          (f" (profile {exp.profile}" + (f"; other profiles valid: {', '.join(others)}" if others else "") + ")"
           if exp.profile else ""))
    return 0


def run_command(config: str, overrides: Iterable[str] = (), overlay: Optional[str] = None,
                profile: Optional[str] = None, dry_run: bool = False, quiet: bool = False) -> int:
    """`strbench run X.yaml`: 0 when every cell finished, 1 when some failed (named on stderr)."""
    exp = cfgmod.load_experiment(config, overrides=list(overrides), overlay=overlay, profile=profile)
    summary = run_experiment(exp, quiet=quiet, dry_run=dry_run)
    if dry_run:
        return 0
    if not quiet:
        uri = exp.tracking.uri
        ui = f"mlflow ui --backend-store-uri {uri}" if tracking_is_local(uri) else f"open {uri}"
        print(f"{exp.name}: {summary.n_cells} cells: {summary.done_before} finished before, {summary.ran} run, "
              f"{len(summary.failed)} failed ({summary.seconds:.0f} s). Browse: {ui}")
    if summary.failed:
        for label, h, err in summary.failed:
            print(f"strbench: cell failed: {label} [{h[:12]}]: {err}", file=sys.stderr)
        print(f"strbench: {len(summary.failed)} of {summary.n_cells} cells failed; fix the cause and run the "
              "same command again (finished cells are skipped)", file=sys.stderr)
        return 1
    return 0


def tracking_is_local(uri: str) -> bool:
    return uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri


__all__ = ["Cell", "ModelSpec", "RunSummary", "CellResult", "Resources", "expand", "model_specs", "cell_hash",
           "experiment_hash", "shard_cells", "unique_models", "check_resources", "evaluate_cell", "run_experiment",
           "evaluate", "dry_run_report", "validate_command", "run_command", "freeze", "thaw"]
