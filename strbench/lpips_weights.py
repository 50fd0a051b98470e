"""Offline weights for LPIPS (docs/SCIENCE.md#lpips): the ImageNet backbone (torchvision's AlexNet or VGG16) from a
local file, checked, and the LPIPS linear layers that ship inside torchmetrics. Nothing is downloaded.

Resolution order of `resolve_lpips_weights(net, path)`: explicit path (setting `metrics.lpips_weights`) > env
`STRBENCH_LPIPS_WEIGHTS` > torch.hub's cache (`$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth` or
`vgg16-397923af.pth`, where a machine that ever built a pretrained torchvision model has them) >
`WeightsError` (one line saying how to supply them; `metrics.lpips` turns it into "n/a" with that reason).

Checks, as for the FID weights (strbench.fid_weights): the bytes are read once and hashed; a torch.hub-style
name `<name>-<hex>.pth` must match the first hex digits of the file's sha256 (torch.hub's own `check_hash`
rule), and the files found in the hub cache must have the torchvision release's checksum prefix
(`PINNED_SHA256_PREFIX`); the file is loaded with weights_only=True (no code in it runs) and its `features.*`
tensors must have exactly torchvision's keys and shapes for the backbone. The verified tensors are copied into
torchmetrics' LPIPS network built without pretrained weights (torchvision is never asked to fetch).
"""
from __future__ import annotations

import functools
import inspect
import os
import re
from pathlib import Path

import torch

from strbench.errors import WeightsError
from strbench.weightfiles import HUB_HASH, load_tensors, read_hashed

SETTING = "metrics.lpips_weights"
ENV_WEIGHTS = "STRBENCH_LPIPS_WEIGHTS"
NETS = ("alex", "vgg")
# torchvision's released ImageNet weights, as torch.hub names them in its cache (name-<sha256 prefix>.pth)
HUB_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
TV_BUILDERS = {"alex": "alexnet", "vgg": "vgg16"}
# the checksum prefixes a file in the hub cache must have (torchvision's releases); tests register a fixture's
PINNED_SHA256_PREFIX: dict[str, set[str]] = {net: {HUB_HASH.search(f).group(1)} for net, f in HUB_FILES.items()}


def how_to_supply(net: str) -> str:
    return (f"put torchvision's {TV_BUILDERS[net]} ImageNet weights ({HUB_FILES[net]}) in "
            f"$TORCH_HOME/hub/checkpoints/ or set `{SETTING}: /path/to/{HUB_FILES[net]}` (or env {ENV_WEIGHTS})")


def hub_path(net: str) -> Path:
    """Where torch.hub keeps the backbone's file: `torch.hub.get_dir()/checkpoints/<name>` ($TORCH_HOME/hub)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / HUB_FILES[net]


def _check_net(net: str) -> None:
    if net not in NETS:
        raise WeightsError(f"metrics.lpips_net: unknown LPIPS backbone {net!r}; choose one of {list(NETS)}")


@functools.lru_cache(maxsize=2)
def expected_layout(net: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of torchvision's `features.*` tensors of the backbone (shapes only: built on meta)."""
    import torchvision

    with torch.device("meta"):
        model = getattr(torchvision.models, TV_BUILDERS[net])(weights=None)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("features.")}


def load_verified_backbone(path: str | os.PathLike, net: str, *, origin: str, pinned: bool = False
                           ) -> tuple[dict[str, torch.Tensor], str]:
    """(features.* tensors, sha256 of the bytes): read once, hashed, name-checked (`pinned`: the prefix must be
    one of PINNED_SHA256_PREFIX[net]), loaded with weights_only=True, keys and shapes checked."""
    p = Path(path)
    where = f"LPIPS backbone weights {p} (from {origin})"
    data, sha = read_hashed(p, where, how_to_supply(net))
    if pinned and not any(sha.startswith(x) for x in PINNED_SHA256_PREFIX[net]):
        raise WeightsError(f"{where}: sha256 {sha[:12]}... is not torchvision's release "
                           f"({', '.join(sorted(PINNED_SHA256_PREFIX[net]))}...); {how_to_supply(net)}")
    state = load_tensors(data, where, how_to_supply(net))
    if not isinstance(state, dict):
        raise WeightsError(f"{where}: holds a {type(state).__name__}, not a state_dict; {how_to_supply(net)}")
    layout = expected_layout(net)
    feats = {k: v for k, v in state.items() if isinstance(k, str) and k.startswith("features.")}
    missing = [k for k in layout if k not in feats]
    if missing or len(feats) != len(layout):
        what = f"missing {missing[0]!r}" if missing else f"{len(feats) - len(layout)} unexpected features.* key(s)"
        raise WeightsError(f"{where}: not torchvision's {TV_BUILDERS[net]} layout ({what}); {how_to_supply(net)}")
    for k, shape in layout.items():
        t = feats[k]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape or not t.is_floating_point():
            raise WeightsError(f"{where}: key {k!r} is not a float tensor of shape {shape}; {how_to_supply(net)}")
        if not bool(torch.isfinite(t).all()):
            raise WeightsError(f"{where}: key {k!r} holds NaN/Inf values; {how_to_supply(net)}")
    return {k: feats[k].float().contiguous() for k in layout}, sha


