"""Evaluating one cell: train what is missing (through the cache), sample the cell's images, score them,
and write its artifacts (cell.yaml, per_image.csv, protocol.json, outputs/, samples_tiles.png, trajectory.png,
kl_trajectory.csv) to a work folder; the labelled samples grid comes back as an image (CellResult.images).

    inputs = cell_inputs(c, res, split)                 # networks, SDEs, images and masks (CellInputs)
    sampled = sample_cell(c, inputs)                    # this rank's batches, gathered from all ranks (Sampled)
    scores = score_cell(c, inputs, sampled)             # PSNR/SSIM/LPIPS per image, means, FID/KID/IDS, tags
    files, images = write_artifacts(workdir, c, inputs, sampled, scores)

``evaluate_cell`` runs these steps. The sampler gets what the plan resolved (``c.settings``, ``c.schedule``);
nothing here reads the Experiment. No MLflow here: :mod:`strbench.experiment.run` logs the result (and the
re-runnable config.yaml).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from strbench import contract as K
from strbench.config import dump_yaml
from strbench.dist import DistInfo, current_dist, gather
from strbench.errors import DataError
from strbench.experiment.cache import Resources
from strbench.experiment.plan import CellConfig, ModelSpec, thaw
from strbench.experiment.progress import SILENT, Bar, Progress

if TYPE_CHECKING:
    from torch import Tensor

    from strbench.sample import Models
    from strbench.sde import SDEPair


@dataclass
class CellResult:
    metrics: dict  # psnr, ssim, lpips?, fid?, kid?, p_ids?, u_ids?, *_ci_low/high, nfe_per_image, sec_per_image, n_images
    per_image: Any  # pandas DataFrame: image_id, mask_id, hole_ratio, psnr, ssim[, lpips]
    tags: dict  # fid_missing / protocol tags
    artifacts: dict = field(default_factory=dict)  # name -> local file
    images: dict = field(default_factory=dict)  # artifact name -> PIL image (logged through log_image)


def pick_indices(m: int, n: int) -> list[int]:
    """Indices of n images spread evenly over a split of m (cycled when it has fewer)."""
    if m == 0:
        raise DataError("the evaluation split has no images")
    if n <= m:
        return [int(round(i * (m - 1) / max(n - 1, 1))) for i in range(n)] if n > 1 else [0]
    return [i % m for i in range(n)]


# ------------------------------------------------------------------------------------------------
# the steps: inputs -> sample -> score -> artifacts (evaluate_cell runs them in this order)
# ------------------------------------------------------------------------------------------------


@dataclass
class CellInputs:
    """What a cell samples from: its networks, SDEs, evaluation images and masks (on the CPU), their ids."""

    models: "Models"
    sdes: "SDEPair"
    images: "Tensor"  # (n, 3, H, W) float in [0, 1]
    known: "Tensor"  # (n, 1, H, W) float, 1 = known
    image_ids: list  # position i -> index of the image in the split
    mask_ids: list  # position i -> the mask's file stem (or m<i>)
    device: Any  # torch.device the sampler runs on

    @property
    def n(self) -> int:
        return int(self.known.shape[0])


@dataclass
class SampledBatch:
    """One sampled batch of a cell (tensors on the CPU)."""

    b: int  # batch index: images b*batch .. b*batch + len(output) - 1
    start: int  # position of its first image
    output: "Tensor"  # (k, 3, H, W) composited outputs
    structure: Optional["Tensor"]  # (k, 1, H, W) the structure states at t = 0, for structure-guided methods
    nfe: int  # network evaluations of the batch (per image x images)
    seconds: float
    kl: list  # (t, region, KL, images) per recorded level

    @property
    def stop(self) -> int:
        return self.start + int(self.output.shape[0])


@dataclass
class Sampled:
    """Every batch of a cell, all ranks' in batch order, and the first image's trajectory frames."""

    batches: list  # SampledBatch
    frames: Optional[dict] = None  # level -> (texture, structure or None) of image 0 (rank 0 samples batch 0)

    @property
    def outputs(self):
        import torch

        return torch.cat([b.output for b in self.batches])


@dataclass
class Scores:
    metrics: dict
    per_image: Any  # pandas DataFrame: image_id, mask_id, hole_ratio, psnr, ssim[, lpips]
    protocol: dict  # strbench.metrics.protocol_record of the pixel metrics
    tags: dict


def cell_inputs(c: CellConfig, res: Resources, split: str = "test", *,
                on_train: Optional[Callable[[ModelSpec], Any]] = None,
                train_callback: Optional[Callable[[dict], Any]] = None) -> CellInputs:
    """The cell's networks (trained through the cache when missing), SDEs, and its images and masks of `split`."""
    import torch

    from strbench.sample import Models
    from strbench.sde import make_sde_pair

    nets = res.models(c.models, on_train=on_train, callback=train_callback)
    sdes = make_sde_pair(dict(c.schedule["texture"]), dict(c.schedule["structure"]))
    if c.mask.pairing == "by_name":  # each image with its own masks (strbench.pairing); ids name both files
        paired = by_name_pairs(c, res, split)
        return CellInputs(models=Models(**nets), sdes=sdes, images=paired.images, known=paired.known,
                          image_ids=paired.image_ids, mask_ids=paired.mask_ids, device=res.device)
    mask_set = res.eval_masks(c.mask, c.dataset.size, split)
    known = mask_set.masks.float()
    n = known.shape[0]
    mask_ids = [Path(f).stem for f in mask_set.files] if mask_set.files else [f"m{i}" for i in range(len(mask_set))]
    ds = res.dataset(c.dataset, split)
    idx = pick_indices(len(ds), n)
    images = torch.stack([ds[i] for i in idx]).float()
    return CellInputs(models=Models(**nets), sdes=sdes, images=images, known=known, image_ids=idx,
                      mask_ids=mask_ids[:n], device=res.device)


