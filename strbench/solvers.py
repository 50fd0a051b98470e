"""Fast solvers for the mean-reverting SDE on a coarse grid of its trained levels (docs/SCIENCE.md#solvers).

Every diffusion method steps y from level T down to 0. ``euler`` is today's loop (Euler-Maruyama over
all T levels, :class:`strbench.steps.Stepper`); ``posterior`` and ``mr`` visit only ``steps`` levels
T = t_0 > t_1 > ... > t_N = 0 chosen from 1..T (:func:`step_grid`), one network call per step:

- marginals (Eq. 3): y_t = mu + alpha_t (y_0 - mu) + sigma_t n, alpha_t = e^{-thetabar_t dt},
  sigma_t = sigmabar_t = lambda sqrt(1 - alpha_t^2); half log-SNR lam_t = log alpha_t - log sigma_t
  (S1) data prediction from the noise net:  y0_hat = mu + (y_t - mu - sigma_t eps) / alpha_t
- ``posterior`` (Eq. 4 generalised from (t, t-1) to (t, s)): an exact draw from q(y_s | y_t, y0_hat),
  A = alpha_t / alpha_s, B = alpha_t, C = alpha_s:
  (S2) y_s = mu + A (1 - C^2)/(1 - B^2) (y_t - mu) + C (1 - A^2)/(1 - B^2) (y0_hat - mu)
             + lambda sqrt((1 - A^2)(1 - C^2)/(1 - B^2)) z
- ``mr`` (MR Sampler, Li et al. ICLR 2025; data prediction, exponential integrator in lam), h = lam_s - lam_t,
  D0 = y0_hat - mu, D1 = (h / h_prev) (D0 - D0_prev) (order 2: the previous step's data prediction):
  (S3) ODE: y_s = mu + (sigma_s/sigma_t)(y_t - mu) + alpha_s (1 - e^{-h}) D0 + alpha_s phi_2 D1,
       phi_2 = 1 + (e^{-h} - 1)/h
  (S4) SDE: y_s = mu + (sigma_s/sigma_t) e^{-h} (y_t - mu) + alpha_s (1 - e^{-2h}) D0 + alpha_s psi_2 D1
             + sigma_s sqrt(1 - e^{-2h}) z,   psi_2 = 1 - (1 - e^{-2h})/(2h)
  The first step (no history) and the last (s = 0: lam_0 = inf, sigma_0 = 0) are first order; there
  (S3)/(S4) give y_0 = y0_hat. (S4) at order 1 is (S2) (same mean and variance; a test checks it).

:class:`Solver` evaluates the per-step scalars once, in float64, as Python floats (like Stepper).
:class:`SolverSettings` is the settings mixin of every diffusion method (``solver``, ``steps``,
``order``, ``solver_type``, ``time_schedule``); keys left at their defaults stay out of the dump so
that the cell hashes of existing configurations do not change.
"""
from __future__ import annotations

import math
from typing import Callable, Literal, Optional

from pydantic import Field, model_serializer, model_validator
from torch import Tensor

from strbench.errors import ConfigError
from strbench.methods.base import MethodSettings
from strbench.sde import SDE
from strbench.steps import Stepper

SOLVERS = ("euler", "posterior", "mr")
TIME_SCHEDULES = ("linspace", "linear_lambda")
SOLVER_KEYS = ("solver", "steps", "order", "solver_type", "time_schedule")
_DEFAULTS = {"posterior": {"time_schedule": "linspace"},
             "mr": {"order": 2, "solver_type": "ode", "time_schedule": "linspace"}}

# --------------------------------------------------------------------------------------------
# the grid and the marginal coefficients
# --------------------------------------------------------------------------------------------


