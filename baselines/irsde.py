"""IR-SDE inpainting (Luo et al. 2023): reverse-time Euler-Maruyama on the mean-reverting SDE.

mu = masked image (holes filled with 0, docs/SCIENCE.md#holes), y_T = mu + lambda * noise, then for
t = T..1: y_{t-1} = reverse step of y_t with eps_hat = net(y_t, mu, t) (Eq. 2; ``ode=True`` uses the
probability-flow ODE instead). The closed forms live in :mod:`strbench.sde`, their per-level form in
:class:`strbench.steps.Stepper`. With ``solver: posterior | mr`` the loop visits ``steps`` levels only, one
network call each (:func:`solver_loop`, :mod:`strbench.solvers`, docs/SCIENCE.md#solvers). Registered as ``irsde`` (pyproject entry point ``strbench.methods``).
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import model_validator
from torch import Tensor

from strbench.methods import Method, SampleContext
from strbench.sde import masked_mean
from strbench.solvers import Solver, SolverSettings, make_solver
from strbench.steps import Stepper, time_table


class IrsdeSettings(SolverSettings):
    method: Literal["irsde"]
    ode: bool = False  # reverse ODE instead of the SDE (solver euler; mr has solver_type)

    @model_validator(mode="after")
    def _ode_applies(self):
        if self.ode and self.solver != "euler":
            raise ValueError("sampler setting 'ode' only applies to solver 'euler'; with solver 'mr' set "
                             "solver_type: ode")
        return self


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


def solver_loop(ctx: SampleContext, net, image: Tensor, known: Tensor, solver: Solver) -> Tensor:
    """The reverse process on the solver's grid levels[0] = T > ... > 0 (docs/SCIENCE.md#solvers): one
    network call per step, ``ctx.counter["irsde"]`` counts them; returns y_0 (not composited)."""
    mu = masked_mean(image, known)
    y = mu + solver.lam * ctx.noise(mu)  # y_T
    ts = time_table(solver.T, y.shape[0], y.device)
    counter = ctx.counter
    counter.setdefault("irsde", 0)
    prev: Optional[Tensor] = None
    for k in range(solver.n):
        t = solver.levels[k]
        ctx.begin(t)
        eps = net(y, mu, ts[t])
        counter["irsde"] += 1
        y, prev = solver.step(k, y, mu, eps, ctx.noise, prev)
        ctx.emit(t=solver.levels[k + 1], y=y, phase="step")
    return y


def run(ctx: SampleContext, image: Tensor, known: Tensor, s: dict):
    ctx.need("irsde", why="method 'irsde'")
    if s["solver"] == "euler":  # today's loop, unchanged
        return irsde_loop(ctx, ctx.models.irsde, image, known, ode=s["ode"]), {}
    return solver_loop(ctx, ctx.models.irsde, image, known, make_solver(ctx.sdes.texture, s)), {}


METHOD = Method(name="irsde", settings=IrsdeSettings, run=run, roles=lambda s: ("irsde",),
                summary="IR-SDE (Luo et al. 2023): the mean-reverting SDE's reverse process, no structure",
                default_case="IR-SDE")