def by_name_pairs(c: CellConfig, res: Resources, split: str = "test"):
    """The cell's pairs under masks.pairing by_name (strbench.pairing.PairedBin): the first per_bin pairs whose
    mask falls in the cell's bin; the dataset's test split is read only where the masks are named after its images."""
    from strbench.pairing import paired_bin

    mk = c.mask
    if split != "test":
        raise DataError(f"masks.pairing: by_name pairs the test images with their masks; the {split} split has no "
                        "such pairs (tuning scores val): use masks.pairing: seeded to tune")
    return paired_bin(mk.path, mk.polarity, mk.lo, mk.hi, mk.per_bin, c.dataset.size, resize=c.dataset.resize,
                      dataset=None if c.dataset.type == "builtin" else (lambda: res.dataset(c.dataset, split)),
                      label=mk.label)


class _Recorder:
    """Sampler callback: progress, trajectory frames of the first image, KL per level (Fig. 8)."""

    def __init__(self, T: int, frames: int, kl: Optional[dict], gt, known, bar: Bar, done_levels: int):
        self.T, self.kl, self.gt, self.known, self.bar, self.base = T, kl, gt, known, bar, done_levels
        # the sampler reports states from level T-1 down to 0
        self.frame_levels = sorted({round((T - 1) * (1 - i / (frames - 1))) for i in range(frames)}, reverse=True)
        self.frames: Optional[dict[int, tuple]] = {}
        self.kl_rows: dict[int, dict] = {}
        self.min_t = T

    def __call__(self, d: dict) -> None:
        t = int(d["t"])
        if d.get("phase", "step") != "step":
            return
        if t < self.min_t:
            self.min_t = t
            self.bar.update_to(self.base + (self.T - t))
        if self.frames is not None and t in self.frame_levels:
            x = d.get("x")
            self.frames[t] = (d["y"][:1].detach().float().cpu().clone(),
                              None if x is None else x[:1].detach().float().cpu().clone())
        if self.kl is not None and t % self.kl["every"] == 0:
            from strbench.metrics import kl_regions

            r = kl_regions(d["y"].float(), self.gt, self.known, bins=self.kl["bins"])
            self.kl_rows[t] = {k: v for k, v in r.items()}


