"""Navier-Stokes inpainting (Bertalmio, Bertozzi & Sapiro 2001, "Navier-Stokes, fluid dynamics, and image and
video inpainting"; OpenCV's ``cv2.inpaint`` with ``INPAINT_NS``): a classical floor.

Image intensity is treated as a stream function: isophotes (lines of equal intensity) are continued from the
hole's boundary into it, as a fluid's vorticity is transported, then the hole is solved for. Nothing is
learned and nothing is random (``floor=True``: added to every experiment with ``floors: true``, beside
``biharmonic`` and ``telea``). NFE is 0. Registered as ``navier_stokes``.

radius 3 as for ``telea`` (OpenCV's tutorial value); the 8-bit input and the compositing are the same
(baselines/telea.py: ``run_cv2``).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from baselines.telea import DEFAULT_RADIUS, run_cv2
from strbench.methods import Method, MethodSettings, SampleContext


class NavierStokesSettings(MethodSettings):
    method: Literal["navier_stokes"]
    radius: int = Field(DEFAULT_RADIUS, ge=1)  # cv2.inpaint's inpaintRadius (pixels)


def run(ctx: SampleContext, image: Tensor, known: Tensor, s: dict):
    return run_cv2(ctx, image, known, int(s["radius"]), "INPAINT_NS")


METHOD = Method(name="navier_stokes", settings=NavierStokesSettings, run=run, roles=lambda s: (),
                summary="Navier-Stokes inpainting (OpenCV): a classical floor with no learning", floor=True)
