"""Sampling-loop arithmetic shared by every method: the closed forms of :mod:`strbench.sde` at one level.

:class:`Stepper` evaluates the per-level scalars of one SDE once, as Python floats, so that a sampling
loop does no tensor indexing and no host -> device copies (its equality with ``strbench.sde`` is a test).
IR-SDE, RePaint* (``baselines/``) and StrDiffusion (``strbench.methods.strdiffusion``) all step with it.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from strbench.sde import SDE

NoiseSampler = Callable[[Tensor], Tensor]  # like -> a standard normal draw shaped like `like`


class Stepper:
    """Per-level scalars of one SDE's closed forms (strbench.sde), evaluated once as Python floats.

    reverse (Eq. 2, Euler-Maruyama with score = -eps / sigmabar_t):
        y_{t-1} = y_t + theta_t dt (y_t - mu) - c sigma_t^2 dt / sigmabar_t * eps - sigma_t sqrt(dt) z
        (c = 1 for the SDE; c = 1/2 and no noise for the probability-flow ODE)
    forward (exact transition t-1 -> t, Eq. 17 in closed form):
        y_t = mu + (y_{t-1} - mu) e^{-theta_t dt} + lambda sqrt(1 - e^{-2 theta_t dt}) z
    q_sample (forward marginal): x_t = mu + (x_0 - mu) e^{-thetabar_t dt} + sigmabar_t n
    euler_forward (Eq. 17 as printed, one Euler-Maruyama step of Eq. 1 with the LOWER level's coefficients):
        x_t = x_{t-1} + theta_{t-1} (mu - x_{t-1}) dt + sigma_{t-1} sqrt(dt) z
    """

    def __init__(self, sde: SDE):
        self.sde, self.T, self.lam = sde, sde.T, sde.lam
        dt = sde.dt
        theta, sigma, sigmabar = sde.theta.tolist(), sde.sigma.tolist(), sde.sigmabar.tolist()
        self.rev_a = [th * dt for th in theta]
        # level 0 has sigmabar 0 and is never the start of a reverse step
        self.rev_b = [0.0] + [sigma[t] ** 2 * dt / sigmabar[t] for t in range(1, sde.T + 1)]
        self.rev_s = [s * math.sqrt(dt) for s in sigma]
        self.fwd_a = [math.exp(-th * dt) for th in theta]
        self.fwd_s = [sde.lam * math.sqrt(max(0.0, 1.0 - a * a)) for a in self.fwd_a]
        self.q_a = [math.exp(-tb * dt) for tb in sde.thetabar.tolist()]
        self.q_s = sigmabar

    # The steps below are the closed forms above rearranged so that each is 3-4 fused kernels without
    # temporaries (e.g. reverse = (1 + a) y - a mu - b eps - s z); no autograd runs through them.

    def reverse(self, y: Tensor, mu: Tensor, eps: Tensor, t: int, z: Optional[Tensor]) -> Tensor:
        """y_{t-1} from y_t (reverse SDE step; z=None -> probability-flow ODE step)."""
        a = self.rev_a[t]
        if z is None:  # ODE: half the score term, no noise
            out = eps * (-0.5 * self.rev_b[t])
        else:
            out = eps * (-self.rev_b[t])
            out.add_(z, alpha=-self.rev_s[t])
        return out.add_(y, alpha=1.0 + a).add_(mu, alpha=-a)

    def forward(self, y_prev: Tensor, mu: Tensor, t: int, z: Tensor) -> Tensor:
        """y_t from y_{t-1}: one exact forward transition (RePaint undo, Eq. 17)."""
        a = self.fwd_a[t]
        return (y_prev * a).add_(mu, alpha=1.0 - a).add_(z, alpha=self.fwd_s[t])

    def euler_forward(self, x_prev: Tensor, mu: Tensor, t: int, z: Tensor) -> Tensor:
        """x_t from x_{t-1}: one Euler-Maruyama step of the forward SDE (Eq. 1) with theta_{t-1} and
        sigma_{t-1}, as Eq. 17 prints it (the authors' re-noising; not the exact transition of `forward`)."""
        a = self.rev_a[t - 1]  # theta_{t-1} dt
        return (x_prev * (1.0 - a)).add_(mu, alpha=a).add_(z, alpha=self.rev_s[t - 1])

    def q(self, x0: Tensor, mu: Tensor, t: int, noise: Tensor) -> Tensor:
        """A forward sample x_t ~ q(x_t | x_0)."""
        a = self.q_a[t]
        return (x0 * a).add_(mu, alpha=1.0 - a).add_(noise, alpha=self.q_s[t])


def randn_like(x: Tensor, generator: torch.Generator) -> Tensor:
    """Standard normal noise shaped like x, drawn from `generator` on x's device."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def time_table(T: int, batch: int, device) -> Tensor:
    """(T+1, B) LongTensor whose row t is the batch's timestep t (rows are views: no per-step copies)."""
    return torch.arange(T + 1, device=device).view(-1, 1).expand(T + 1, batch)


def generator_noise(generator: torch.Generator) -> NoiseSampler:
    """The default noise sampler: every Gaussian draw from `generator` (on the input's device)."""
    return lambda like: randn_like(like, generator)


class PerImageNoise:
    """A noise sampler whose draws for image j of a batch come from its own generator, re-seeded from
    (seed, position[j], key) whenever a sampling loop begins a move (``begin(key)``, key = the loop's step).
    An image's noise then depends only on (seed, its position in the cell, the step), not on the batch it
    rides in: a cell gives the same images at batch 1 or 16, on 1 or 4 ranks. (Within a step an image's
    draws come in the loop's order; draws made after it stopped resampling are discarded with its results.)"""

    def __init__(self, seed: int, positions, device):
        self.seed, self.positions = int(seed), [int(p) for p in positions]
        self.gens = [torch.Generator(device=device) for _ in self.positions]
        self.begin(-1)

    def begin(self, key: int) -> None:
        for g, p in zip(self.gens, self.positions):
            g.manual_seed(((self.seed * 1_000_003 + p) * 1_000_033 + int(key) + 7) % (2**63 - 1))

    def __call__(self, like: Tensor) -> Tensor:
        if like.shape[0] != len(self.gens):
            raise ValueError(f"PerImageNoise made for {len(self.gens)} images got a batch of {like.shape[0]}")
        return torch.stack([torch.randn(like.shape[1:], generator=g, device=like.device, dtype=like.dtype)
                            for g in self.gens])
