"""The mean-reverting SDE of IR-SDE / StrDiffusion in closed form (paper Eqs. 1-4, 10, 20-24).

dy = theta_t (mu - y) dt + sigma_t dw, sigma_t^2 / theta_t = 2 lambda^2   (Eq. 1)

Schedules are pure functions computed in float64; an :class:`SDE` holds the per-level arrays
(index 0..T) and every function below casts what it needs to the dtype/device of its inputs.
Following the authors' code, every integral of theta in the paper is ``thetabar * dt`` here, with the
time scale ``dt`` chosen so that exp(-thetabar_T dt) = eps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Union

import torch
from torch import Tensor

TimeLike = Union[int, Tensor]

# --------------------------------------------------------------------------------------------
# theta schedules: (T, **params) -> Tensor[T+1] float64, registered by name
# --------------------------------------------------------------------------------------------


def cosine_schedule(T: int, s: float = 0.008) -> Tensor:
    """theta_t = 1 - alphabar_t of the cosine schedule over T+2 steps, as in the authors' code."""
    n = T + 2
    x = torch.linspace(0, n, n + 1, dtype=torch.float64)
    alphabar = torch.cos(((x / n) + s) / (1 + s) * math.pi * 0.5) ** 2
    alphabar = alphabar / alphabar[0]
    return 1.0 - alphabar[1:-1]  # T+1 values


def linear_schedule(T: int, start: float = 1e-4, end: float = 0.02) -> Tensor:
    """Linear theta from the DDPM betas, rescaled to T+1 levels (authors' code)."""
    scale = 1000.0 / (T + 1)
    return torch.linspace(scale * start, scale * end, T + 1, dtype=torch.float64)


def constant_schedule(T: int, value: float = 1.0) -> Tensor:
    """Constant theta (the time scale dt makes the value irrelevant up to rescaling)."""
    return torch.full((T + 1,), float(value), dtype=torch.float64)


def power_schedule(T: int, start: float = 0.01, power: float = 2.0) -> Tensor:
    """Tunable family: theta_i = start + (1 - start) (i / T)^power (start in (0, 1], power > 0)."""
    if not 0.0 < start <= 1.0:
        raise ValueError(f"power schedule: start must be in (0, 1], got {start}")
    if power <= 0:
        raise ValueError(f"power schedule: power must be > 0, got {power}")
    u = torch.arange(T + 1, dtype=torch.float64) / T
    return start + (1.0 - start) * u**power


SCHEDULES: dict[str, Callable[..., Tensor]] = {
    "cosine": cosine_schedule,
    "linear": linear_schedule,
    "constant": constant_schedule,
    "power": power_schedule,
}