def resolve_lpips_weights(net: str = "alex", path: str | os.PathLike | None = None) -> tuple[Path, str]:
    """(path, sha256) of the backbone file to use: explicit > env > torch.hub cache > WeightsError.
    An explicit or env path that does not exist is an error too (a configured path that is wrong is never a
    silent "n/a"); the file is verified (`load_verified_backbone`) before it is returned."""
    _check_net(net)
    given = path if path is not None else os.environ.get(ENV_WEIGHTS) or None
    if given is not None:
        p = Path(given).expanduser()
        origin = f"`{SETTING}`" if path is not None else f"env {ENV_WEIGHTS}"
        if not p.is_file():
            raise WeightsError(f"LPIPS backbone weights {p} (from {origin}) do not exist; fix the path or unset it")
        return p, _checked(p, net, origin, False)
    p = hub_path(net)
    if not p.is_file():
        raise WeightsError(f"no LPIPS backbone weights: {p} not found; {how_to_supply(net)}")
    return p, _checked(p, net, "the torch.hub cache", True)


_CHECKED: dict[tuple, str] = {}


def _checked(p: Path, net: str, origin: str, pinned: bool) -> str:
    st = p.stat()
    key = (str(p), net, pinned, st.st_mtime_ns, st.st_size)
    if key not in _CHECKED:
        _CHECKED[key] = load_verified_backbone(p, net, origin=origin, pinned=pinned)[1]
    return _CHECKED[key]


def linear_layers_path(net: str) -> Path:
    """The LPIPS linear layers (v0.1) that ship inside torchmetrics: `lpips_models/<net>.pth`."""
    from torchmetrics.functional.image import lpips as tm_lpips

    return Path(inspect.getfile(tm_lpips)).parent / "lpips_models" / f"{net}.pth"


def lpips_network(path: str | os.PathLike, sha256: str, net: str = "alex"):
    """torchmetrics' LPIPS network (`_LPIPS`, eval, no gradients): backbone built with `pnet_rand=True` (torchvision
    weights=None: nothing is fetched), its tensors copied from the verified `path`; linear layers from the file
    torchmetrics ships, loaded with weights_only=True, every one present (strict)."""
    from torchmetrics.functional.image.lpips import _LPIPS, ScalingLayer

    state, sha = load_verified_backbone(path, net, origin="a checked file")
    if sha != sha256:
        raise WeightsError(f"LPIPS backbone weights {path} changed since they were checked (sha256 {sha[:12]}... "
                           f"!= {sha256[:12]}...); re-run so they are checked again")
    with torch.device("meta"):  # no random init: every tensor comes from the two files below
        model = _LPIPS(pretrained=False, net=net, pnet_rand=True, use_dropout=True, eval_mode=True)
    model = model.to_empty(device="cpu")
    model.scaling_layer = ScalingLayer()  # its constants (not in any state_dict), built for real
    # the backbone's slices hold torchvision's `features` modules under their index: slice<k>.<i>.<p> = features.<i>.<p>
    mapped = {k: state["features." + k.split(".", 1)[1]] for k in model.net.state_dict()}
    model.net.load_state_dict(mapped, strict=True)
    lin_file = linear_layers_path(net)
    lin = torch.load(lin_file, map_location="cpu", weights_only=True)
    want = {k for k in model.state_dict() if re.match(r"lin\d+\.", k)}  # lin<k>.* (lins.<k>.* are the same tensors)
    if set(lin) != want:
        raise WeightsError(f"LPIPS linear layers {lin_file}: keys {sorted(set(lin) ^ want)[:3]} differ from "
                           f"torchmetrics' network (a torchmetrics version strbench does not know)")
    model.load_state_dict(lin, strict=False)  # the backbone's keys were loaded above
    return model.float().eval().requires_grad_(False)