def marginals(sde: SDE) -> tuple[list[float], list[float], list[float]]:
    """alpha_t = e^{-thetabar_t dt}, sigma_t = sigmabar_t and lam_t = log(alpha_t / sigma_t) (inf at t = 0)
    for t = 0..T, float64 as Python floats (Eq. 3)."""
    alpha = [math.exp(-tb * sde.dt) for tb in sde.thetabar.tolist()]
    sigma = sde.sigmabar.tolist()
    lam = [math.inf if s <= 0 else math.log(a) - math.log(s) for a, s in zip(alpha, sigma)]
    return alpha, sigma, lam


def _strictly_decreasing(c: list[int], top: int, end: int) -> list[int]:
    """Integers c_0 = top > c_1 > ... > c_N = end nearest the given ones (len(c) - 1 <= top - end)."""
    c, n = list(c), len(c) - 1
    c[0], c[-1] = top, end
    for k in range(1, n + 1):  # below the previous one, above what the remaining steps need
        c[k] = max(min(c[k], c[k - 1] - 1), end + n - k)
    return c


def step_grid(sde: SDE, steps: int, schedule: str = "linspace", end: int = 0) -> list[int]:
    """The levels visited, T = t_0 > ... > t_N = end (N = steps) chosen from the trained grid.

    ``linspace``: uniform in the level; ``linear_lambda``: uniform in lam = log alpha - log sigma between
    lam_T and lam_{max(end, 1)} (the MR paper's "linear-lambda"; the last step goes on to level 0)."""
    T = sde.T
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= T - end:
        raise ValueError(f"steps must be an int in [1, {T - end}] (T = {T}), got {steps!r}")
    if schedule == "linspace":
        cand = [math.floor(T - k * (T - end) / steps + 0.5) for k in range(steps + 1)]
    elif schedule == "linear_lambda":
        _, _, lam = marginals(sde)
        lo = max(end, 1)
        n = steps + 1 if end > 0 else steps  # points on the finite-lam part of the grid
        targets = [lam[T] + (lam[lo] - lam[T]) * k / max(n - 1, 1) for k in range(n)]
        cand = [_level_at(lam, x, lo, T) for x in targets] + ([0] if end == 0 else [])
    else:
        raise ValueError(f"unknown time_schedule {schedule!r}; choose one of {list(TIME_SCHEDULES)}")
    return _strictly_decreasing(cand, T, end)


def _level_at(lam: list[float], x: float, lo: int, hi: int) -> int:
    """The level whose lam (decreasing in t on [lo, hi]) is nearest x, by linear interpolation."""
    for t in range(hi, lo, -1):
        if lam[t] <= x <= lam[t - 1]:
            w = (x - lam[t]) / (lam[t - 1] - lam[t])
            return int(math.floor(t - w + 0.5))
    return lo if x > lam[lo] else hi


# --------------------------------------------------------------------------------------------
# pure tensor functions
# --------------------------------------------------------------------------------------------


def data_from_noise(y: Tensor, mu: Tensor, eps: Tensor, alpha_t: float, sigma_t: float) -> Tensor:
    """(S1) y0_hat - mu = (y_t - mu - sigma_t eps) / alpha_t (the data prediction, centred on mu)."""
    return (y - mu - sigma_t * eps) / alpha_t


def posterior_coefficients(alpha_t: float, alpha_s: float, lam: float) -> tuple[float, float, float]:
    """(S2) the mean coefficients of (y_t - mu) and (y0 - mu) and the std of q(y_s | y_t, y0), s < t."""
    A, B, C = alpha_t / alpha_s, alpha_t, alpha_s
    den = 1.0 - B * B
    var = (1.0 - A * A) * (1.0 - C * C) / den
    return A * (1.0 - C * C) / den, C * (1.0 - A * A) / den, lam * math.sqrt(max(var, 0.0))


