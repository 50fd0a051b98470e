"""The trainable networks ("roles"), each declared once: its network per arch, its training objective, the
groups of training settings that shape it, and how it is called.

strbench declares ``irsde``, ``structure``, ``texture`` and ``discriminator`` below. A method that brings a
network of its own declares its :class:`Role` in its own file and lists it in ``Method(networks=(ROLE,))``;
:func:`registry` holds the built-in roles and every registered method's, and the rest of strbench learns the
roles from it: the experiment schema (``nets.roles``, ``train.roles``, ``models:``), the planner, the model
cache, the trainer, :func:`build_net` (below) and the benchmarks. Imports run one way: roles build on
:mod:`strbench.nets` and :mod:`strbench.objectives`; the training schema (:mod:`strbench.trainset`) and
the trainer build on roles; methods name roles as strings and never import this module.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from strbench import nets, objectives
from strbench.errors import ConfigError
from strbench.nets import authors

# groups of training settings a role may read (each training setting of strbench.trainset names its group)
STRUCTURE = "structure"  # trained on structure maps: structure SDE, variant, Canny sigma
TARGET = "target"  # the texture target (Eq. 11 or the authors' Eq. 4)
WEIGHTING = "weighting"  # the texture L1 weighting
GUIDANCE_GROUP = "guidance"  # the structure state fed to the net (guidance "net" needs the trained structure net)
ADVERSARIAL = "adversarial"  # Eq. 14-16: lambda_tri, margin, the level D is trained at
GROUPS = (STRUCTURE, TARGET, WEIGHTING, GUIDANCE_GROUP, ADVERSARIAL)

GUIDE = "structure"  # the role whose trained net guides the guided roles' training under train.guidance "net"
ExampleCall = Callable[[int, int, Any, torch.Generator], tuple[tuple, dict]]


@dataclass(frozen=True)
class Role:
    """One trainable network, as every part of strbench knows it."""

    name: str  # the key under nets.roles / train.roles / models: and in a cell's models
    nets: Mapping[str, Any]  # arch -> factory: .kwargs(preset, *, role, **overrides) -> dict, .make(kwargs) -> net
    objective: Callable[..., Tensor]  # (trainer, model, generator, out=None) -> loss (see strbench.objectives)
    example: ExampleCall  # (batch, size, device, generator) -> (args, kwargs): a call on random inputs
    settings: frozenset[str] = frozenset()  # groups of training settings it reads (strbench.trainset.GROUPS)
    unet: bool = False  # the experiment's nets.unet overrides apply to it (the U-Nets)
    summary: str = ""

    def __post_init__(self):
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ConfigError(f"role name {self.name!r}: use lower-case letters, digits and _")
        unknown = sorted(set(self.settings) - set(GROUPS))
        if unknown:
            raise ConfigError(f"role {self.name!r}: unknown settings group(s) {unknown}; choose from {list(GROUPS)}")
        if "strbench" not in self.nets:
            raise ConfigError(f"role {self.name!r}: give its network for arch 'strbench' (nets={{'strbench': ...}})")

    @property
    def uses_structure(self) -> bool:
        """Trained on structure maps: the variant and Canny sigma shape it (and the cells that use it)."""
        return STRUCTURE in self.settings

    @property
    def guided(self) -> bool:
        """Trained on the structure guidance: train.guidance 'net' makes it need the trained structure net."""
        return GUIDANCE_GROUP in self.settings


def noise_net_call(channels: int, cond: int = 0) -> ExampleCall:
    """``net(x_t, mu, t[, cond=])`` on random inputs: `channels` image channels, `cond` guide channels."""

    def call(batch: int, size: int, device, g: torch.Generator):
        mk = (lambda c: torch.rand(batch, c, size, size, generator=g).to(device))
        x, mu = mk(channels), mk(channels)
        t = torch.full((batch,), 5, dtype=torch.long, device=device)
        return (x, mu, t), ({"cond": mk(cond)} if cond else {})

    return call


def _discriminator_call(batch: int, size: int, device, g: torch.Generator):
    y, x = (torch.rand(batch, c, size, size, generator=g).to(device) for c in (3, 1))
    return (y, x, torch.full((batch,), 5, dtype=torch.long, device=device)), {}


BUILTIN = (
    Role("irsde", {"strbench": nets.UNET_RGB, "authors": authors.IRSDE}, objectives.irsde_objective,
         noise_net_call(3), unet=True, summary="IR-SDE noise net (3 ch): IR-SDE, RePaint*, ablation A"),
    Role("structure", {"strbench": nets.UNET_GRAY, "authors": authors.STRUCTURE}, objectives.structure_objective,
         noise_net_call(1), frozenset({STRUCTURE}), unet=True, summary="structure noise net (1 ch), Eq. 5 on delta"),
    Role("texture", {"strbench": nets.TEXTURE_NET, "authors": authors.TEXTURE}, objectives.texture_objective,
         noise_net_call(3, cond=1), frozenset({STRUCTURE, TARGET, WEIGHTING, GUIDANCE_GROUP}), unet=True,
         summary="structure-guided texture noise net (3 ch, cond = x_{t-1}), Eq. 13"),
    Role("discriminator", {"strbench": nets.DISCRIMINATOR, "authors": authors.DISCRIMINATOR},
         objectives.discriminator_objective, _discriminator_call,
         frozenset({STRUCTURE, TARGET, GUIDANCE_GROUP, ADVERSARIAL}), summary="D(y, x, t) -> logits, Eq. 16"),
)


@functools.cache
def registry() -> dict[str, Role]:
    """name -> Role: strbench's own, then each registered method's (``Method.networks``)."""
    from strbench import methods

    out = {r.name: r for r in BUILTIN}
    owner = {r.name: "strbench" for r in BUILTIN}
    for m in methods.registry().values():
        for r in m.networks:
            if not isinstance(r, Role):
                raise ConfigError(f"method {m.name!r}: networks must hold strbench.roles.Role objects, got {r!r}")
            if r.name in out and out[r.name] is not r:
                raise ConfigError(f"method {m.name!r} registers the role {r.name!r}, which {owner[r.name]} registers "
                                  "too; give its network another role name")
            out[r.name], owner[r.name] = r, f"method {m.name!r}"
    return out


def structure_guided(method, settings) -> bool:
    """Whether the cells of `method` (a strbench.methods.Method) with `settings` depend on the structure variant:
    one of the networks it needs is trained on structure maps."""
    return any(get(r).uses_structure for r in method.roles(settings))


def _factory(role: str, arch: str):
    nets.check_arch(arch)
    r = get(role, what="network role")
    if arch not in r.nets:
        raise ConfigError(f"net arch: role {role!r} has no {arch!r} network; use arch {' or '.join(map(repr, r.nets))}")
    return r.nets[arch]


def net_kwargs(role: str, preset: str = nets.DEFAULT_PRESET, arch: str = "strbench", **overrides) -> dict:
    """The resolved keyword arguments of a role's network (preset merged with overrides).

    arch "authors": ``{"arch": "authors", nf, depth}`` (U-Nets) or ``{"arch": "authors", ngf, t_emb_dim}`` (D),
    so the resolved dict names its arch (and round-trips through ``build_net(role, preset, **kw)``)."""
    return _factory(role, arch).kwargs(preset, role=role, **overrides)


def build_net(role: str, preset: str = nets.DEFAULT_PRESET, arch: str = "strbench", **overrides) -> torch.nn.Module:
    """Network of `role` (a registered role) from a preset plus overrides.

    arch "strbench" (default): strbench's networks, overrides of PRESETS; arch "authors": the released networks,
    overrides ``nf, depth`` (U-Nets) or ``ngf, t_emb_dim`` (discriminator) of AUTHORS_PRESETS."""
    f = _factory(role, arch)
    return f.make(f.kwargs(preset, role=role, **overrides))


def names() -> tuple[str, ...]:
    return tuple(registry())


def get(name: str, what: str = "training role") -> Role:
    reg = registry()
    if name not in reg:
        raise ConfigError(f"unknown {what} {name!r}; choose one of {sorted(reg)} (a method's own network is "
                          "declared in its file: Method(networks=(Role(...),)))")
    return reg[name]


__all__ = ["ADVERSARIAL", "BUILTIN", "GROUPS", "GUIDANCE_GROUP", "GUIDE", "STRUCTURE", "TARGET", "WEIGHTING", "Role",
           "build_net", "get", "names", "net_kwargs", "noise_net_call", "registry", "structure_guided"]
