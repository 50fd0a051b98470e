"""The authors' U-Net noise predictor, plain (structure net, IR-SDE) or with SPADE guides (texture net).

Plain: StrDiffusion ``ConditionalUNets`` = IR-SDE ``ConditionalUNet`` (docs/SCIENCE.md#authors-nets).
Guided: StrDiffusion ``ConditionalUNet``: the same tree plus ``downs[i][4] = SPADEBlock(dim_out(i))``
applied right after each encoder level's down/out conv, driven by the 1-channel structure map S.

strbench's call ``net(x_t, mu, t, cond=None) -> eps_hat`` maps onto the authors'
``forward(xt, cond=mu, time=t, S=cond)``: input cat(x_t - mu, mu), reflect-padded right/bottom to a multiple of
2^depth (S is not padded), output cropped back.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from strbench.errors import ConfigError
from strbench.nets.authors.blocks import (ResBlock, SinusoidalPosEmb, as_levels, attention, default_conv, downsample,
                                          upsample)
from strbench.nets.authors.spade import SPADEBlock


class AuthorsUNet(nn.Module):
    """net(x_t, mu, t, cond=None) -> eps_hat (B, out_nc, H, W); ``guided=True`` adds the texture net's SPADE guides
    and then requires ``cond`` = structure state (B, 1, H, W)."""

    def __init__(self, in_nc: int = 3, out_nc: int = 3, nf: int = 64, depth: int = 4, guided: bool = False):
        super().__init__()
        if not isinstance(nf, int) or nf < 4 or nf % 2:
            raise ConfigError(f"authors U-Net: nf must be an even integer >= 4 (got {nf!r})")
        if not isinstance(depth, int) or depth < 1:
            raise ConfigError(f"authors U-Net: depth must be an integer >= 1 (got {depth!r})")
        self.in_nc, self.out_nc, self.nf, self.depth, self.guided = in_nc, out_nc, nf, depth, guided
        time_dim = 4 * nf
        self.init_conv = default_conv(2 * in_nc, nf, 7)
        self.time_mlp = nn.Sequential(SinusoidalPosEmb(nf), nn.Linear(nf, time_dim), nn.GELU(),
                                      nn.Linear(time_dim, time_dim))
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i in range(depth):
            d_in, d_out = nf * 2 ** i, nf * 2 ** (i + 1)
            last = i == depth - 1
            level = [ResBlock(d_in, d_in, time_dim), ResBlock(d_in, d_in, time_dim), attention(d_in),
                     default_conv(d_in, d_out, 3) if last else downsample(d_in, d_out)]
            if guided:
                level.append(SPADEBlock(d_out))
            self.downs.append(nn.ModuleList(level))
        for i in reversed(range(depth)):
            d_in, d_out = nf * 2 ** i, nf * 2 ** (i + 1)
            self.ups.append(nn.ModuleList([
                ResBlock(d_out + d_in, d_out, time_dim), ResBlock(d_out + d_in, d_out, time_dim), attention(d_out),
                default_conv(d_out, d_in, 3) if i == 0 else upsample(d_out, d_in)]))
        mid = nf * 2 ** depth
        self.mid_block1 = ResBlock(mid, mid, time_dim)
        self.mid_attn = attention(mid)
        self.mid_block2 = ResBlock(mid, mid, time_dim)
        self.final_res_block = ResBlock(2 * nf, nf, time_dim)
        self.final_conv = nn.Conv2d(nf, out_nc, 3, padding=1)

    @property
    def multiple(self) -> int:
        """Inputs are reflect-padded to a multiple of this (2^depth) and cropped back; any size works."""
        return 2 ** self.depth

    def check_input(self, x_t: Tensor, mu: Tensor, cond: Optional[Tensor]) -> None:
        if x_t.ndim != 4 or x_t.shape[1] != self.in_nc:
            raise ValueError(f"net expects x_t of shape (B, {self.in_nc}, H, W), got {tuple(x_t.shape)}")
        if mu.shape != x_t.shape:
            raise ValueError(f"mu shape {tuple(mu.shape)} differs from x_t shape {tuple(x_t.shape)}")
        if not self.guided and cond is not None:
            raise ValueError("this network takes no structure condition (cond); only the texture net does")
        if self.guided:
            if cond is None:
                raise ValueError("the texture net needs the structure state as cond (B, 1, H, W)")
            if cond.ndim != 4 or cond.shape[0] != x_t.shape[0] or cond.shape[1] != 1:
                raise ValueError(f"cond must have shape ({x_t.shape[0]}, 1, H, W), got {tuple(cond.shape)}")
        h, w = x_t.shape[-2:]
        s = self.multiple
        if (s - h % s) % s >= h or (s - w % s) % s >= w:
            raise ValueError(f"image size {h}x{w} is too small to reflect-pad to a multiple of {s} = 2^depth")

    def forward(self, x_t: Tensor, mu: Tensor, t, cond: Optional[Tensor] = None) -> Tensor:
        self.check_input(x_t, mu, cond)
        time = as_levels(t, x_t.shape[0], x_t.device)
        H, W = x_t.shape[-2:]
        s = self.multiple
        x = torch.cat([x_t - mu, mu], dim=1)
        x = F.pad(x, (0, (s - W % s) % s, 0, (s - H % s) % s), mode="reflect")
        x = self.init_conv(x)
        x0 = x
        temb = self.time_mlp(time)
        skips = []
        for level in self.downs:
            x = level[0](x, temb)
            skips.append(x)
            x = level[1](x, temb)
            x = level[2](x)
            skips.append(x)
            x = level[3](x)
            if self.guided:
                x = level[4](x, cond)  # guide after the skips: skip features never see S
        x = self.mid_block2(self.mid_attn(self.mid_block1(x, temb)), temb)
        for b1, b2, attn, up in self.ups:
            x = b1(torch.cat([x, skips.pop()], dim=1), temb)
            x = b2(torch.cat([x, skips.pop()], dim=1), temb)
            x = up(attn(x))
        x = self.final_res_block(torch.cat([x, x0], dim=1), temb)
        return self.final_conv(x)[..., :H, :W]
