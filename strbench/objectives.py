"""Training objectives: the paper's losses (Eqs. 5, 13, 14-16) and, per role, how one batch becomes a loss.

The losses are pure functions of (network, SDE, tensors) returning a scalar. A role's *objective*
(``strbench.roles.Role.objective``) is ``objective(tr, model, generator, out=None) -> loss``: it draws the
step's batch and levels from the trainer ``tr`` (``tr.sample_batch(g)`` -> :class:`Batch`,
``tr.noise(batch, like, g)``, ``tr.sdes``, ``tr.cfg``, ``tr.structure_net``), calls a loss, and stashes
tensors for previews into ``out`` when given. A method that brings its own network writes its objective
the same way (e.g. with :func:`irsde_loss`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from strbench import sde as sdelib
from strbench.errors import ConfigError
from strbench.sde import SDE, SDEPair


# --------------------------------------------------------------------------------------------
# losses (pure)
# --------------------------------------------------------------------------------------------


def _stash(out: Optional[dict], **tensors) -> None:
    if out is not None:
        out.update({k: v.detach() for k, v in tensors.items()})


def irsde_loss(net: nn.Module, sde: SDE, y0: Tensor, mu: Tensor, t: Tensor, noise: Tensor,
               out: Optional[dict] = None) -> Tensor:
    """Eq. 5 with beta_t = 1 and p = 1: L1 between the reverse-step mean from eps_hat and y*_{t-1} (Eq. 4).

    y_t ~ q(y_t | y_0) (forward marginal), mu = masked image (holes 0).
    """
    y_t = sdelib.q_sample(sde, y0, mu, t, noise)
    eps_hat = net(y_t, mu, t).float()
    pred = sdelib.reverse_mean(sde, y_t, mu, eps_hat, t)  # y_t - (dy_t)_eps
    target = sdelib.optimal_reverse_state(sde, y_t, y0, mu, t)  # Eq. 4
    _stash(out, x_t=y_t, pred=pred, target=target)
    return (pred - target).abs().mean()


def structure_loss(net: nn.Module, sde_x: SDE, x0: Tensor, mu_x: Tensor, t: Tensor, noise: Tensor,
                   out: Optional[dict] = None) -> Tensor:
    """Eq. 5 on the structure SDE (delta schedule): target x*_{t-1} of Eq. 10, plain L1."""
    return irsde_loss(net, sde_x, x0, mu_x, t, noise, out)


@dataclass
class TextureStates:
    """One texture batch: clean/mean states of texture and structure, the forward samples y_t and x_t,
    and the structure guidance x_{t-1} fed to the net (Eq. 12)."""

    y0: Tensor
    mu_y: Tensor
    known: Tensor
    t: Tensor
    y_t: Tensor
    x0: Tensor
    mu_x: Tensor
    x_t: Tensor
    x_prev: Tensor


def _weight_uniform(known: Tensor) -> Optional[Tensor]:
    return None


def _weight_official(known: Tensor) -> Tensor:
    """Authors' code: per-pixel L1 weight 1 on known pixels and 10 in holes, mean over all pixels."""
    return known + 10.0 * (1.0 - known)


WEIGHTINGS: dict[str, Callable[[Tensor], Optional[Tensor]]] = {
    "uniform": _weight_uniform,
    "official": _weight_official,
}


def texture_loss(net: nn.Module, sdes: SDEPair, s: TextureStates, *, target: str = "paper_eq11",
                 weighting: str = "uniform", out: Optional[dict] = None) -> Tensor:
    """Eq. 13: L1 between the reverse-step mean of eps(y_t, x_{t-1}, t) and the texture target
    (``paper_eq11``: Eq. 11/24; ``official_code``: Eq. 4), optionally weighted 1 known / 10 holes."""
    if weighting not in WEIGHTINGS:
        raise ConfigError(f"train.weighting: unknown weighting {weighting!r}; choose one of {sorted(WEIGHTINGS)}")
    eps_hat = net(s.y_t, s.mu_y, s.t, cond=s.x_prev).float()
    pred = sdelib.reverse_mean(sdes.texture, s.y_t, s.mu_y, eps_hat, s.t)
    tgt = sdelib.texture_target(target, sdes.texture, sdes.structure, y0=s.y0, mu_y=s.mu_y, x_t=s.x_t,
                                x0=s.x0, mu_x=s.mu_x, t=s.t, y_t=s.y_t)
    _stash(out, x_t=s.y_t, pred=pred, target=tgt, cond=s.x_prev)
    err = (pred - tgt).abs()
    w = WEIGHTINGS[weighting](s.known)
    return err.mean() if w is None else (err * w).mean()


def discriminator_loss(D: nn.Module, real: Tensor, fake: Tensor, anchor: Tensor, x: Tensor, t: Tensor, *,
                       lambda_tri: float = 1.0, margin: float = 1.0, out: Optional[dict] = None) -> Tensor:
    """Eq. 16 = Eq. 14 + lambda_tri * Eq. 15 on logits s = D(., x, t).

    Eq. 14 (BCE, softplus form): softplus(-s_real) + softplus(s_fake) = -log D(real) - log(1 - D(fake)).
    Eq. 15 (triplet): max(|s_anchor - s_real| - |s_anchor - s_fake| + margin, 0).
    """
    s_real, s_fake, s_anchor = D(real, x, t).float(), D(fake, x, t).float(), D(anchor, x, t).float()
    l_dis = F.softplus(-s_real).mean() + F.softplus(s_fake).mean()
    l_tri = F.relu((s_anchor - s_real).abs() - (s_anchor - s_fake).abs() + margin).mean()
    if out is not None:
        out.update(s_real=s_real.detach(), s_fake=s_fake.detach(), l_dis=l_dis.detach(), l_tri=l_tri.detach())
    return l_dis + lambda_tri * l_tri


