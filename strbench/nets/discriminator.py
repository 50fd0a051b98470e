"""Correlation discriminator D(y, x, t) -> logits (B,) (paper Sec. 2.4.1, Eqs. 14-16).

A time-conditioned conv net on cat(texture y (3 ch), structure x (1 ch)): strided conv blocks with a
time scale/shift, global average pooling, a linear head. The logit s is the correlation score;
D = sigmoid(s) in Eq. 14.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from strbench.errors import ConfigError
from strbench.nets.unet import as_time, make_norm, timestep_embedding, zero_


class _DownBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, t_dim: int, norm: str = "none"):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        self.norm1 = make_norm(norm, c_out)
        self.film = zero_(nn.Linear(t_dim, 2 * c_out))
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.norm2 = make_norm(norm, c_out)

    def forward(self, h: Tensor, temb: Tensor) -> Tensor:
        h = self.norm1(self.conv1(h))
        scale, shift = self.film(temb)[:, :, None, None].chunk(2, dim=1)
        h = F.leaky_relu(h * (1 + scale) + shift, 0.2)
        return F.leaky_relu(self.norm2(self.conv2(h)), 0.2)


class Discriminator(nn.Module):
    """D(y, x, t) -> logits (B,); y (B, 3, H, W) texture, x (B, 1, H, W) structure, t levels."""

    def __init__(self, texture_ch: int = 3, structure_ch: int = 1, nf: int = 16, ch_mult: Sequence[int] = (1, 2, 4),
                 norm: str = "none"):
        super().__init__()
        ch_mult = tuple(int(m) for m in ch_mult)
        if nf < 1 or not ch_mult or min(ch_mult) < 1:
            raise ConfigError(f"discriminator: nf and ch_mult entries must be >= 1 (got nf={nf}, ch_mult={ch_mult})")
        self.texture_ch, self.structure_ch, self.nf = texture_ch, structure_ch, nf
        t_dim = 4 * nf
        self.time_mlp = nn.Sequential(nn.Linear(nf, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.conv_in = nn.Conv2d(texture_ch + structure_ch, nf, 3, padding=1)
        ch = nf
        self.blocks = nn.ModuleList()
        for m in ch_mult:
            self.blocks.append(_DownBlock(ch, nf * m, t_dim, norm))
            ch = nf * m
        self.head = zero_(nn.Linear(ch, 1))

    def forward(self, y: Tensor, x: Tensor, t) -> Tensor:
        if y.ndim != 4 or y.shape[1] != self.texture_ch or x.shape != (y.shape[0], self.structure_ch, *y.shape[-2:]):
            raise ValueError(f"D expects y (B, {self.texture_ch}, H, W) and x (B, {self.structure_ch}, H, W), "
                             f"got {tuple(y.shape)} and {tuple(x.shape)}")
        temb = self.time_mlp(timestep_embedding(as_time(t, y.shape[0], y.device), self.nf))
        h = F.leaky_relu(self.conv_in(torch.cat([y, x.to(y.dtype)], dim=1) * 2 - 1), 0.2)
        for block in self.blocks:
            h = block(h, temb)
        return self.head(h.mean(dim=(2, 3))).squeeze(1)
