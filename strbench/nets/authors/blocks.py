"""Building blocks of the authors' U-Net (StrDiffusion ``ConditionalUNets`` = IR-SDE ``ConditionalUNet``).

Written from the authors' layer-by-layer structure (docs/SCIENCE.md#authors-nets);
module and attribute names are the authors' so that ``state_dict()`` keys match their released files.
No normalisation inside the residual blocks; linear attention is always 4 heads x 32.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTN_HEADS, ATTN_DIM_HEAD = 4, 32  # hard-coded in the authors' LinearAttention


def as_levels(t, batch: int, device) -> Tensor:
    """Levels for the time embedding: an int/float -> the 1-element tensor [t] (it broadcasts over the batch,
    as in the authors' forward); a 0-d tensor -> shape (1,); a 1-D tensor of length 1 or `batch` as it is."""
    if isinstance(t, bool):
        raise ValueError(f"t must be an int, a float or a tensor of shape (1,) or ({batch},), got {t!r}")
    if isinstance(t, (int, float)):
        return torch.tensor([t], device=device)
    t = torch.as_tensor(t, device=device)
    if t.ndim == 0:
        t = t.reshape(1)
    if t.ndim != 1 or t.shape[0] not in (1, batch):
        raise ValueError(f"t must be an int or a tensor of shape (1,) or ({batch},), got shape {tuple(t.shape)}")
    return t


def default_conv(c_in: int, c_out: int, k: int, bias: bool = False) -> nn.Conv2d:
    """The authors' ``default_conv``: k x k, padding k // 2, no bias unless asked."""
    return nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=bias)


class SinusoidalPosEmb(nn.Module):
    """(T,) levels -> (T, dim): concat(sin(t f_k), cos(t f_k)), f_k = exp(-k ln(10000) / (dim/2 - 1))."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, time: Tensor) -> Tensor:
        half = self.dim // 2
        c = math.log(10000) / (half - 1)
        freq = torch.exp(torch.arange(half, device=time.device) * -c)
        arg = time[:, None] * freq[None, :]
        return torch.cat((arg.sin(), arg.cos()), dim=-1)


class Block(nn.Module):
    """conv 3x3 (no bias) -> optional x (scale + 1) + shift -> SiLU."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.proj = default_conv(c_in, c_out, 3)

    def forward(self, x: Tensor, scale_shift=None) -> Tensor:
        x = self.proj(x)
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return F.silu(x)


class ResBlock(nn.Module):
    """h = block2(block1(x, (scale, shift) of mlp(t_emb))) + res_conv(x); res_conv 1x1 no bias when widths differ."""

    def __init__(self, c_in: int, c_out: int, time_emb_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_emb_dim, 2 * c_out))
        self.block1 = Block(c_in, c_out)
        self.block2 = Block(c_out, c_out)
        self.res_conv = default_conv(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, t_emb: Tensor) -> Tensor:
        e = self.mlp(t_emb)[:, :, None, None]
        h = self.block1(x, e.chunk(2, dim=1))
        return self.block2(h) + self.res_conv(x)


class LayerNorm(nn.Module):
    """Channel LayerNorm with gain only: (x - mean_c) rsqrt(var_c + eps) g, biased variance;
    eps 1e-5 in fp32, 1e-3 otherwise (the authors' own class, not torch.nn.LayerNorm)."""

    def __init__(self, dim: int):
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        eps = 1e-5 if x.dtype == torch.float32 else 1e-3
        var = torch.var(x, dim=1, unbiased=False, keepdim=True)
        mean = torch.mean(x, dim=1, keepdim=True)
        return (x - mean) * (var + eps).rsqrt() * self.g


class LinearAttention(nn.Module):
    """Linear attention (4 heads x 32): q softmaxed over features, k over positions;
    context = k v^T, out = context^T q."""

    def __init__(self, dim: int, heads: int = ATTN_HEADS, dim_head: int = ATTN_DIM_HEAD):
        super().__init__()
        self.heads, self.scale = heads, dim_head ** -0.5
        hidden = heads * dim_head
        self.to_qkv = default_conv(dim, 3 * hidden, 1)
        self.to_out = nn.Sequential(nn.Conv2d(hidden, dim, 1), LayerNorm(dim))

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        q, k, v = (a.reshape(b, self.heads, -1, h * w) for a in self.to_qkv(x).chunk(3, dim=1))
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        v = v / (h * w)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q)
        return self.to_out(out.reshape(b, -1, h, w))


class PreNorm(nn.Module):
    """fn(LayerNorm(x)); `fn` is registered before `norm` (the authors' key order)."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.fn = fn
        self.norm = LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(self.norm(x))


class Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x) + x


def attention(dim: int) -> nn.Module:
    """Residual(PreNorm(LinearAttention)): x + to_out(LA(LN(x)))."""
    return Residual(PreNorm(dim, LinearAttention(dim)))


def downsample(c_in: int, c_out: int) -> nn.Module:
    """Conv 4x4, stride 2, padding 1, with bias: halves H and W."""
    return nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)


def upsample(c_in: int, c_out: int) -> nn.Module:
    """Nearest x2 then conv 3x3 with bias (keys ``.1.weight``/``.1.bias``)."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1))