def mr_coefficients(alpha_t: float, sigma_t: float, alpha_s: float, sigma_s: float, h_prev: Optional[float],
                    sde: bool) -> tuple[float, float, float, float]:
    """(S3)/(S4): the coefficients (c_y, c_0, c_1, std) of y_s - mu = c_y (y_t - mu) + c_0 D0
    + c_1 (D0 - D0_prev) + std z; h_prev None (first step) or s = 0 (last step) give order 1 (c_1 = 0)."""
    ratio = sigma_s / sigma_t
    if sigma_s <= 0.0:  # s = 0: lam_s = inf, e^{-h} = 0
        return 0.0, alpha_s, 0.0, 0.0
    h = (math.log(alpha_s) - math.log(sigma_s)) - (math.log(alpha_t) - math.log(sigma_t))
    e = math.exp(-h)
    if sde:
        c_y, c_0, std = ratio * e, alpha_s * (1.0 - e * e), sigma_s * math.sqrt(max(0.0, 1.0 - e * e))
        phi = 1.0 + math.expm1(-2.0 * h) / (2.0 * h)  # psi_2
    else:
        c_y, c_0, std = ratio, alpha_s * -math.expm1(-h), 0.0
        phi = 1.0 + math.expm1(-h) / h  # phi_2
    c_1 = 0.0 if h_prev is None else alpha_s * phi * h / h_prev
    return c_y, c_0, c_1, std


# --------------------------------------------------------------------------------------------
# a solver on one SDE: per-step floats, one step = one network evaluation
# --------------------------------------------------------------------------------------------

NoiseFn = Callable[[Tensor], Tensor]


