"""``arch: authors``: the networks of the released StrDiffusion and IR-SDE checkpoints, key for key.

Each module's own ``state_dict()`` has exactly the authors' keys and shapes (docs/SCIENCE.md#authors-nets;
tests/test_authors_nets.py checks the key tables), so their files load with ``load_state_dict(..., strict=True)`` and no remapping
(:func:`strbench.nets.pretrained.load_pretrained`). They are called with strbench's signatures:
noise nets ``net(x_t, mu, t, cond=None) -> eps_hat``, the discriminator ``D(y, x, t) -> (B,)``.

Roles: ``texture`` (U-Net + SPADE guides, 3 ch, cond = structure state), ``structure`` (plain U-Net, 1 ch),
``irsde`` (plain U-Net, 3 ch; the released IR-SDE inpainting model has nf 32), ``discriminator``.
Sizes: U-Nets ``nf`` (even, >= 4), ``depth`` (>= 1); discriminator ``ngf``, ``t_emb_dim``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

from torch import nn

from strbench.errors import ConfigError
from strbench.nets.authors.discriminator import AuthorsDiscriminator, fir_downsample, minibatch_stddev
from strbench.nets.authors.spade import SPADE, SPADEBlock, positional_norm
from strbench.nets.authors.unet import AuthorsUNet

__all__ = ["AUTHORS_PRESETS", "AuthorsDiscriminator", "AuthorsNet", "AuthorsUNet", "DISCRIMINATOR", "IRSDE", "SPADE",
           "SPADEBlock", "STRUCTURE", "TEXTURE", "fir_downsample", "minibatch_stddev", "positional_norm"]

# Per preset: default image size and each released network's sizes (by section).
#   tiny : the reference fixtures' sizes (U-Nets nf 8, depth 2; D ngf 8, t_emb_dim 32), CPU minutes
#   small: a modest GPU at 64-128 px
#   paper: the released checkpoints (texture 163.3 M, structure 137.1 M, IR-SDE 34.8 M, D 12.7 M parameters)
AUTHORS_PRESETS: dict[str, dict] = {
    "tiny": {
        "size": 32,
        "texture": {"nf": 8, "depth": 2}, "structure": {"nf": 8, "depth": 2}, "irsde": {"nf": 8, "depth": 2},
        "discriminator": {"ngf": 8, "t_emb_dim": 32},
    },
    "small": {
        "size": 64,
        "texture": {"nf": 32, "depth": 3}, "structure": {"nf": 32, "depth": 3}, "irsde": {"nf": 32, "depth": 3},
        "discriminator": {"ngf": 32, "t_emb_dim": 128},
    },
    "paper": {
        "size": 256,
        "texture": {"nf": 64, "depth": 4}, "structure": {"nf": 64, "depth": 4}, "irsde": {"nf": 32, "depth": 4},
        "discriminator": {"ngf": 64, "t_emb_dim": 256},
    },
}

_UNET_KEYS = ("nf", "depth")
_DISC_KEYS = ("ngf", "t_emb_dim")


@dataclass(frozen=True)
class AuthorsNet:
    """One released network: ``build(**sizes)``, its sizes under `section` of each AUTHORS_PRESETS preset,
    overridable by `keys` (integers); the resolved kwargs name their arch (``{"arch": "authors", ...}``)."""

    build: Callable[..., nn.Module]
    section: str
    keys: tuple[str, ...]

    def kwargs(self, preset: str = "tiny", *, role: str = "", **overrides) -> dict:
        """Resolved sizes: ``{"arch": "authors", **preset sizes, **overrides}``."""
        if preset not in AUTHORS_PRESETS:
            raise ConfigError(f"net preset (arch authors): unknown preset {preset!r}; "
                              f"choose one of {sorted(AUTHORS_PRESETS)}")
        unknown = sorted(set(overrides) - set(self.keys))
        if unknown:
            raise ConfigError(f"net overrides for role {role!r} (arch authors): unknown key(s) {unknown}; "
                              f"allowed: {list(self.keys)}")
        kw = {"arch": "authors", **copy.deepcopy(AUTHORS_PRESETS[preset][self.section]), **overrides}
        for k in self.keys:
            if isinstance(kw[k], bool) or not isinstance(kw[k], int):
                raise ConfigError(f"net overrides for role {role!r} (arch authors): {k} must be an integer, "
                                  f"got {kw[k]!r}")
        return kw

    def make(self, kwargs: dict) -> nn.Module:
        """The network of resolved kwargs (from :meth:`kwargs`)."""
        return self.build(**{k: v for k, v in kwargs.items() if k != "arch"})


TEXTURE = AuthorsNet(lambda nf, depth: AuthorsUNet(3, 3, nf, depth, guided=True), "texture", _UNET_KEYS)
STRUCTURE = AuthorsNet(lambda nf, depth: AuthorsUNet(1, 1, nf, depth), "structure", _UNET_KEYS)
IRSDE = AuthorsNet(lambda nf, depth: AuthorsUNet(3, 3, nf, depth), "irsde", _UNET_KEYS)
DISCRIMINATOR = AuthorsNet(lambda ngf, t_emb_dim: AuthorsDiscriminator(3, 1, ngf, t_emb_dim), "discriminator",
                           _DISC_KEYS)
