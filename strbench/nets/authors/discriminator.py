"""The authors' discriminator (StrDiffusion ``Discriminator(nc=4, ngf, t_emb_dim)``, DDGAN style).

See docs/SCIENCE.md#authors-nets.

D(y, x, t) -> logits (B,), strbench's call; the authors' order is ``forward(t, x_t=y, S=x)``. Input cat(y, x),
a 1x1 start conv, four down blocks (time bias after the first conv, FIR downsampling of both the branch and the
skip, output (h + skip(x)) / sqrt(2)), minibatch stddev (groups of 4) as the last channel, a 3x3 conv, a spatial
sum and a linear head. No normalisation, no spectral norm. The FIR downsample (upfirdn2d, kernel [1,3,3,1], down 2,
pad 1) is a depthwise stride-2 pad-1 convolution with outer([1,3,3,1], [1,3,3,1]) / 64: no compiled op.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from strbench.errors import ConfigError
from strbench.nets.authors.blocks import as_levels

FIR_TAPS = (1.0, 3.0, 3.0, 1.0)
STDDEV_GROUP = 4


def fir_kernel(dtype: torch.dtype, device) -> Tensor:
    """outer(k, k) / sum(k)^2 for k = [1, 3, 3, 1]: a 4x4 kernel summing to 1 (exact in binary floats)."""
    k = torch.tensor(FIR_TAPS, dtype=dtype, device=device)
    return torch.outer(k, k) / k.sum() ** 2


def fir_downsample(x: Tensor) -> Tensor:
    """upfirdn2d(x, K, down=2, pad=(1, 1)) as a depthwise conv: stride 2, zero padding 1; H -> floor(H / 2)."""
    c = x.shape[1]
    w = fir_kernel(x.dtype, x.device).expand(c, 1, 4, 4)
    return F.conv2d(x, w, stride=2, padding=1, groups=c)


def minibatch_stddev(out: Tensor, group: int = STDDEV_GROUP) -> Tensor:
    """StyleGAN2 minibatch stddev (1 feature): out (B, C, H, W) -> (B, C + 1, H, W); sample b gets the mean over
    (C, H, W) of sqrt(biased var + 1e-8) across its group {g (B/G) + b mod (B/G)}, G = min(B, group)."""
    b, c, h, w = out.shape
    g = min(b, group)
    if b % g:
        raise ValueError(f"discriminator minibatch stddev groups samples by {group}: the batch must be <= {group} "
                         f"or a multiple of {group} (got {b})")
    sd = out.reshape(g, -1, 1, c, h, w)
    sd = torch.sqrt(sd.var(0, unbiased=False) + 1e-8)
    sd = sd.mean([2, 3, 4], keepdim=True).squeeze(2)
    return torch.cat([out, sd.repeat(g, 1, h, w)], dim=1)


def timestep_embedding(t: Tensor, dim: int, max_positions: int = 10000) -> Tensor:
    """(T,) -> (T, dim): concat(sin, cos) of float(t) exp(-k ln(max_positions) / (dim/2 - 1)); odd dim zero-padded."""
    half = dim // 2
    c = math.log(max_positions) / (half - 1)
    freq = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * -c)
    arg = t.float()[:, None] * freq[None, :]
    emb = torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class TimestepEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.main = nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(0.2), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.main(timestep_embedding(t, self.dim))


class DownConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, t_emb_dim: int, downsample: bool):
        super().__init__()
        self.downsample = downsample
        self.conv1 = nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1))
        self.conv2 = nn.Sequential(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.dense_t1 = nn.Linear(t_emb_dim, c_out)
        self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: Tensor, t_emb: Tensor) -> Tensor:
        h = self.conv1(F.leaky_relu(x, 0.2)) + self.dense_t1(t_emb)[..., None, None]
        h = F.leaky_relu(h, 0.2)
        if self.downsample:
            h, x = fir_downsample(h), fir_downsample(x)
        return (self.conv2(h) + self.skip(x)) / math.sqrt(2)


class AuthorsDiscriminator(nn.Module):
    """D(y, x, t) -> logits (B,); y texture (B, 3, H, W), x structure (B, 1, H, W), t levels (int or (1,)/(B,))."""

    def __init__(self, texture_ch: int = 3, structure_ch: int = 1, ngf: int = 64, t_emb_dim: int = 256):
        super().__init__()
        if not isinstance(ngf, int) or ngf < 1:
            raise ConfigError(f"authors discriminator: ngf must be an integer >= 1 (got {ngf!r})")
        if not isinstance(t_emb_dim, int) or t_emb_dim < 4:
            raise ConfigError(f"authors discriminator: t_emb_dim must be an integer >= 4 (got {t_emb_dim!r})")
        self.texture_ch, self.structure_ch, self.ngf, self.t_emb_dim = texture_ch, structure_ch, ngf, t_emb_dim
        nc = texture_ch + structure_ch
        self.t_embed = TimestepEmbedding(t_emb_dim)
        self.start_conv = nn.Conv2d(nc, 2 * ngf, 1)
        self.conv1 = DownConvBlock(2 * ngf, 2 * ngf, t_emb_dim, downsample=False)
        self.conv2 = DownConvBlock(2 * ngf, 4 * ngf, t_emb_dim, downsample=True)
        self.conv3 = DownConvBlock(4 * ngf, 8 * ngf, t_emb_dim, downsample=True)
        self.conv4 = DownConvBlock(8 * ngf, 8 * ngf, t_emb_dim, downsample=True)
        self.final_conv = nn.Conv2d(8 * ngf + 1, 8 * ngf, 3, padding=1)
        self.end_linear = nn.Linear(8 * ngf, 1)

    def forward(self, y: Tensor, x: Tensor, t) -> Tensor:
        if y.ndim != 4 or y.shape[1] != self.texture_ch or x.shape != (y.shape[0], self.structure_ch, *y.shape[-2:]):
            raise ValueError(f"D expects y (B, {self.texture_ch}, H, W) and x (B, {self.structure_ch}, H, W), "
                             f"got {tuple(y.shape)} and {tuple(x.shape)}")
        t_emb = F.leaky_relu(self.t_embed(as_levels(t, y.shape[0], y.device)), 0.2)
        h = self.start_conv(torch.cat([y, x.to(y.dtype)], dim=1))
        for block in (self.conv1, self.conv2, self.conv3, self.conv4):
            h = block(h, t_emb)
        h = F.leaky_relu(self.final_conv(minibatch_stddev(h)), 0.2)
        return self.end_linear(h.sum(dim=(2, 3))).flatten()
