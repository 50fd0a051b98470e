"""Biharmonic inpainting (Damelin & Hoang 2018, scikit-image's ``inpaint_biharmonic``): a classical floor.

Each hole is filled by the smooth (biharmonic) function that matches the known pixels around it, per
colour channel. Nothing is learned and nothing is random, so every table can say how much the diffusion
models gain over a method with no training (``floor=True``: added to every experiment with ``floors: true``).
NFE is 0. Registered as ``biharmonic`` (pyproject entry point ``strbench.methods``).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from strbench.methods import Method, MethodSettings, SampleContext


class BiharmonicSettings(MethodSettings):
    method: Literal["biharmonic"]


def inpaint(image: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """(H, W, 3) float image, (H, W) bool holes -> the biharmonic fill (an all-hole image stays 0)."""
    from skimage.restoration import inpaint_biharmonic

    if not holes.any():
        return image
    if holes.all():
        return np.zeros_like(image)
    return inpaint_biharmonic(image, holes, channel_axis=-1)


def run(ctx: SampleContext, image: Tensor, known: Tensor, s: dict):
    img = (image * known).detach().to("cpu", torch.float64).permute(0, 2, 3, 1).numpy()  # it sees known pixels only
    holes = (known.detach().cpu() < 0.5)[:, 0].numpy()
    out = np.stack([inpaint(img[i], holes[i]) for i in range(img.shape[0])])
    y0 = torch.from_numpy(out).permute(0, 3, 1, 2).to(image.device, image.dtype)
    ctx.emit(t=0, y=y0, phase="step")
    return y0, {}


METHOD = Method(name="biharmonic", settings=BiharmonicSettings, run=run, roles=lambda s: (),
                summary="biharmonic inpainting (scikit-image): a classical floor with no learning", floor=True)
