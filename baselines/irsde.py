"""IR-SDE inpainting (Luo et al. 2023): reverse-time Euler-Maruyama on the mean-reverting SDE.

mu = masked image (holes filled with 0, docs/SCIENCE.md#holes), y_T = mu + lambda * noise, then for
t = T..1: y_{t-1} = reverse step of y_t with eps_hat = net(y_t, mu, t) (Eq. 2; ``ode=True`` uses the
probability-flow ODE instead). The closed forms live in :mod:`strbench.sde`, their per-level form in
:class:`strbench.steps.Stepper`. Registered as ``irsde`` (pyproject entry point ``strbench.methods``).
"""
from __future__ import annotations

from typing import Literal

from torch import Tensor

from strbench.methods import Method, MethodSettings, SampleContext
from strbench.sde import masked_mean
from strbench.steps import Stepper, time_table


class IrsdeSettings(MethodSettings):
    method: Literal["irsde"]
    ode: bool = False  # reverse ODE instead of the SDE


def irsde_loop(ctx: SampleContext, net, image: Tensor, known: Tensor, *, ode: bool = False) -> Tensor:
    """IR-SDE reverse process t = T..1 from y_T = mu + lambda * noise; returns y_0 (not composited).
    ``ctx.counter["irsde"]`` is incremented once per network call (batched: one evaluation per image)."""
    st = Stepper(ctx.sdes.texture)
    mu = masked_mean(image, known)
    y = mu + st.lam * ctx.noise(mu)  # y_T (IR-SDE's noisy start)
    ts = time_table(st.T, y.shape[0], y.device)
    counter = ctx.counter
    counter.setdefault("irsde", 0)
    for t in range(st.T, 0, -1):
        ctx.begin(t)
        eps = net(y, mu, ts[t])
        counter["irsde"] += 1
        y = st.reverse(y, mu, eps, t, None if ode else ctx.noise(y))  # Eq. 2
        ctx.emit(t=t - 1, y=y, phase="step")
    return y


def run(ctx: SampleContext, image: Tensor, known: Tensor, s: dict):
    ctx.need("irsde", why="method 'irsde'")
    return irsde_loop(ctx, ctx.models.irsde, image, known, ode=s["ode"]), {}


METHOD = Method(name="irsde", settings=IrsdeSettings, run=run, roles=lambda s: ("irsde",),
                summary="IR-SDE (Luo et al. 2023): the mean-reverting SDE's reverse process, no structure",
                default_case="IR-SDE")
