"""Training settings: one schema for the YAML ``train:`` section and for the trainer, and a model's identity.

:class:`TrainSettings` holds what a user sets (the experiment's ``train:`` section derives from it);
:class:`TrainConfig` adds what the runner fills in from the other sections (seed, net, SDEs, structure
variant, training data) and is what :func:`strbench.train.train_model` trains. Each field is declared
once, here, with its default, its range and how it enters a model's identity.

A model's identity (:meth:`TrainConfig.identity`, hashed into its cache folder name) is opt-out: every
field is in it, unless its declaration says otherwise with an :class:`Identity` marker: ``BOOKKEEPING``
(logging, checkpoints, processes: never hashed), ``only(group)`` (hashed only for the roles whose
``strbench.roles.Role.settings`` read that group, e.g. the structure variant only for roles trained on
structure maps), ``omit_default`` (added after models were hashed: left out while at its default, so
those models keep their hash), ``via`` (enters through another field's hashed value) or ``value`` (hashed
as a resolved value: the global batch, the resolved network kwargs). A new field with no marker changes
every model's identity, so a cached model trained with another value is never reused.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from strbench import sde as sdelib
from strbench.errors import ConfigError
from strbench.hashing import config_hash
from strbench.nets import DEFAULT_PRESET, PRESETS
from strbench.objectives import DISC_TIMES, GUIDANCE, WEIGHTINGS
from strbench import roles
from strbench.roles import ADVERSARIAL, GROUPS, GUIDANCE_GROUP, STRUCTURE, TARGET, WEIGHTING, net_kwargs
from strbench.structure import DEFAULT_CANNY_SIGMA, DEFAULT_VARIANT, VARIANTS

# a field names the group of training settings it belongs to (strbench.roles.GROUPS; a role reads the groups in
# Role.settings); fields of no group: every role


@dataclass(frozen=True)
class Identity:
    """How a field enters a model's identity (declared in the field's type: ``Annotated[T, Identity(...)]``).
    A field without one is hashed for every role."""

    bookkeeping: bool = False  # steers logging, checkpoints or processes only: never hashed
    group: Optional[str] = None  # hashed only for roles that read this group of settings
    omit_default: bool = False  # left out while at its default (added after models were hashed)
    via: Optional[str] = None  # not hashed itself: enters through this field's hashed value
    value: Optional[Callable[["TrainConfig", str], Any]] = None  # hashed as value(cfg, role), not as set


BOOKKEEPING = Identity(bookkeeping=True)


def only(group: str, **kw) -> Identity:
    return Identity(group=group, **kw)


def identity_of(field) -> Identity:
    """The Identity marker of a pydantic field (the default, hashed for every role, when it has none)."""
    return next((m for m in field.metadata if isinstance(m, Identity)), Identity())


def _global_batch(cfg: "TrainConfig", role: str) -> int:
    # one process at batch 2B and two at batch B (the same data stream, strbench.stream) name the same model
    return cfg.batch * cfg.world_size


def _resolved_net(cfg: "TrainConfig", role: str) -> dict:
    return json.loads(json.dumps(net_kwargs(role, cfg.preset, **cfg.net)))


def _literal(names) -> Any:
    return Literal[tuple(names)]


# --------------------------------------------------------------------------------------------
# learning-rate schedules: (cfg, step index 0..steps-1) -> factor of cfg.lr
# --------------------------------------------------------------------------------------------


def _lr_constant(cfg, step: int) -> float:
    return 1.0


def _lr_cosine(cfg, step: int) -> float:
    span = max(cfg.steps - cfg.warmup, 1)
    p = min(max(step - cfg.warmup, 0) / span, 1.0)
    floor = cfg.lr_min / cfg.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))


def _lr_multistep(cfg, step: int) -> float:
    return cfg.lr_gamma ** sum(step >= m for m in cfg.lr_milestones)


LR_SCHEDULES: dict[str, Callable[[Any, int], float]] = {
    "cosine": _lr_cosine,
    "constant": _lr_constant,
    "multistep": _lr_multistep,
}


def lr_at(cfg, step: int) -> float:
    """Learning rate of the step with 0-based index `step` (linear warmup, then the schedule)."""
    warm = min((step + 1) / cfg.warmup, 1.0) if cfg.warmup > 0 else 1.0
    return cfg.lr * warm * LR_SCHEDULES[cfg.lr_schedule](cfg, step)


# --------------------------------------------------------------------------------------------
# the schema
# --------------------------------------------------------------------------------------------


class TrainSettings(BaseModel):
    """The training settings a user sets (YAML ``train:``); defaults, ranges and identity here only."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    steps: int = Field(2000, ge=1)
    batch: Annotated[int, Identity(value=_global_batch)] = Field(8, ge=1)  # per rank; hashed as batch x world_size
    lr: float = Field(1e-4, gt=0.0)
    lr_schedule: _literal(LR_SCHEDULES) = "cosine"
    lr_milestones: list[Annotated[int, Field(ge=1)]] = []  # multistep: absolute steps
    lr_gamma: float = Field(0.5, gt=0.0)  # multistep factor
    lr_min: float = Field(0.0, ge=0.0)  # cosine floor (<= lr)
    warmup: int = Field(0, ge=0)  # linear warmup steps
    grad_clip: float = Field(1.0, ge=0.0)  # max grad norm, 0 = off
    ema: float = Field(0.0, ge=0.0, lt=1.0)  # EMA decay, 0 = off
    amp: bool = False  # bf16 autocast (CUDA only; ignored on CPU)
    target: Annotated[_literal(sdelib.TEXTURE_TARGETS), only(TARGET)] = "paper_eq11"  # texture target
    weighting: Annotated[_literal(WEIGHTINGS), only(WEIGHTING)] = "uniform"  # official: L1 weight 1 known / 10 holes
    guidance: Annotated[_literal(GUIDANCE), only(GUIDANCE_GROUP)] = "optimal"  # x*_{t-1} (authors) or the net's
    lambda_tri: Annotated[float, only(ADVERSARIAL)] = Field(1.0, ge=0.0)  # Eq. 16
    margin: Annotated[float, only(ADVERSARIAL)] = Field(1.0, ge=0.0)  # Eq. 15 alpha
    # the level D is trained and queried at (the authors' code: t); the sampler's disc_time is this setting
    disc_time: Annotated[_literal(DISC_TIMES), only(ADVERSARIAL, omit_default=True)] = "t-1"
    flip: bool = True  # random horizontal flip of every training sample (strbench.stream)
    workers: Annotated[int, BOOKKEEPING] = Field(-1, ge=-1)  # loader processes per rank; -1 = from the CPU count
    checkpoint_every: Annotated[int, BOOKKEEPING] = Field(500, ge=1)
    log_every: Annotated[int, BOOKKEEPING] = Field(50, ge=1)


