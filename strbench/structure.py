"""Structure maps (gray, edge) and the four structure variants of StrDiffusion (Sec. 3.4.1).

docs/SCIENCE.md#structure-maps: gray = skimage ``color.rgb2gray``; edge = skimage ``feature.canny`` of the gray map
(sigma 3.0 in the authors' training code, 2.0 in their test code). Both are 1-channel maps in [0, 1].
A variant names (x_0, mu_x): the clean structure the structure SDE starts from, and the mean it
reverts to, which only sees the known region (``mu_x = map * known``).

Tensors: ``image`` (B, 3, H, W) in [0, 1]; ``known`` (B, 1, H, W), 1 on known pixels. Outputs keep the
input's device and dtype. ``gray`` is computed in torch (skimage's luminance weights, checked against
``rgb2gray`` in the tests); ``edge`` runs skimage's canny on CPU numpy, one image at a time.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from skimage.feature import canny

# skimage.color.rgb2gray: Y = 0.2125 R + 0.7154 G + 0.0721 B (ITU-R BT.709 luminance).
RGB2GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)
DEFAULT_CANNY_SIGMA = 3.0  # authors' training code; their test code uses 2.0 (docs/SCIENCE.md#canny-sigma)


def _check_image(image: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[1] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"structure maps need an RGB batch of shape (B, 3, H, W); got {shape}")


def gray(image: torch.Tensor) -> torch.Tensor:
    """Gray map (B, 1, H, W) = skimage rgb2gray of each RGB image (docs/SCIENCE.md#structure-maps)."""
    _check_image(image)
    w = torch.tensor(RGB2GRAY_WEIGHTS, dtype=torch.float64, device=image.device).view(1, 3, 1, 1)
    return (image.to(torch.float64) * w).sum(dim=1, keepdim=True).to(image.dtype)


def edge(image: torch.Tensor, sigma: float = DEFAULT_CANNY_SIGMA) -> torch.Tensor:
    """Edge map (B, 1, H, W) in {0, 1} = skimage canny(rgb2gray(image), sigma) (docs/SCIENCE.md#structure-maps)."""
    if not sigma > 0:
        raise ValueError(f"canny sigma must be > 0; got {sigma}")
    g = gray(image).detach().to("cpu", torch.float64).numpy()
    maps = np.stack([canny(g[b, 0], sigma=float(sigma)) for b in range(g.shape[0])])
    return torch.from_numpy(maps[:, None].astype(np.float64)).to(image.device, image.dtype)


# name -> map function (image, sigma) -> (B, 1, H, W)
MAPS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "gray": lambda image, sigma: gray(image),
    "edge": lambda image, sigma: edge(image, sigma),
}

# variant -> (map giving x_0, map giving mu_x before masking)   (Sec. 3.4.1)
VARIANT_MAPS: dict[str, tuple[str, str]] = {
    "gray2gray": ("gray", "gray"),
    "edge2edge": ("edge", "edge"),
    "edge2gray": ("edge", "gray"),
    "gray2edge": ("gray", "edge"),  # the method
}
VARIANTS = tuple(VARIANT_MAPS)  # the one list of variants (the config schema and the samplers derive theirs)
DEFAULT_VARIANT = "gray2edge"  # the paper's method


def structure_states(
    variant: str,
    image: torch.Tensor,
    known: torch.Tensor,
    *,
    canny_sigma: float = DEFAULT_CANNY_SIGMA,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_0, mu_x) of a structure variant: x_0 = map_a(image), mu_x = map_b(image) * known (Sec. 3.4.1)."""
    if variant not in VARIANT_MAPS:
        raise ValueError(f"unknown structure variant {variant!r}; valid: {', '.join(VARIANTS)}")
    _check_image(image)
    if known.dim() != 4 or known.shape[1] != 1 or known.shape[0] != image.shape[0] \
            or known.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"known must be (B, 1, H, W) matching image {tuple(image.shape)}; "
                         f"got {tuple(known.shape)}")
    names = VARIANT_MAPS[variant]
    maps = {name: MAPS[name](image, canny_sigma) for name in set(names)}
    x0, mu_map = maps[names[0]], maps[names[1]]
    return x0, mu_map * known.to(mu_map.dtype)