class TrainerView(Protocol):
    """What an objective reads from the trainer (strbench.train.Trainer provides it)."""

    cfg: Any  # strbench.trainset.TrainConfig
    sdes: SDEPair
    structure_net: Optional[nn.Module]  # the trained structure net (train.guidance "net"), else None

    def sample_batch(self, g: torch.Generator) -> "Batch": ...

    def noise(self, b: "Batch", like: Tensor, g: torch.Generator) -> Tensor: ...


# --------------------------------------------------------------------------------------------
# per-role objectives: (trainer, model, generator, out) -> loss
# --------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """This rank's part of one global batch: images, known masks, levels, structure maps, and where
    the part lies in the global batch (the levels and noise are drawn for all of it, then sliced)."""

    y0: Tensor
    known: Tensor
    t: Tensor
    x0: Optional[Tensor] = None  # structure x_0 (B, 1, H, W)
    mu_x: Optional[Tensor] = None  # structure mean, map * known
    n_global: int = 0
    offset: int = 0


def _guide_optimal(tr: "TrainerView", x_t: Tensor, x0: Tensor, mu_x: Tensor, t: Tensor) -> Tensor:
    """Authors' choice: the optimal structure state x*_{t-1} (Eq. 10) of a forward-sampled x_t."""
    return sdelib.optimal_reverse_state(tr.sdes.structure, x_t, x0, mu_x, t)


def _guide_net(tr: "TrainerView", x_t: Tensor, x0: Tensor, mu_x: Tensor, t: Tensor) -> Tensor:
    """The trained structure net's estimate of x*_{t-1}: the reverse-step mean (z = 0)."""
    with torch.no_grad():
        eps = tr.structure_net(x_t, mu_x, t).float()
    return sdelib.reverse_mean(tr.sdes.structure, x_t, mu_x, eps, t)


GUIDANCE: dict[str, Callable[..., Tensor]] = {"optimal": _guide_optimal, "net": _guide_net}
DISC_TIMES = ("t-1", "t")  # the level D is trained (and queried) at: strbench t-1 | the authors' code t


def _texture_states(tr: "TrainerView", b: Batch, g: torch.Generator) -> TextureStates:
    mu_y = sdelib.masked_mean(b.y0, b.known)
    y_t = sdelib.q_sample(tr.sdes.texture, b.y0, mu_y, b.t, tr.noise(b, b.y0, g))
    x_t = sdelib.q_sample(tr.sdes.structure, b.x0, b.mu_x, b.t, tr.noise(b, b.x0, g))
    x_prev = GUIDANCE[tr.cfg.guidance](tr, x_t, b.x0, b.mu_x, b.t)
    return TextureStates(y0=b.y0, mu_y=mu_y, known=b.known, t=b.t, y_t=y_t, x0=b.x0, mu_x=b.mu_x, x_t=x_t,
                         x_prev=x_prev)


def irsde_objective(tr: "TrainerView", model: nn.Module, g: torch.Generator, out=None) -> Tensor:
    b = tr.sample_batch(g)
    mu = sdelib.masked_mean(b.y0, b.known)
    return irsde_loss(model, tr.sdes.texture, b.y0, mu, b.t, tr.noise(b, b.y0, g), out)


def structure_objective(tr: "TrainerView", model: nn.Module, g: torch.Generator, out=None) -> Tensor:
    b = tr.sample_batch(g)
    return structure_loss(model, tr.sdes.structure, b.x0, b.mu_x, b.t, tr.noise(b, b.x0, g), out)


def texture_objective(tr: "TrainerView", model: nn.Module, g: torch.Generator, out=None) -> Tensor:
    s = _texture_states(tr, tr.sample_batch(g), g)
    return texture_loss(model, tr.sdes, s, target=tr.cfg.target, weighting=tr.cfg.weighting, out=out)


def discriminator_objective(tr: "TrainerView", model: nn.Module, g: torch.Generator, out=None) -> Tensor:
    """Eq. 16: real = (y*_{t-1}, x_{t-1}), fake = (y_t, x_{t-1}), anchor = y* known + y_t (1 - known), D given
    level t-1 or t (``disc_time``; the authors train at t)."""
    s = _texture_states(tr, tr.sample_batch(g), g)
    y_star = sdelib.texture_target(tr.cfg.target, tr.sdes.texture, tr.sdes.structure, y0=s.y0, mu_y=s.mu_y,
                                   x_t=s.x_t, x0=s.x0, mu_x=s.mu_x, t=s.t, y_t=s.y_t)
    anchor = y_star * s.known + s.y_t * (1 - s.known)
    if out is not None:
        out.update(real=y_star, fake=s.y_t, cond=s.x_prev)
    t_d = s.t - 1 if tr.cfg.disc_time == "t-1" else s.t
    return discriminator_loss(model, y_star, s.y_t, anchor, s.x_prev, t_d, lambda_tri=tr.cfg.lambda_tri,
                              margin=tr.cfg.margin, out=out)