def sample_cell(c: CellConfig, inp: CellInputs, *, progress: Progress = SILENT,
                ranks: Optional[DistInfo] = None) -> Sampled:
    """Sample the cell's images in batches of sample.batch with the settings the plan resolved (c.settings,
    c.schedule); image j's noise comes from (seed, j, step). Under torchrun the batches are dealt to the
    ranks and every rank gets every batch back, in batch order (as one process would have them)."""
    import torch

    from strbench.sample import sample
    from strbench.steps import PerImageNoise

    ranks = ranks or current_dist()
    T, mcfg, batch, dev, n = inp.sdes.texture.T, c.metrics, c.sample.batch, inp.device, inp.n
    mine = [b for b in range(math.ceil(n / batch)) if b % ranks.world_size == ranks.rank]
    kl = {"every": mcfg.trajectory_every, "bins": mcfg.kl_bins} if mcfg.trajectories else None
    batches, frames = [], None
    bar = progress.bar("sample", len(mine) * T, f"sample {c.case} {c.mask.label}")
    try:
        for j, b in enumerate(mine):
            sl = slice(b * batch, min((b + 1) * batch, n))
            img, known = inp.images[sl].to(dev), inp.known[sl].to(dev)
            rec = _Recorder(T, mcfg.strip_frames, kl, img, known, bar, j * T)
            if b > 0:
                rec.frames = None
            noise = PerImageNoise(int(c.seed), range(sl.start, sl.stop), dev)  # (seed, image position, step)
            t0 = time.perf_counter()
            out = sample(c.method.method, inp.models, img, known, sdes=inp.sdes, noise_sampler=noise, callback=rec,
                         **thaw(c.settings))
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            st = out.info.get("structure")
            k = sl.stop - sl.start
            batches.append(SampledBatch(
                b=b, start=sl.start, output=out.output.detach().float().cpu(),
                structure=None if st is None else st.detach().float().cpu(), nfe=out.nfe * k,
                seconds=time.perf_counter() - t0,
                kl=[(t, region, kv, k) for t, v in rec.kl_rows.items() for region, kv in v.items() if kv is not None]))
            if b == 0:
                frames = rec.frames
            bar.update_to((j + 1) * T)
    finally:
        bar.close()
    if ranks.world_size > 1:
        batches = sorted((r for part in gather(batches) for r in part), key=lambda r: r.b)
    return Sampled(batches=batches, frames=frames)


def score_cell(c: CellConfig, inp: CellInputs, sampled: Sampled, *, inception: bool = True) -> Scores:
    """Per-image PSNR/SSIM (batch by batch, as sampled) and LPIPS, their means and bootstrap intervals, the cost
    per image, and FID/KID/P-IDS/U-IDS over all outputs when `inception` (rank 0 alone: it alone logs)."""
    import numpy as np
    import pandas as pd

    from strbench import metrics as M

    mcfg, n = c.metrics, inp.n
    rows = [M.image_metrics(r.output, inp.images[r.start:r.stop], inp.known[r.start:r.stop], protocol=mcfg.protocol)
            for r in sampled.batches]
    df = pd.concat(rows, ignore_index=True)
    protocol = M.protocol_record(mcfg.protocol, c.dataset.size, c.dataset.size, n)
    df.insert(0, "image_id", inp.image_ids)
    df.insert(1, "mask_id", inp.mask_ids)
    df = df[["image_id", "mask_id", "hole_ratio", "psnr", "ssim"]]
    extra = {}
    if mcfg.lpips and inception:
        extra["lpips"] = M.lpips(sampled.outputs.to(inp.device), inp.images.to(inp.device), net=mcfg.lpips_net,
                                 weights_path=mcfg.lpips_weights)
        if extra["lpips"].value is not None:
            df["lpips"] = extra["lpips"].value.numpy()
    metrics: dict[str, float] = {"psnr": float(np.mean(df["psnr"])), "ssim": float(np.mean(df["ssim"])),
                                 "n_images": float(n), "nfe_per_image": sum(r.nfe for r in sampled.batches) / n,
                                 "sec_per_image": sum(r.seconds for r in sampled.batches) / n,
                                 "hole_ratio": float(np.mean(df["hole_ratio"]))}
    per_image_keys = [k for k in PER_IMAGE_METRICS if k in df.columns]
    metrics.update({k: float(np.mean(df[k])) for k in per_image_keys if k not in metrics})
    if mcfg.bootstrap > 0:
        for k in per_image_keys:
            lo, hi = M.bootstrap_ci(df[k].to_numpy(), n=mcfg.bootstrap, seed=int(c.seed))
            if math.isfinite(lo):
                metrics[f"{k}_ci_low"], metrics[f"{k}_ci_high"] = lo, hi
    # P-IDS/U-IDS reuse the features FID/KID extract: never the reason to extract them
    which = tuple(k for k in M.INCEPTION_METRICS if getattr(mcfg, k) and (k != "ids" or mcfg.fid or mcfg.kid)
                  ) if inception else ()
    inc = M.inception_metrics(sampled.outputs.to(inp.device), inp.images.to(inp.device),
                              weights_path=mcfg.fid_weights, which=which) if which else {}
    metrics.update({k: float(r.value) for k, r in inc.items() if r.value is not None})
    tags = score_tags(protocol, inc, which, metrics)
    tags.update(extra_tags(extra, mcfg if inception else None, metrics))
    tags.update(ids_off_tags(mcfg) if inception else {})
    return Scores(metrics=metrics, per_image=df, protocol=protocol, tags=tags)