def theta_schedule(kind: str, T: int, **params) -> Tensor:
    """Per-level theta_0..theta_T (float64) of the named schedule family."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule kind {kind!r}; choose one of {sorted(SCHEDULES)}")
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    try:
        theta = SCHEDULES[kind](T, **params)
    except TypeError as e:
        raise ValueError(f"schedule {kind!r}: bad parameters {params}: {e}") from None
    if not bool(torch.all(theta[1:] > 0)):
        raise ValueError(f"schedule {kind!r} with {params} gives non-positive theta")
    return theta


# --------------------------------------------------------------------------------------------
# the SDE: per-level arrays
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SDE:
    T: int
    lam: float
    eps: float
    kind: str
    params: dict = field(default_factory=dict)
    theta: Tensor = None  # theta_t, t = 0..T
    thetabar: Tensor = None  # sum_{i=1..t} theta_i
    dt: float = 0.0  # time scale: exp(-thetabar_T dt) = eps
    sigma: Tensor = None  # sqrt(2 lambda^2 theta_t)            (Eq. 1 constraint)
    sigmabar: Tensor = None  # lambda sqrt(1 - exp(-2 thetabar_t dt))  (forward marginal std)

    def describe(self) -> dict:
        return {"T": self.T, "kind": self.kind, "params": dict(self.params), "lam": self.lam,
                "eps": self.eps, "dt": self.dt, "sigmabar_T": float(self.sigmabar[-1])}

    def to_dict(self) -> dict:
        d = self.describe()
        d.update(theta=self.theta.tolist(), thetabar=self.thetabar.tolist(),
                 sigma=self.sigma.tolist(), sigmabar=self.sigmabar.tolist())
        return d


def make_sde(T: int = 100, kind: str = "cosine", lam: float = 30 / 255, eps: float = 0.005,
             **params) -> SDE:
    """Build the SDE arrays (docs/SCIENCE.md#sde; defaults are the authors')."""
    if lam <= 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    theta = theta_schedule(kind, T, **params)
    thetabar = torch.cumsum(theta, 0) - theta[0]
    dt = -math.log(eps) / float(thetabar[-1])
    sigma = torch.sqrt(2 * lam**2 * theta)
    sigmabar = lam * torch.sqrt(1 - torch.exp(-2 * thetabar * dt))
    return SDE(T=T, lam=float(lam), eps=float(eps), kind=kind, params=dict(params), theta=theta,
               thetabar=thetabar, dt=dt, sigma=sigma, sigmabar=sigmabar)


@dataclass(frozen=True)
class SDEPair:
    """Texture SDE (theta) and structure SDE (delta)."""

    texture: SDE
    structure: SDE


def make_sde_pair(texture: dict | None = None, structure: dict | None = None) -> SDEPair:
    """Structure None -> the same schedule as the texture (delta == theta, as in the authors' code)."""
    tex = make_sde(**(texture or {}))
    return SDEPair(texture=tex, structure=tex if structure is None else make_sde(**structure))


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _at(arr: Tensor, t: TimeLike, like: Tensor) -> Tensor:
    """arr[t] as a tensor broadcastable against `like` (B, C, H, W), on its device and dtype."""
    if isinstance(t, Tensor) and t.ndim > 0:
        v = arr.to(like.device)[t.to(like.device).long()]
        return v.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))
    return torch.as_tensor(float(arr[int(t)]), dtype=like.dtype, device=like.device)


def _exp_bar(sde: SDE, t: TimeLike, like: Tensor, k: float = 1.0) -> Tensor:
    """exp(-k thetabar_t dt)."""
    return torch.exp(-k * _at(sde.thetabar, t, like) * sde.dt)


def _prev(t: TimeLike) -> TimeLike:
    return t - 1


def masked_mean(image: Tensor, known: Tensor) -> Tensor:
    """mu = image * known: the SDE's mean state, the degraded image with holes filled with 0 (docs/SCIENCE.md#holes)."""
    return image * known


# --------------------------------------------------------------------------------------------
# forward process
# --------------------------------------------------------------------------------------------


def forward_mean(sde: SDE, x0: Tensor, mu: Tensor, t: TimeLike) -> Tensor:
    """E[x_t | x_0] = mu + (x_0 - mu) exp(-thetabar_t dt)."""
    return mu + (x0 - mu) * _exp_bar(sde, t, x0)


def forward_std(sde: SDE, t: TimeLike, like: Tensor) -> Tensor:
    """sigmabar_t = lambda sqrt(1 - exp(-2 thetabar_t dt))."""
    return _at(sde.sigmabar, t, like)


def q_sample(sde: SDE, x0: Tensor, mu: Tensor, t: TimeLike, noise: Tensor) -> Tensor:
    """x_t = forward_mean + sigmabar_t * noise."""
    return forward_mean(sde, x0, mu, t) + forward_std(sde, t, x0) * noise


def forward_step(sde: SDE, x_prev: Tensor, mu: Tensor, t: TimeLike, z: Tensor) -> Tensor:
    """Exact transition from level t-1 to t (RePaint undo; Eq. 17 in closed form):
    x_t = mu + (x_{t-1} - mu) e^{-theta_t dt} + lambda sqrt(1 - e^{-2 theta_t dt}) z."""
    a = torch.exp(-_at(sde.theta, t, x_prev) * sde.dt)
    return mu + (x_prev - mu) * a + sde.lam * torch.sqrt(1 - a**2) * z


