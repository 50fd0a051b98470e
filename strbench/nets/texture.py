"""Structure-guided texture net eps(y_t, mu_y, t, x_{t-1}) (paper Eq. 12): a wrapper, not a fork.

After each encoder downsample of the plain :class:`~strbench.nets.unet.UNet` the feature map F_k is
normalised per pixel over its channels and denormalised with scale/bias maps computed from the
structure state x_{t-1} resized to that scale (multi-scale spatially adaptive normalisation):

    F~_k = conv_gamma(x) * (F_k - mu_k) / sigma_k + conv_beta(x),   mu_k, sigma_k over channels at (h, w)

conv_gamma is parametrised as 1 + (zero-initialised conv) and conv_beta starts at zero, so training
starts from the backbone followed by the per-pixel normalisation.
"""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from strbench.errors import ConfigError
from strbench.nets.unet import UNet, zero_

RESIZE_MODES = ("nearest", "bilinear", "area")


def channel_normalize(h: Tensor, eps: float = 1e-5) -> Tensor:
    """(F - mean_c) / std_c with mean and (biased) std over channels at each pixel (Eq. 12)."""
    mean = h.mean(dim=1, keepdim=True)
    var = (h - mean).pow(2).mean(dim=1, keepdim=True)
    return (h - mean) * (var + eps).rsqrt()


class SpatialAdaptiveNorm(nn.Module):
    """One Eq. 12 modulator: F~ = gamma(x) * norm_c(F) + beta(x), gamma = 1 + conv_gamma."""

    def __init__(self, ch: int, cond_ch: int = 1, hidden: int = 32, resize: str = "bilinear", eps: float = 1e-5):
        super().__init__()
        if resize not in RESIZE_MODES:
            raise ConfigError(f"net.cond_resize: unknown mode {resize!r}; choose one of {list(RESIZE_MODES)}")
        self.resize, self.eps = resize, eps
        self.shared = nn.Sequential(nn.Conv2d(cond_ch, hidden, 3, padding=1), nn.SiLU())
        self.conv_gamma = zero_(nn.Conv2d(hidden, ch, 3, padding=1))
        self.conv_beta = zero_(nn.Conv2d(hidden, ch, 3, padding=1))

    def forward(self, h: Tensor, cond: Tensor) -> Tensor:
        size = h.shape[-2:]
        if cond.shape[-2:] != size:
            kw = {"align_corners": False} if self.resize == "bilinear" else {}
            cond = F.interpolate(cond, size=size, mode=self.resize, **kw)
        a = self.shared(cond.to(h.dtype))
        return (1 + self.conv_gamma(a)) * channel_normalize(h, self.eps) + self.conv_beta(a)


class StructureGuidedNet(nn.Module):
    """net(y_t, mu_y, t, cond=x_{t-1}) -> eps_hat: the backbone with one Eq. 12 modulator per downsample."""

    def __init__(self, backbone: UNet, cond_ch: int = 1, cond_hidden: int = 32, cond_resize: str = "bilinear"):
        super().__init__()
        self.backbone = backbone
        self.cond_ch = cond_ch
        self.modulators = nn.ModuleList(
            SpatialAdaptiveNorm(c, cond_ch, cond_hidden, cond_resize) for c in backbone.down_channels)

    def forward(self, x_t: Tensor, mu: Tensor, t, cond: Optional[Tensor] = None) -> Tensor:
        if cond is None:
            raise ValueError("the texture net needs the structure state x_{t-1} as cond (B, 1, H, W)")
        if cond.ndim != 4 or cond.shape[0] != x_t.shape[0] or cond.shape[1] != self.cond_ch \
                or cond.shape[-2:] != x_t.shape[-2:]:
            raise ValueError(f"cond must have shape ({x_t.shape[0]}, {self.cond_ch}, {x_t.shape[-2]}, "
                             f"{x_t.shape[-1]}), got {tuple(cond.shape)}")
        return self.backbone(x_t, mu, t, modulate=lambda k, h: self.modulators[k](h, cond))