class Solver:
    """One solver on one SDE's grid. ``levels`` = t_0 = T > ... > t_N = 0; :meth:`step` moves y from
    levels[k] to levels[k+1] given the noise prediction there. ``euler`` calls Stepper.reverse exactly as
    the loops always did (bit-identical); a step draws at most one noise tensor (none for an ODE step or
    the last step to level 0)."""

    def __init__(self, sde: SDE, solver: str = "euler", steps: Optional[int] = None, order: int = 1,
                 solver_type: str = "sde", time_schedule: str = "linspace", ode: bool = False,
                 levels: Optional[list[int]] = None):
        if solver not in SOLVERS:
            raise ValueError(f"unknown solver {solver!r}; choose one of {list(SOLVERS)}")
        self.sde, self.kind, self.order = sde, solver, order
        self.stepper = st = Stepper(sde)
        self.T, self.lam = st.T, st.lam
        self.ode = ode if solver == "euler" else (solver == "mr" and solver_type == "ode")
        if solver == "euler":
            if steps not in (None, sde.T):
                raise ValueError("solver 'euler' visits every level: steps must be None or T")
            self.levels = list(range(sde.T, -1, -1))
        else:
            self.levels = list(levels) if levels is not None else step_grid(sde, sde.T if steps is None else steps,
                                                                            time_schedule)
        alpha, sigma, lam = marginals(sde)
        self.alpha, self.sigma, self.lam_t = alpha, sigma, lam
        self.coef = []  # per step k: (c_y, c_0, c_1, std)
        for k in range(self.n):
            t, s = self.levels[k], self.levels[k + 1]
            if solver == "posterior":
                c_y, c_0, std = posterior_coefficients(alpha[t], alpha[s], sde.lam)
                self.coef.append((c_y, c_0, 0.0, std))
            elif solver == "mr":
                h_prev = lam[t] - lam[self.levels[k - 1]] if (order == 2 and k > 0) else None
                self.coef.append(mr_coefficients(alpha[t], sigma[t], alpha[s], sigma[s], h_prev,
                                                 sde=solver_type == "sde"))

    @property
    def n(self) -> int:
        """Number of steps (= network evaluations of one chain)."""
        return len(self.levels) - 1

    def step(self, k: int, y: Tensor, mu: Tensor, eps: Tensor, noise: NoiseFn,
             prev: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        """y at levels[k+1] from y at levels[k] and the noise prediction eps there; ``prev`` the previous
        step's data prediction (mr order 2). Returns (y_next, D0 = y0_hat - mu or None for euler)."""
        t = self.levels[k]
        if self.kind == "euler":
            return self.stepper.reverse(y, mu, eps, t, None if self.ode else noise(y)), None
        c_y, c_0, c_1, std = self.coef[k]
        d0 = data_from_noise(y, mu, eps, self.alpha[t], self.sigma[t])  # (S1)
        out = (y - mu).mul_(c_y).add_(d0, alpha=c_0).add_(mu)  # (S2)/(S3)/(S4)
        if c_1 != 0.0 and prev is not None:
            out.add_(d0 - prev, alpha=c_1)
        if std > 0.0:
            out.add_(noise(y), alpha=std)
        return out, d0

    def forward(self, y: Tensor, mu: Tensor, k: int, z: Tensor) -> Tensor:
        """Exact forward transition from levels[k+1] up to levels[k] (Eq. 17 over several levels):
        y_t = mu + A (y_s - mu) + lambda sqrt(1 - A^2) z, A = alpha_t / alpha_s; one level: Stepper.forward."""
        t, s = self.levels[k], self.levels[k + 1]
        if t - s == 1:
            return self.stepper.forward(y, mu, t, z)
        a = self.alpha[t] / self.alpha[s]
        return (y * a).add_(mu, alpha=1.0 - a).add_(z, alpha=self.lam * math.sqrt(max(0.0, 1.0 - a * a)))


# --------------------------------------------------------------------------------------------
# settings shared by every diffusion method
# --------------------------------------------------------------------------------------------


class SolverSettings(MethodSettings):
    """The solver keys of a diffusion method (docs/SCIENCE.md#solvers). None = the solver's default
    (posterior: time_schedule linspace; mr: order 2, solver_type ode, time_schedule linspace; steps: T)."""

    solver: Literal["euler", "posterior", "mr"] = "euler"  # euler: Euler-Maruyama over every level (today's loop)
    steps: Optional[int] = Field(None, ge=1)  # levels visited (posterior, mr); None: all T
    order: Optional[Literal[1, 2]] = None  # mr: 1 or 2 (default 2)
    solver_type: Optional[Literal["ode", "sde"]] = None  # mr: probability-flow ODE or reverse SDE (default ode)
    time_schedule: Optional[Literal["linspace", "linear_lambda"]] = None  # posterior, mr: grid spacing

    @model_validator(mode="after")
    def _solver_applies(self):
        if self.solver == "euler":
            for k in ("steps", "time_schedule", "order", "solver_type"):
                if getattr(self, k) is not None:
                    raise ValueError(f"sampler setting {k!r} does not apply to solver 'euler' (every level, "
                                     f"Euler-Maruyama): set solver: posterior or mr, or drop {k!r}")
        elif self.solver == "posterior":
            for k in ("order", "solver_type"):
                if getattr(self, k) is not None:
                    raise ValueError(f"sampler setting {k!r} only applies to solver 'mr' (solver is 'posterior')")
        return self

    @model_serializer(mode="wrap")
    def _drop_default_solver(self, handler):
        d = handler(self)
        if isinstance(d, dict) and d.get("solver") == "euler":  # today's configurations hash as before
            for k in SOLVER_KEYS:
                d.pop(k, None)
        return d

    def effective(self) -> dict:
        s = super().effective()
        for k in SOLVER_KEYS:
            s.setdefault(k, None)
        s["solver"] = s["solver"] or "euler"
        for k, v in _DEFAULTS.get(s["solver"], {}).items():
            if s[k] is None:
                s[k] = v
        return s


def make_solver(sde: SDE, s: dict, *, ode: bool = False) -> Solver:
    """The Solver of a method's effective settings ``s`` (ConfigError when steps exceeds T)."""
    steps = s.get("steps")
    if steps is not None and steps > sde.T:
        raise ConfigError(f"sampler setting 'steps' = {steps} exceeds the trained levels T = {sde.T}: "
                          f"set steps <= {sde.T}")
    return Solver(sde, s.get("solver", "euler"), steps, order=s.get("order") or 1,
                  solver_type=s.get("solver_type") or "sde", time_schedule=s.get("time_schedule") or "linspace",
                  ode=ode)