def optional_fields(names: tuple[str, ...], name: str, doc: str) -> type[BaseModel]:
    """A strict model of some TrainSettings fields, each optional (None = not set), same types and ranges
    (e.g. the per-role overrides ``train.roles.<role>``)."""
    fields = {}
    for k in names:
        f = TrainSettings.model_fields[k]
        fields[k] = (Optional[Annotated[f.annotation, *f.metadata]], None)
    return create_model(name, __config__=TrainSettings.model_config, __doc__=doc, **fields)


def _one_line(err: ValidationError, path: str) -> str:
    e = err.errors(include_url=False)[0]
    key = ".".join(str(p) for p in (path, *e["loc"]) if not str(p).startswith("function-"))
    typ, msg = e["type"], e["msg"]
    if typ == "value_error" and not e["loc"]:  # a check across fields: its message starts with the key
        return f"{path}.{msg.removeprefix('Value error, ')}"
    if typ == "extra_forbidden":
        text = f"unknown key; allowed: {', '.join(TrainConfig.model_fields)}"
    elif typ.endswith("_type"):
        text = f"{msg.replace('Input should be a valid ', 'expected ')}, got {type(e.get('input')).__name__} " \
               f"{e.get('input')!r}"
    else:
        text = f"{msg.removeprefix('Value error, ')}, got {e.get('input')!r}" if typ != "value_error" \
            else msg.removeprefix("Value error, ")
    return f"{key}: {text}"