PER_IMAGE_METRICS = ("psnr", "ssim", "lpips")  # columns of per_image.csv, each logged as its mean and interval


def score_tags(protocol: dict, inception: dict, which: tuple, metrics: dict) -> dict:
    """The cell's protocol tags and, for FID/KID/P-IDS/U-IDS not computed, why (off in the config, or the
    metric's reason)."""
    tags = {K.METRIC_PROTOCOL_TAG: json.dumps(protocol, sort_keys=True, default=str)}
    missing = []
    for k, r in inception.items():
        if r.value is None:
            missing.append(f"{k}: {r.reason}")
        if k != "u_ids":  # P-IDS and U-IDS share one protocol (the SVM's), under ids
            tags[K.protocol_tag("ids" if k == "p_ids" else k)] = json.dumps(r.protocol, sort_keys=True, default=str)
    for k in ("fid", "kid"):
        if k not in which:
            missing.append(f"{k}: off in the config (metrics.{k}: false)")
    if "fid" not in metrics:
        tags[K.missing_tag("fid")] = "; ".join(m for m in missing if m.startswith("fid"))
    if "kid" not in metrics:
        tags[K.missing_tag("kid")] = "; ".join(m for m in missing if m.startswith("kid"))
    for k in ("p_ids", "u_ids"):
        if "ids" in which and k not in metrics:
            tags[K.missing_tag(k)] = "; ".join(m.split(": ", 1)[1] for m in missing if m.startswith(k))
    return tags


def ids_off_tags(mcfg) -> dict:
    """Why P-IDS/U-IDS were not computed when they were asked for but FID and KID were off."""
    if mcfg.ids and not (mcfg.fid or mcfg.kid):
        why = "needs the Inception features of FID/KID, both off in the config (metrics.fid / metrics.kid: false)"
        return {K.missing_tag(k): why for k in ("p_ids", "u_ids")}
    return {}


def extra_tags(extra: dict, mcfg, metrics: dict) -> dict:
    """LPIPS's protocol tag and, when it was not computed, why (no weights, or off in the config)."""
    tags = {}
    r = extra.get("lpips")
    if r is not None:
        tags[K.protocol_tag("lpips")] = json.dumps(r.protocol, sort_keys=True, default=str)
        if r.value is None:
            tags[K.missing_tag("lpips")] = str(r.reason)
    elif mcfg is not None and not mcfg.lpips:
        tags[K.missing_tag("lpips")] = "off in the config (metrics.lpips: false)"
    return tags


def evaluate_cell(c: CellConfig, res: Resources, *, split: str = "test", progress: Progress = SILENT,
                  workdir: Optional[Path] = None,
                  on_train: Optional[Callable[[ModelSpec], Any]] = None,
                  train_callback: Optional[Callable[[dict], Any]] = None) -> CellResult:
    """Train what is missing, sample the cell's images of `split`, score them; artifacts go to workdir."""
    ranks = current_dist()
    inp = cell_inputs(c, res, split, on_train=on_train, train_callback=train_callback)
    sampled = sample_cell(c, inp, progress=progress, ranks=ranks)
    scores = score_cell(c, inp, sampled, inception=ranks.is_main)
    result = CellResult(metrics=scores.metrics, per_image=scores.per_image, tags=scores.tags)
    if workdir is not None:
        result.artifacts, result.images = write_artifacts(workdir, c, inp, sampled, scores)
    return result


def _kl_rows(sampled: Sampled) -> dict:
    """(t, region) -> [(KL, images)] over every batch."""
    acc: dict[tuple, list] = {}
    for r in sampled.batches:
        for t, region, kv, cnt in r.kl:
            acc.setdefault((t, region), []).append((kv, cnt))
    return acc


