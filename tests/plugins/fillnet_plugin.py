"""A test-only method that brings a network of its own: one file, registered by one entry point.

``fillnet``: a small convolutional net maps the masked image and its mask to the whole image in one call
(no diffusion). The file declares the role ``fillnet`` (its network factory and its training objective) and
the method that samples with it; strbench learns both from the registration alone (entry point
``fillnet = fillnet_plugin:METHOD`` in group ``strbench.methods``): the experiment schema (``nets.roles``,
``train.roles``, ``models:``), the planner, the model cache, the trainer and the samplers' ``Models``.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from strbench.methods import Method, MethodSettings, SampleContext
from strbench.nets import Net
from strbench.roles import Role


class FillNet(nn.Module):
    """(masked image, known) -> image: three 3x3 convolutions."""

    def __init__(self, nf: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(4, nf, 3, padding=1), nn.SiLU(), nn.Conv2d(nf, nf, 3, padding=1),
                                  nn.SiLU(), nn.Conv2d(nf, 3, 3, padding=1))

    def forward(self, masked: Tensor, known: Tensor) -> Tensor:
        return masked + (1 - known) * self.body(torch.cat([masked, known], dim=1))


def objective(tr, model: nn.Module, g: torch.Generator, out=None) -> Tensor:
    """L1 to the clean image in the holes (the trainer's batch: images, known masks)."""
    b = tr.sample_batch(g)
    pred = model(b.y0 * b.known, b.known)
    if out is not None:
        out.update(x_t=(b.y0 * b.known).detach(), pred=pred.detach(), target=b.y0)
    return ((pred - b.y0).abs() * (1 - b.known)).mean()


def _example(batch: int, size: int, device, g: torch.Generator):
    image = torch.rand(batch, 3, size, size, generator=g).to(device)
    return (image, torch.ones(batch, 1, size, size, device=device)), {}


ROLE = Role("fillnet", {"strbench": Net(lambda kw: FillNet(**kw), keys=("nf",), defaults={"nf": 8})}, objective,
            _example, summary="one-call inpainting net (test plugin)")


class FillNetSettings(MethodSettings):
    method: Literal["fillnet"]


def run(ctx: SampleContext, image: Tensor, known: Tensor, s: dict):
    ctx.need("fillnet", why="method 'fillnet'")
    y0 = ctx.models.fillnet(image * known, known)
    ctx.counter["fillnet"] = ctx.counter.get("fillnet", 0) + 1
    ctx.emit(t=0, y=y0, phase="step")
    return y0, {}


METHOD = Method(name="fillnet", settings=FillNetSettings, run=run, roles=lambda s: ("fillnet",),
                summary="one-call inpainting net (test plugin with its own network role)", networks=(ROLE,))