def euler_forward_step(sde: SDE, x_prev: Tensor, mu: Tensor, t: TimeLike, z: Tensor) -> Tensor:
    """Eq. 17 as printed (Euler-Maruyama on Eq. 1 with the lower level's coefficients, level t-1 -> t):
    x_t = x_{t-1} + theta_{t-1} (mu - x_{t-1}) dt + sigma_{t-1} sqrt(dt) z  (the authors' re-noising)."""
    lo = _prev(t)
    return (x_prev + _at(sde.theta, lo, x_prev) * (mu - x_prev) * sde.dt
            + _at(sde.sigma, lo, x_prev) * math.sqrt(sde.dt) * z)


def true_noise(sde: SDE, x_t: Tensor, x0: Tensor, mu: Tensor, t: TimeLike) -> Tensor:
    """The noise that q_sample used: (x_t - forward_mean) / sigmabar_t (oracle noise network)."""
    return (x_t - forward_mean(sde, x0, mu, t)) / forward_std(sde, t, x_t)


# --------------------------------------------------------------------------------------------
# noise <-> score, reverse steps
# --------------------------------------------------------------------------------------------


def score_from_noise(sde: SDE, eps: Tensor, t: TimeLike) -> Tensor:
    """score = -eps / sigmabar_t."""
    return -eps / forward_std(sde, t, eps)


def noise_from_score(sde: SDE, score: Tensor, t: TimeLike) -> Tensor:
    return -score * forward_std(sde, t, score)


def reverse_drift(sde: SDE, x_t: Tensor, mu: Tensor, eps_hat: Tensor, t: TimeLike, ode: bool = False) -> Tensor:
    """[theta_t (mu - x) - c sigma_t^2 score] dt with c = 1 (SDE, Eq. 2) or 1/2 (probability-flow ODE)."""
    theta = _at(sde.theta, t, x_t)
    sigma2 = _at(sde.sigma, t, x_t) ** 2
    c = 0.5 if ode else 1.0
    return (theta * (mu - x_t) - c * sigma2 * score_from_noise(sde, eps_hat, t)) * sde.dt


def reverse_mean(sde: SDE, x_t: Tensor, mu: Tensor, eps_hat: Tensor, t: TimeLike) -> Tensor:
    """Mean of one Euler-Maruyama reverse step (z = 0): the "denoised y_{t-1}" of Eqs. 5 and 13."""
    return x_t - reverse_drift(sde, x_t, mu, eps_hat, t)


def reverse_sde_step(sde: SDE, x_t: Tensor, mu: Tensor, eps_hat: Tensor, t: TimeLike, z: Tensor) -> Tensor:
    """x_{t-1} = x_t - drift - sigma_t sqrt(dt) z   (reverse-time SDE, Eq. 2, Euler-Maruyama)."""
    return reverse_mean(sde, x_t, mu, eps_hat, t) - _at(sde.sigma, t, x_t) * math.sqrt(sde.dt) * z


def reverse_ode_step(sde: SDE, x_t: Tensor, mu: Tensor, eps_hat: Tensor, t: TimeLike) -> Tensor:
    """Deterministic probability-flow step."""
    return x_t - reverse_drift(sde, x_t, mu, eps_hat, t, ode=True)


# --------------------------------------------------------------------------------------------
# optimal reverse states and the StrDiffusion texture target
# --------------------------------------------------------------------------------------------


def optimal_reverse_state(sde: SDE, x_t: Tensor, x0: Tensor, mu: Tensor, t: TimeLike) -> Tensor:
    """Eq. 4 (texture) / Eq. 10 (structure): the mean of q(x_{t-1} | x_t, x_0).

    A = e^{-theta_t dt}, B = e^{-thetabar_t dt}, C = e^{-thetabar_{t-1} dt}:
    x*_{t-1} = mu + A (1 - C^2)/(1 - B^2) (x_t - mu) + C (1 - A^2)/(1 - B^2) (x_0 - mu).
    """
    A = torch.exp(-_at(sde.theta, t, x_t) * sde.dt)
    B = _exp_bar(sde, t, x_t)
    C = _exp_bar(sde, _prev(t), x_t)
    den = 1 - B**2
    return mu + A * (1 - C**2) / den * (x_t - mu) + C * (1 - A**2) / den * (x0 - mu)


