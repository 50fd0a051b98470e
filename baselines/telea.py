"""Telea inpainting (Telea 2004, "An image inpainting technique based on the fast marching method"; OpenCV's
``cv2.inpaint`` with ``INPAINT_TELEA``): a classical floor.

The hole is filled from its boundary inwards in fast-marching order, each pixel a weighted average of the known
pixels within ``radius`` of it (weights favour near pixels, pixels along the normal to the boundary and pixels on
the same level line). Nothing is learned and nothing is random (``floor=True``: added to every experiment with
``floors: true``, beside ``biharmonic`` and ``navier_stokes``). NFE is 0. Registered as ``telea``.

radius 3: the value of OpenCV's inpainting tutorial (``cv.inpaint(img, mask, 3, cv.INPAINT_TELEA)``) that
evaluations using these floors copy; Telea's own neighbourhood is "a few pixels". OpenCV inpaints 8-bit
colour images only, so the known pixels go in as round(clip(x, 0, 1) * 255) (the uint8 the metrics score);
the sampler composites the known pixels back exactly.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from strbench.methods import Method, MethodSettings, SampleContext

DEFAULT_RADIUS = 3  # OpenCV's tutorial value (see the module docstring)


class TeleaSettings(MethodSettings):
    method: Literal["telea"]
    radius: int = Field(DEFAULT_RADIUS, ge=1)  # cv2.inpaint's inpaintRadius (pixels)


def cv2_inpaint(image_u8: np.ndarray, holes: np.ndarray, radius: int, flag: str) -> np.ndarray:
    """(H, W, 3) uint8 image, (H, W) bool holes -> cv2.inpaint's (H, W, 3) uint8 fill with
    ``cv2.<flag>`` (INPAINT_TELEA / INPAINT_NS). No hole: the image; all holes: zeros (nothing to fill from)."""
    import cv2

    if not holes.any():
        return image_u8
    if holes.all():
        return np.zeros_like(image_u8)
    return cv2.inpaint(np.ascontiguousarray(image_u8), holes.astype(np.uint8) * 255, float(radius),
                       getattr(cv2, flag))


def run_cv2(ctx: SampleContext, image: Tensor, known: Tensor, radius: int, flag: str):
    """cv2.inpaint image by image of a batch; it sees the known pixels only."""
    x = (image * known).detach().to("cpu", torch.float64).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    u8 = np.round(x * 255).astype(np.uint8)
    holes = (known.detach().cpu() < 0.5)[:, 0].numpy()
    out = np.stack([cv2_inpaint(u8[i], holes[i], radius, flag) for i in range(u8.shape[0])])
    y0 = (torch.from_numpy(out).permute(0, 3, 1, 2).to(torch.float64) / 255).to(image.device, image.dtype)
    ctx.emit(t=0, y=y0, phase="step")
    return y0, {}


def run(ctx: SampleContext, image: Tensor, known: Tensor, s: dict):
    return run_cv2(ctx, image, known, int(s["radius"]), "INPAINT_TELEA")


METHOD = Method(name="telea", settings=TeleaSettings, run=run, roles=lambda s: (),
                summary="Telea's fast-marching inpainting (OpenCV): a classical floor with no learning", floor=True)
