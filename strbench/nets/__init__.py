"""Networks: U-Net noise predictors (IR-SDE, structure, structure-guided texture) and the discriminator.

The networks per arch: a :class:`Net` here, an ``AuthorsNet`` in :mod:`strbench.nets.authors`; a role
(:mod:`strbench.roles`) names its network per arch, and ``strbench.roles.build_net(role, preset, arch, **overrides)``
is the one factory.
``arch="strbench"``: strbench's own networks (PRESETS, below); ``arch="authors"``: the released StrDiffusion /
IR-SDE networks, key for key (:mod:`strbench.nets.authors`, AUTHORS_PRESETS; their files load with
:func:`strbench.nets.pretrained.load_pretrained`). Either arch is called the same way:
a noise net ``net(x_t, mu, t, cond=None) -> eps_hat``; the discriminator ``D(y, x, t) -> (B,)``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from torch import nn

from strbench.errors import ConfigError
from strbench.nets.authors import AUTHORS_PRESETS
from strbench.nets.discriminator import Discriminator
from strbench.nets.texture import SpatialAdaptiveNorm, StructureGuidedNet, channel_normalize
from strbench.nets.unet import UNet

__all__ = ["ARCHS", "AUTHORS_PRESETS", "DEFAULT_PRESET", "DISCRIMINATOR", "Net", "PRESETS", "TEXTURE_NET", "UNET_GRAY",
           "UNET_RGB", "check_arch", "count_params", "UNet", "StructureGuidedNet", "SpatialAdaptiveNorm",
           "channel_normalize", "Discriminator"]

# Per preset: the default image size and the keyword arguments of each network (by section).
#   tiny : trains in minutes on 2 CPU cores at 32-64 px
#   small: a modest GPU / long CPU runs at 64-128 px
#   paper: the paper's U-Net (DDPM U-Net without group norm and attention; nf 64, depth 4), 256 px
DEFAULT_PRESET = "tiny"
PRESETS: dict[str, dict] = {
    "tiny": {
        "size": 32,
        "unet": {"nf": 16, "ch_mult": (1, 2, 2), "num_res_blocks": 1},
        "texture": {"cond_hidden": 16},
        "discriminator": {"nf": 16, "ch_mult": (1, 2, 4)},
    },
    "small": {
        "size": 64,
        "unet": {"nf": 32, "ch_mult": (1, 2, 2, 4), "num_res_blocks": 2},
        "texture": {"cond_hidden": 32},
        "discriminator": {"nf": 32, "ch_mult": (1, 2, 4, 4)},
    },
    "paper": {
        "size": 256,
        "unet": {"nf": 64, "ch_mult": (1, 2, 4, 8), "num_res_blocks": 2},
        "texture": {"cond_hidden": 64},
        "discriminator": {"nf": 64, "ch_mult": (1, 2, 4, 8, 8)},
    },
}

_UNET_KEYS = ("nf", "ch_mult", "num_res_blocks", "norm", "attention", "dropout")
_TEXTURE_KEYS = ("cond_hidden", "cond_resize")
_DISC_KEYS = ("nf", "ch_mult", "norm")


@dataclass(frozen=True)
class Net:
    """A network of strbench's arch: ``make(kwargs)`` = ``build(kwargs)``, its kwargs merged from the preset's
    `sections` in order (or `defaults`, the same at every preset) and overridable by the keys in `keys`. A role
    (:mod:`strbench.roles`) names one per arch."""

    build: Callable[[dict], nn.Module]
    sections: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    defaults: Optional[Mapping[str, Any]] = None

    def kwargs(self, preset: str = DEFAULT_PRESET, *, role: str = "", **overrides) -> dict:
        """The resolved keyword arguments (preset merged with overrides)."""
        if preset not in PRESETS:
            raise ConfigError(f"net preset: unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        unknown = sorted(set(overrides) - set(self.keys))
        if unknown:
            raise ConfigError(f"net overrides for role {role!r}: unknown key(s) {unknown}; allowed: {list(self.keys)}")
        kw: dict = copy.deepcopy(dict(self.defaults or {}))
        for s in self.sections:
            kw.update(copy.deepcopy(PRESETS[preset][s]))
        kw.update(overrides)
        if "ch_mult" in kw:
            kw["ch_mult"] = tuple(kw["ch_mult"])
        return kw

    def make(self, kwargs: dict) -> nn.Module:
        """The network of resolved kwargs (from :meth:`kwargs`)."""
        return self.build(dict(kwargs))


def _unet(channels: int) -> Callable[[dict], nn.Module]:
    return lambda kw: UNet(channels=channels, **kw)


def _texture(kw: dict) -> nn.Module:
    cond = {k: kw.pop(k) for k in _TEXTURE_KEYS if k in kw}
    return StructureGuidedNet(UNet(channels=3, **kw), cond_ch=1, **cond)


def _discriminator(kw: dict) -> nn.Module:
    return Discriminator(texture_ch=3, structure_ch=1, **kw)


UNET_RGB = Net(_unet(3), ("unet",), _UNET_KEYS)  # noise net on images (IR-SDE)
UNET_GRAY = Net(_unet(1), ("unet",), _UNET_KEYS)  # noise net on 1-channel structure maps
TEXTURE_NET = Net(_texture, ("unet", "texture"), _UNET_KEYS + _TEXTURE_KEYS)  # structure-guided noise net
DISCRIMINATOR = Net(_discriminator, ("discriminator",), _DISC_KEYS)  # D(y, x, t) -> logits

ARCHS = ("strbench", "authors")


def check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ConfigError(f"net arch: unknown arch {arch!r}; choose one of {list(ARCHS)}")


def count_params(net: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)