def texture_target_eq20(sde_y: SDE, sde_x: SDE, *, y0: Tensor, mu_y: Tensor, x_prev: Tensor,
                        x0: Tensor, mu_x: Tensor, t: TimeLike) -> Tensor:
    """Eq. 20: y~*_{t-1} from the structure state x*_{t-1} (before substituting Eq. 21)."""
    ey = _exp_bar(sde_y, _prev(t), y0)  # e^{-thetabar_{t-1}}
    ex = _exp_bar(sde_x, _prev(t), y0)  # e^{-deltabar_{t-1}}
    ratio = (1 - ey**2) / (1 - ex**2)
    return ratio * (x_prev - mu_x) - ratio * ex * (x0 - mu_x) + ey * (y0 - mu_y) + mu_y


def texture_target_eq24(sde_y: SDE, sde_x: SDE, *, y0: Tensor, mu_y: Tensor, x_t: Tensor,
                        x0: Tensor, mu_x: Tensor, t: TimeLike) -> Tensor:
    """Eq. 24 (= main-text Eq. 11 when delta == theta): the structure-guided optimal texture state.

    coef = (1 - e^{-2 thetabar_{t-1}}) / (1 - e^{-2 deltabar_t}) e^{-delta'_t}
    y~*_{t-1} = coef (x_t - mu_x) - coef e^{-deltabar_t} (x_0 - mu_x) + e^{-thetabar_{t-1}} (y_0 - mu_y) + mu_y
    The structure terms are 1-channel and broadcast over RGB.
    """
    ey_prev = _exp_bar(sde_y, _prev(t), y0)
    ex_t = _exp_bar(sde_x, t, y0)
    a = torch.exp(-_at(sde_x.theta, t, y0) * sde_x.dt)  # e^{-delta'_t}
    coef = (1 - ey_prev**2) / (1 - ex_t**2) * a
    return coef * (x_t - mu_x) - coef * ex_t * (x0 - mu_x) + ey_prev * (y0 - mu_y) + mu_y


def _target_paper(sde_y, sde_x, *, y0, mu_y, x_t, x0, mu_x, t, y_t=None):
    return texture_target_eq24(sde_y, sde_x, y0=y0, mu_y=mu_y, x_t=x_t, x0=x0, mu_x=mu_x, t=t)


def _target_official(sde_y, sde_x, *, y0, mu_y, x_t, x0, mu_x, t, y_t=None):
    if y_t is None:
        raise ValueError("texture target 'official_code' needs the texture state y_t")
    return optimal_reverse_state(sde_y, y_t, y0, mu_y, t)


TEXTURE_TARGETS: dict[str, Callable[..., Tensor]] = {
    "paper_eq11": _target_paper,  # Eq. 11 / Eq. 24 of the paper
    "official_code": _target_official,  # the authors' code: plain IR-SDE optimum (Eq. 4)
}


def texture_target(name: str, sde_y: SDE, sde_x: SDE, *, y0: Tensor, mu_y: Tensor, x_t: Tensor,
                   x0: Tensor, mu_x: Tensor, t: TimeLike, y_t: Tensor | None = None) -> Tensor:
    """The regression target of the texture net (Eq. 13), by name (docs/SCIENCE.md#texture-target)."""
    if name not in TEXTURE_TARGETS:
        raise ValueError(f"unknown texture target {name!r}; choose one of {sorted(TEXTURE_TARGETS)}")
    return TEXTURE_TARGETS[name](sde_y, sde_x, y0=y0, mu_y=mu_y, x_t=x_t, x0=x0, mu_x=mu_x, t=t, y_t=y_t)
