"""RePaint* (Lugmayr et al. 2022): RePaint's resampling schedule driving the trained IR-SDE model.

No public code exists for RePaint* (docs/SCIENCE.md#repaint); strbench builds it from two pieces it already has:
RePaint's jump schedule and loop (:mod:`strbench.resampling`, shared with StrDiffusion's ablation A)
and the IR-SDE network. Registered as ``repaint`` (pyproject entry point ``strbench.methods``).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from strbench.methods import Method, SampleContext
from strbench.resampling import repaint_loop
from strbench.solvers import SolverSettings, make_solver


class RepaintSettings(SolverSettings):
    method: Literal["repaint"]
    jump_length: int = Field(10, ge=1)  # RePaint's jump length
    jump_n_sample: int = Field(10, ge=1)  # RePaint's resamplings per jump


def run(ctx: SampleContext, image: Tensor, known: Tensor, s: dict):
    ctx.need("irsde", why="method 'repaint'")
    return repaint_loop(ctx, ctx.models.irsde, image, known, jump_length=s["jump_length"],
                        jump_n_sample=s["jump_n_sample"], solver=make_solver(ctx.sdes.texture, s)), {}


METHOD = Method(name="repaint", settings=RepaintSettings, run=run, roles=lambda s: ("irsde",),
                summary="RePaint* (Lugmayr et al. 2022): RePaint's resampling on the trained IR-SDE model",
                default_case="RePaint*")
