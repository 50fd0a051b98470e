"""The texture net's structure guides: one ``SPADEBlock(C)`` per encoder level (docs/SCIENCE.md#authors-nets).

``x + conv_1(lrelu(SPADE_1(conv_0(lrelu(SPADE_0(x, S))), S)))`` with spectral-norm 3x3 convolutions
(``torch.nn.utils.spectral_norm``: keys ``weight_orig`` + buffers ``weight_u``, ``weight_v``; in eval mode the
stored u, v are used as they are, no power iteration; in train mode one power iteration per forward).
SPADE: parameter-free positional norm (channel mean, unbiased channel variance), then
``norm * (1 + gamma(S)) + beta(S)`` with S nearest-resized (legacy 'nearest') to the feature size.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

SPADE_HIDDEN = 16  # hard-coded in the authors' SPADE
LABEL_NC = 1  # the structure map


def positional_norm(x: Tensor, eps: float = 1e-5) -> Tensor:
    """PositionalNorm2d: (x - mean_c) / sqrt(var_c + eps), variance over channels with Bessel's correction."""
    mean = x.mean(dim=1, keepdim=True)
    std = (x.var(dim=1, keepdim=True) + eps).sqrt()
    return (x - mean) / std


class SPADE(nn.Module):
    def __init__(self, norm_nc: int, label_nc: int = LABEL_NC, hidden: int = SPADE_HIDDEN):
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, 3, padding=1)

    def forward(self, x: Tensor, segmap: Tensor) -> Tensor:
        normalized = positional_norm(x)
        segmap = F.interpolate(segmap.to(x.dtype), size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(segmap)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEBlock(nn.Module):
    """fin == fout guide block (no learned shortcut): x + conv_1(lrelu(norm_1(conv_0(lrelu(norm_0(x, S))), S)))."""

    def __init__(self, ch: int, label_nc: int = LABEL_NC):
        super().__init__()
        self.conv_0 = nn.utils.spectral_norm(nn.Conv2d(ch, ch, 3, padding=1))
        self.conv_1 = nn.utils.spectral_norm(nn.Conv2d(ch, ch, 3, padding=1))
        self.norm_0 = SPADE(ch, label_nc)
        self.norm_1 = SPADE(ch, label_nc)
        self.init_weights()

    def init_weights(self) -> None:
        """The authors' training init: conv weights N(0, 0.02), biases 0 (spectral-norm convs: weight_orig)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight_orig if hasattr(m, "weight_orig") else m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, seg: Tensor) -> Tensor:
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return x + dx