def _tile(x, size: int):
    import torch.nn.functional as F

    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    scale = max(1, math.ceil(96 / size))
    return F.interpolate(x.clamp(0, 1), scale_factor=scale, mode="nearest") if scale > 1 else x.clamp(0, 1)


def write_artifacts(d: Path, c: CellConfig, inp: CellInputs, sampled: Sampled, scores: Scores) -> tuple[dict, dict]:
    """The cell's files in `d` (cell.yaml, per_image.csv, outputs/, protocol.json, samples_tiles.png,
    trajectory.png, kl_trajectory.csv) and its labelled samples grid: ({name: file}, {name: PIL image})."""
    import pandas as pd
    import torch
    from torchvision.utils import save_image

    images, known, pred, df, protocol = inp.images, inp.known, sampled.outputs, scores.per_image, scores.protocol
    structures, frames, kl_acc = [r.structure for r in sampled.batches], sampled.frames, _kl_rows(sampled)
    T = inp.sdes.texture.T
    d.mkdir(parents=True, exist_ok=True)
    files = {}
    size = images.shape[-1]
    # the cell's own config (what strbench.experiment.evaluate and rescore read back)
    (d / "cell.yaml").write_text(dump_yaml(c.model_dump(), header=[
        "This cell's resolved settings (strbench.experiment.CellConfig); the re-runnable experiment is config.yaml"]))
    files["cell.yaml"] = d / "cell.yaml"
    # per-image metrics
    df.to_csv(d / "per_image.csv", index=False)
    files["per_image.csv"] = d / "per_image.csv"
    # every composited output, lossless, named by position, image and mask id (rescoring needs no sampling)
    out_dir = d / "outputs"
    out_dir.mkdir()
    from PIL import Image

    from strbench.metrics import to_uint8

    u8 = to_uint8(pred).permute(0, 2, 3, 1).numpy()  # the exact uint8 pixels the metrics scored
    for i, (img_id, mask_id) in enumerate(zip(df["image_id"], df["mask_id"])):
        name = f"{i:04d}_img{img_id}_mask{mask_id}".replace("/", "_")  # by_name ids are relative file paths
        Image.fromarray(u8[i]).save(out_dir / f"{name}.png")
    (d / "protocol.json").write_text(json.dumps(protocol, indent=1, sort_keys=True, default=str))
    # samples: masked input | structure | output | ground truth; tiles for the HTML report, a labelled grid for people
    k = min(int(c.metrics.grid_images), images.shape[0])
    struct = torch.cat([s if s is not None else torch.zeros(images[:0].shape[0], 1, size, size)
                        for s in structures]) if any(s is not None for s in structures) else None
    tiles = []
    for i in range(k):
        s = struct[i:i + 1] if struct is not None else torch.zeros(1, 1, size, size)
        tiles += [_tile(images[i:i + 1] * known[i:i + 1], size), _tile(s, size), _tile(pred[i:i + 1], size),
                  _tile(images[i:i + 1], size)]
    save_image(torch.cat(tiles), d / "samples_tiles.png", nrow=4, padding=2, pad_value=1.0)
    files["samples_tiles.png"] = d / "samples_tiles.png"
    labelled = {"samples.png": _labelled_samples(c, tiles, df, k, struct is not None)}
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
    return files, labelled


def _labelled_samples(c: CellConfig, tiles: list, df, k: int, has_structure: bool):
    """The samples grid with its columns named and each row's image id, mask id, hole ratio and PSNR."""
    import io

    import numpy as np
    from PIL import Image

    from strbench.grids import GRID_COLUMNS, labelled_grid_png

    arr = np.stack([np.stack([(t[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                              for t in tiles[4 * i:4 * i + 4]]) for i in range(k)])
    cols = list(GRID_COLUMNS)
    if not has_structure:
        cols[1] = "structure (none)"
    rows = [f"img {r.image_id}\nmask {r.mask_id}\nholes {r.hole_ratio:.0%}\n{r.psnr:.2f} dB"
            for r in df.head(k).itertuples()]
    title = f"{c.case} ({c.method.method}), {c.mask.label} holes, seed {c.seed}"
    return Image.open(io.BytesIO(labelled_grid_png(arr, cols, rows, title=title))).convert("RGB")