class TrainConfig(TrainSettings):
    """Training settings of one model: the user's (TrainSettings) plus what the runner fills in."""

    seed: int = 0
    preset: _literal(PRESETS) = DEFAULT_PRESET  # net preset (strbench.nets.PRESETS)
    net: Annotated[dict[str, Any], Identity(value=_resolved_net)] = {}  # net overrides; hashed resolved
    sde: dict[str, Any] = {}  # texture SDE: make_sde kwargs (T, kind, lam, eps, params)
    sde_structure: Annotated[Optional[dict[str, Any]], only(STRUCTURE)] = None  # None: the texture SDE's
    variant: Annotated[_literal(VARIANTS), only(STRUCTURE)] = DEFAULT_VARIANT  # structure variant (x_0, mu_x)
    canny_sigma: Annotated[float, only(STRUCTURE)] = Field(DEFAULT_CANNY_SIGMA, gt=0.0)
    data_id: str = ""  # identity of the training data + masks (set by the runner)
    world_size: Annotated[int, Identity(via="batch")] = Field(1, ge=1)  # ranks of the torchrun launch
    images_every: Annotated[int, BOOKKEEPING] = Field(0, ge=0)  # preview images to the callback, 0 = off

    def __init__(self, **values):
        try:
            super().__init__(**values)
        except ValidationError as e:
            raise ConfigError(_one_line(e, "train")) from None

    @model_validator(mode="after")
    def _cross(self):
        if self.lr_min > self.lr:
            raise ValueError(f"lr_min: must be in [0, lr] (lr is {self.lr!r}), got {self.lr_min!r}")
        for key in ("sde", "sde_structure"):
            d = getattr(self, key)
            try:
                if d is not None:
                    sdelib.make_sde(**d)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{key}: {e}") from None
        return self

    @classmethod
    def from_dict(cls, d: dict, path: str = "train") -> "TrainConfig":
        """Strict: unknown keys and wrong types raise one ConfigError line naming the key path."""
        if not isinstance(d, dict) or not all(isinstance(k, str) for k in d):
            raise ConfigError(f"{path}: expected a mapping of training settings, got {type(d).__name__}")
        try:
            return cls(**d)
        except ConfigError as e:  # named train.<key> by __init__
            raise ConfigError(path + str(e).removeprefix("train")) from None

    def to_dict(self) -> dict:
        return json.loads(json.dumps(self.model_dump(mode="python")))  # plain JSON types

    def replace(self, **changes) -> "TrainConfig":
        """A copy with `changes`, validated."""
        return type(self)(**{**self.model_dump(), **changes})

    def identity(self, role: str) -> dict:
        """What determines the model of `role` (the hashed part of the config): every field but the ones
        declared otherwise (see :class:`Identity`)."""
        reads = roles.get(role).settings
        d = self.to_dict()
        ident = {}
        for name, f in type(self).model_fields.items():
            rule = identity_of(f)
            if rule.bookkeeping or rule.via or (rule.group is not None and rule.group not in reads):
                continue
            if rule.omit_default and d[name] == f.default:
                continue
            ident[name] = rule.value(self, role) if rule.value is not None else d[name]
        return {"role": role, "config": ident}

    def hash(self, role: str) -> str:
        return config_hash(self.identity(role))

    def validate(self, role: str) -> None:
        """Role-dependent checks (the field checks ran on construction): a registered role, its net's
        overrides; raise ConfigError naming the key and the fix."""
        roles.get(role)
        net_kwargs(role, self.preset, **self.net)


__all__ = ["ADVERSARIAL", "BOOKKEEPING", "GROUPS", "GUIDANCE_GROUP", "Identity", "LR_SCHEDULES", "STRUCTURE", "TARGET",
           "TrainConfig", "TrainSettings", "WEIGHTING", "identity_of", "lr_at", "only", "optional_fields"]
