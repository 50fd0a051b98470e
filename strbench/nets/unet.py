"""U-Net noise predictor eps(x_t, mu, t) of IR-SDE / StrDiffusion (docs/SCIENCE.md#texture-net).

DDPM-style U-Net as used by the paper: input cat(x_t - mu, mu), sinusoidal time embedding + MLP,
residual blocks with a time scale/shift (FiLM). The paper removes group norm and self-attention
for speed, so both are off by default (``norm="group"``, ``attention=True`` switch them on).

The backbone is plain. Wrappers reach inside only through one hook: ``forward(..., modulate=f)``
calls ``h = f(k, h)`` after the k-th encoder downsample (k = 0 .. depth-2). The structure-guided
texture net (Eq. 12, :mod:`strbench.nets.texture`) uses it; nothing else in here knows about it.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from strbench.errors import ConfigError

NORMS = ("none", "group")


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of integer levels t (B,) -> (B, dim) (Transformer / DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def as_time(t, batch: int, device) -> Tensor:
    """An int or a (B,) / scalar tensor of levels -> LongTensor (B,) on `device`."""
    t = torch.as_tensor(t, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must be an int or a tensor of shape ({batch},), got shape {tuple(t.shape)}")
    return t


def _groups(ch: int) -> int:
    """Largest divisor of ch that is <= 32 (GroupNorm groups)."""
    return max(g for g in range(1, min(32, ch) + 1) if ch % g == 0)


def make_norm(kind: str, ch: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "group":
        return nn.GroupNorm(_groups(ch), ch)
    raise ConfigError(f"net.norm: unknown norm {kind!r}; choose one of {list(NORMS)}")


def zero_(m: nn.Module) -> nn.Module:
    """Zero a layer's parameters (residual branches and the output start as identity / zero)."""
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


class ResBlock(nn.Module):
    """h = conv2(act(FiLM_t(conv1(act(norm(x)))))) + skip(x); FiLM = norm(h) * (1 + scale) + shift."""

    def __init__(self, c_in: int, c_out: int, t_dim: int, norm: str = "none", dropout: float = 0.0):
        super().__init__()
        self.norm1 = make_norm(norm, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(t_dim, 2 * c_out)
        self.norm2 = make_norm(norm, c_out)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = zero_(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(temb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return h + self.skip(x)


class SelfAttention(nn.Module):
    """Single-head spatial self-attention with a residual connection (optional; off in the paper)."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.out = zero_(nn.Conv2d(ch, ch, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        a = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.out(a.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


Modulate = Callable[[int, Tensor], Tensor]


class UNet(nn.Module):
    """Noise predictor net(x_t, mu, t) -> eps_hat with input cat(x_t - mu, mu).

    channels: image channels (3 texture / IR-SDE, 1 structure); nf: base width; ch_mult: width
    multiplier per level (depth = len(ch_mult), depth-1 downsamples); num_res_blocks per level.
    """

    def __init__(self, channels: int = 3, nf: int = 16, ch_mult: Sequence[int] = (1, 2, 2),
                 num_res_blocks: int = 1, norm: str = "none", attention: bool = False, dropout: float = 0.0):
        super().__init__()
        ch_mult = tuple(int(m) for m in ch_mult)
        if channels < 1 or nf < 1 or num_res_blocks < 1 or not ch_mult or min(ch_mult) < 1:
            raise ConfigError(f"net: channels, nf, num_res_blocks and ch_mult entries must be >= 1 "
                              f"(got channels={channels}, nf={nf}, num_res_blocks={num_res_blocks}, "
                              f"ch_mult={ch_mult})")
        if norm not in NORMS:
            raise ConfigError(f"net.norm: unknown norm {norm!r}; choose one of {list(NORMS)}")
        self.channels, self.nf, self.ch_mult = channels, nf, ch_mult
        self.depth = len(ch_mult)
        t_dim = 4 * nf
        self.time_mlp = nn.Sequential(nn.Linear(nf, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.conv_in = nn.Conv2d(2 * channels, nf, 3, padding=1)

        self.down = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        self.downsample = nn.ModuleList()
        widths = [nf * m for m in ch_mult]
        self.down_channels: list[int] = []  # channels after each downsample (for modulators)
        skips, ch = [], nf
        for lvl, w in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(ch, w, t_dim, norm, dropout))
                ch = w
                skips.append(ch)
            self.down.append(blocks)
            self.down_attn.append(SelfAttention(ch) if attention and lvl == self.depth - 1 else nn.Identity())
            if lvl < self.depth - 1:
                self.downsample.append(Downsample(ch))
                self.down_channels.append(ch)

        self.mid1 = ResBlock(ch, ch, t_dim, norm, dropout)
        self.mid_attn = SelfAttention(ch) if attention else nn.Identity()
        self.mid2 = ResBlock(ch, ch, t_dim, norm, dropout)

        self.up = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for lvl in reversed(range(self.depth)):
            w = widths[lvl]
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(ch + skips.pop(), w, t_dim, norm, dropout))
                ch = w
            self.up.append(blocks)
            self.up_attn.append(SelfAttention(ch) if attention and lvl == self.depth - 1 else nn.Identity())
            if lvl > 0:
                self.upsample.append(Upsample(ch))
        self.norm_out = make_norm(norm, ch)
        self.conv_out = zero_(nn.Conv2d(ch, channels, 3, padding=1))

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this (2^(depth-1))."""
        return 2 ** (self.depth - 1)

    def check_input(self, x_t: Tensor, mu: Tensor) -> None:
        if x_t.ndim != 4 or x_t.shape[1] != self.channels:
            raise ValueError(f"net expects x_t of shape (B, {self.channels}, H, W), got {tuple(x_t.shape)}")
        if mu.shape != x_t.shape:
            raise ValueError(f"mu shape {tuple(mu.shape)} differs from x_t shape {tuple(x_t.shape)}")
        h, w = x_t.shape[-2:]
        m = self.multiple
        if h % m or w % m:
            raise ConfigError(f"image size {h}x{w} is not divisible by {m} = 2^(depth-1) for ch_mult "
                              f"{self.ch_mult}: use a size that is a multiple of {m} or a shorter ch_mult")

    def forward(self, x_t: Tensor, mu: Tensor, t, cond: Optional[Tensor] = None,
                modulate: Optional[Modulate] = None) -> Tensor:
        if cond is not None:
            raise ValueError("this network takes no structure condition (cond); only the texture net does")
        self.check_input(x_t, mu)
        temb = self.time_mlp(timestep_embedding(as_time(t, x_t.shape[0], x_t.device), self.nf))
        h = self.conv_in(torch.cat([x_t - mu, mu], dim=1))
        skips = []
        for lvl, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, temb)
                skips.append(h)
            h = self.down_attn[lvl](h)
            if lvl < self.depth - 1:
                h = self.downsample[lvl](h)
                if modulate is not None:
                    h = modulate(lvl, h)  # hook: Eq. 12 after each encoder downsample
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for i, blocks in enumerate(self.up):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), temb)
            h = self.up_attn[i](h)
            if i < self.depth - 1:
                h = self.upsample[i](h)
        return self.conv_out(F.silu(self.norm_out(h)))
