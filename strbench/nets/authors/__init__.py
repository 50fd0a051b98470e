"""``arch: authors``: the networks of the released StrDiffusion and IR-SDE checkpoints, key for key.

Each module's own ``state_dict()`` has exactly the authors' keys and shapes (``shared/reference/authors-nets/
keys_*.tsv``), so their files load with ``load_state_dict(..., strict=True)`` and no remapping
(:func:`strbench.nets.pretrained.load_pretrained`). They are called with strbench's signatures:
noise nets ``net(x_t, mu, t, cond=None) -> eps_hat``, the discriminator ``D(y, x, t) -> (B,)``.

Roles: ``texture`` (U-Net + SPADE guides, 3 ch, cond = structure state), ``structure`` (plain U-Net, 1 ch),
``irsde`` (plain U-Net, 3 ch; the released IR-SDE inpainting model has nf 32), ``discriminator``.
Sizes: U-Nets ``nf`` (even, >= 4), ``depth`` (>= 1); discriminator ``ngf``, ``t_emb_dim``.
"""
from __future__ import annotations

import copy
from typing import Callable

from torch import nn

from strbench.errors import ConfigError
from strbench.nets.authors.discriminator import AuthorsDiscriminator, fir_downsample, minibatch_stddev
from strbench.nets.authors.spade import SPADE, SPADEBlock, positional_norm
from strbench.nets.authors.unet import AuthorsUNet

__all__ = ["AUTHORS_PRESETS", "AUTHORS_ROLES", "AuthorsDiscriminator", "AuthorsUNet", "SPADE", "SPADEBlock",
           "authors_net_kwargs", "build_authors_net", "fir_downsample", "minibatch_stddev", "positional_norm"]

# Per preset: default image size and each role's sizes.
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

# role -> (builder of the resolved sizes, allowed size keys)
AUTHORS_ROLES: dict[str, tuple[Callable[..., nn.Module], tuple[str, ...]]] = {
    "texture": (lambda nf, depth: AuthorsUNet(3, 3, nf, depth, guided=True), _UNET_KEYS),
    "structure": (lambda nf, depth: AuthorsUNet(1, 1, nf, depth), _UNET_KEYS),
    "irsde": (lambda nf, depth: AuthorsUNet(3, 3, nf, depth), _UNET_KEYS),
    "discriminator": (lambda ngf, t_emb_dim: AuthorsDiscriminator(3, 1, ngf, t_emb_dim), _DISC_KEYS),
}


def authors_net_kwargs(role: str, preset: str = "tiny", **overrides) -> dict:
    """Resolved sizes of an authors network: ``{"arch": "authors", **preset sizes, **overrides}``."""
    if role not in AUTHORS_ROLES:
        raise ConfigError(f"unknown network role {role!r}; choose one of {sorted(AUTHORS_ROLES)}")
    if preset not in AUTHORS_PRESETS:
        raise ConfigError(f"net preset (arch authors): unknown preset {preset!r}; "
                          f"choose one of {sorted(AUTHORS_PRESETS)}")
    allowed = AUTHORS_ROLES[role][1]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ConfigError(f"net overrides for role {role!r} (arch authors): unknown key(s) {unknown}; "
                          f"allowed: {list(allowed)}")
    kw = {"arch": "authors", **copy.deepcopy(AUTHORS_PRESETS[preset][role]), **overrides}
    for k in allowed:
        if isinstance(kw[k], bool) or not isinstance(kw[k], int):
            raise ConfigError(f"net overrides for role {role!r} (arch authors): {k} must be an integer, "
                              f"got {kw[k]!r}")
    return kw


def build_authors_net(role: str, preset: str = "tiny", **overrides) -> nn.Module:
    """The authors' network of `role` at a preset's sizes plus overrides (see :func:`authors_net_kwargs`)."""
    kw = authors_net_kwargs(role, preset, **overrides)
    kw.pop("arch")
    return AUTHORS_ROLES[role][0](**kw)
