"""Training objectives (paper Eqs. 5, 13, 14-16) and the training loop.

Objectives are pure functions of (network, SDE, tensors) returning a scalar loss. The loop
(:class:`Trainer`, :func:`train_model`) streams its data from :mod:`strbench.stream` (a DataLoader whose
workers crop, flip, draw the mask and compute the structure maps of every sample, each a pure function of
(seed, step, slot)); levels and noise come from one seeded torch.Generator on the device, so a resumed run
reproduces the loss sequence exactly. Under torchrun the net is trained with DistributedDataParallel,
each rank on its slice of the global batch; rank 0 checkpoints (atomically) and reports.
Roles: ``irsde`` (IR-SDE baseline), ``structure``, ``texture`` (structure-guided), ``discriminator``.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

import strbench
from strbench import sde as sdelib
from strbench import stream
from strbench.checkpoint import FORMAT, load_checkpoint, load_resumable, save_checkpoint
from strbench.dist import DistInfo, barrier, current_dist, init_distributed, resolve_device
from strbench.errors import CheckpointError, ConfigError, DataError, TrainingDiverged
from strbench.hashing import config_hash
from strbench.nets import PRESETS, build_net, net_kwargs
from strbench.sde import SDE, SDEPair

# --------------------------------------------------------------------------------------------
# objectives (pure)
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


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------

ROLES = ("irsde", "structure", "texture", "discriminator")
GUIDANCES = ("optimal", "net")
# fields that only steer bookkeeping: not part of the config hash
BOOKKEEPING = ("checkpoint_every", "log_every", "images_every", "workers")
# "batch" enters the hash as the global batch (batch x world_size); world_size itself does not, so one
# process at batch 2B and two at batch B (the same data stream, strbench.stream) name the same model
_COMMON = ("steps", "batch", "lr", "lr_schedule", "lr_milestones", "lr_gamma", "lr_min", "warmup",
           "grad_clip", "ema", "seed", "preset", "net", "sde", "amp", "data_id", "flip")
_STRUCT = ("sde_structure", "variant", "canny_sigma")
ROLE_FIELDS: dict[str, tuple[str, ...]] = {  # which config fields determine each role's model
    "irsde": _COMMON,
    "structure": _COMMON + _STRUCT,
    "texture": _COMMON + _STRUCT + ("target", "weighting", "guidance"),
    "discriminator": _COMMON + _STRUCT + ("target", "guidance", "lambda_tri", "margin", "disc_time"),
}
# fields added after models were first hashed: left out of the identity at this value, so the models
# trained before the field existed keep their hash
_HASH_UNLESS = {"disc_time": "t-1"}
DISC_TIMES = ("t-1", "t")  # the level D is trained (and queried) at: strbench t-1 | the authors' code t


@dataclass
class TrainConfig:
    """Training settings of one model (defaults here, in one place)."""

    steps: int = 2000
    batch: int = 8  # per rank; the global batch of a step is batch x world_size
    lr: float = 1e-4
    lr_schedule: str = "cosine"  # cosine | constant | multistep
    lr_milestones: list = field(default_factory=list)  # multistep: absolute steps
    lr_gamma: float = 0.5  # multistep factor
    lr_min: float = 0.0  # cosine floor
    warmup: int = 0  # linear warmup steps
    grad_clip: float = 1.0  # max grad norm, 0 = off
    ema: float = 0.0  # EMA decay, 0 = off
    seed: int = 0
    preset: str = "tiny"  # net preset (strbench.nets.PRESETS)
    net: dict = field(default_factory=dict)  # net overrides (nf, ch_mult, ...)
    sde: dict = field(default_factory=dict)  # texture SDE: make_sde kwargs (T, kind, lam, eps, params)
    sde_structure: Optional[dict] = None  # structure SDE; None = same as texture (delta == theta)
    variant: str = "gray2edge"  # structure variant (x_0, mu_x)
    canny_sigma: float = 3.0
    target: str = "paper_eq11"  # texture target: paper_eq11 | official_code
    weighting: str = "uniform"  # texture L1 weighting: uniform | official
    guidance: str = "optimal"  # structure state fed to the texture net / D: optimal | net
    lambda_tri: float = 1.0  # Eq. 16
    margin: float = 1.0  # Eq. 15 alpha
    disc_time: str = "t-1"  # D's time input: t-1 | t (authors' code); the sampler's disc_time must match
    amp: bool = False  # bf16 autocast (CUDA only; ignored on CPU)
    data_id: str = ""  # identity of the training data + masks (set by the runner), part of the hash
    flip: bool = True  # random horizontal flip of every training sample (strbench.stream)
    world_size: int = 1  # ranks of the torchrun launch that trains the model (must match WORLD_SIZE)
    workers: int = -1  # loader worker processes per rank; -1 = from the CPU count (stream.default_workers)
    checkpoint_every: int = 500
    log_every: int = 50
    images_every: int = 0  # preview images to the callback every k steps, 0 = off

    @classmethod
    def from_dict(cls, d: dict, path: str = "train") -> "TrainConfig":
        """Strict: unknown keys and wrong types raise ConfigError naming the key path."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(names)}")
        defaults = cls()
        for k, v in d.items():
            ref = getattr(defaults, k)
            ok = {bool: lambda x: isinstance(x, bool),
                  int: lambda x: isinstance(x, int) and not isinstance(x, bool),
                  float: lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
                  str: lambda x: isinstance(x, str),
                  list: lambda x: isinstance(x, (list, tuple)),
                  dict: lambda x: isinstance(x, dict)}[type(ref) if ref is not None else dict]
            if not (ok(v) or (ref is None and v is None)):
                raise ConfigError(f"{path}.{k}: expected {type(ref).__name__ if ref is not None else 'dict or null'}, "
                                  f"got {type(v).__name__} {v!r}")
        vals = {k: (float(v) if isinstance(getattr(defaults, k), float) else v) for k, v in d.items()}
        return cls(**vals)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lr_milestones"] = list(d["lr_milestones"])
        return json.loads(json.dumps(d))  # tuples -> lists, plain JSON types

    def identity(self, role: str) -> dict:
        """What determines the model of `role` (the hashed part of the config)."""
        if role not in ROLE_FIELDS:
            raise ConfigError(f"unknown training role {role!r}; choose one of {list(ROLES)}")
        d = self.to_dict()
        ident = {k: d[k] for k in ROLE_FIELDS[role] if _HASH_UNLESS.get(k, object()) != d[k]}
        ident["batch"] = self.batch * self.world_size  # the global batch
        ident["net"] = json.loads(json.dumps(net_kwargs(role, self.preset, **self.net)))  # resolved
        return {"role": role, "config": ident}

    def hash(self, role: str) -> str:
        return config_hash(self.identity(role))

    def validate(self, role: str) -> None:
        """Range and name checks; raise ConfigError naming the key and the fix."""
        if role not in ROLES:
            raise ConfigError(f"unknown training role {role!r}; choose one of {list(ROLES)}")
        checks = [
            ("steps", self.steps >= 1, ">= 1"), ("batch", self.batch >= 1, ">= 1"), ("lr", self.lr > 0, "> 0"),
            ("warmup", self.warmup >= 0, ">= 0"), ("grad_clip", self.grad_clip >= 0, ">= 0 (0 = off)"),
            ("ema", 0 <= self.ema < 1, "in [0, 1) (0 = off)"), ("lr_gamma", self.lr_gamma > 0, "> 0"),
            ("lr_min", 0 <= self.lr_min <= self.lr, "in [0, lr]"),
            ("canny_sigma", self.canny_sigma > 0, "> 0"), ("lambda_tri", self.lambda_tri >= 0, ">= 0"),
            ("margin", self.margin >= 0, ">= 0"), ("checkpoint_every", self.checkpoint_every >= 1, ">= 1"),
            ("log_every", self.log_every >= 1, ">= 1"), ("images_every", self.images_every >= 0, ">= 0"),
            ("world_size", self.world_size >= 1, ">= 1"), ("workers", self.workers >= -1, ">= 0 (or -1 = auto)"),
            ("lr_milestones", all(isinstance(m, int) and m >= 1 for m in self.lr_milestones),
             "a list of step numbers >= 1"),
        ]
        for key, ok, want in checks:
            if not ok:
                raise ConfigError(f"train.{key}: must be {want}, got {getattr(self, key)!r}")
        for key, value, allowed in (("lr_schedule", self.lr_schedule, LR_SCHEDULES),
                                    ("target", self.target, sdelib.TEXTURE_TARGETS),
                                    ("weighting", self.weighting, WEIGHTINGS),
                                    ("guidance", self.guidance, GUIDANCES),
                                    ("disc_time", self.disc_time, DISC_TIMES),
                                    ("preset", self.preset, PRESETS)):
            if value not in allowed:
                raise ConfigError(f"train.{key}: unknown value {value!r}; choose one of {sorted(allowed)}")
        from strbench.structure import VARIANTS

        if self.variant not in VARIANTS:
            raise ConfigError(f"train.variant: unknown variant {self.variant!r}; choose one of {list(VARIANTS)}")
        net_kwargs(role, self.preset, **self.net)
        for key, d in (("sde", self.sde), ("sde_structure", self.sde_structure)):
            try:
                if d is not None:
                    sdelib.make_sde(**d)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"train.{key}: {e}") from None


# --------------------------------------------------------------------------------------------
# learning-rate schedules: (cfg, step index 0..steps-1) -> factor of cfg.lr
# --------------------------------------------------------------------------------------------


def _lr_constant(cfg: TrainConfig, step: int) -> float:
    return 1.0


def _lr_cosine(cfg: TrainConfig, step: int) -> float:
    span = max(cfg.steps - cfg.warmup, 1)
    p = min(max(step - cfg.warmup, 0) / span, 1.0)
    floor = cfg.lr_min / cfg.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))


def _lr_multistep(cfg: TrainConfig, step: int) -> float:
    return cfg.lr_gamma ** sum(step >= m for m in cfg.lr_milestones)


LR_SCHEDULES: dict[str, Callable[[TrainConfig, int], float]] = {
    "constant": _lr_constant,
    "cosine": _lr_cosine,
    "multistep": _lr_multistep,
}


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate of the step with 0-based index `step` (linear warmup, then the schedule)."""
    warm = min((step + 1) / cfg.warmup, 1.0) if cfg.warmup > 0 else 1.0
    return cfg.lr * warm * LR_SCHEDULES[cfg.lr_schedule](cfg, step)


# --------------------------------------------------------------------------------------------
# devices (resolve_device, ranks and the process group: strbench.dist)
# --------------------------------------------------------------------------------------------


def sde_to(sde: SDE, device: torch.device) -> SDE:
    """Copy of the SDE with its per-level arrays on `device` (no host->device copy per step)."""
    return dataclasses.replace(sde, **{f.name: getattr(sde, f.name).to(device) for f in dataclasses.fields(sde)
                                       if isinstance(getattr(sde, f.name), Tensor)})


# --------------------------------------------------------------------------------------------
# per-role batch construction: (trainer, generator, out) -> loss
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


def _guide_optimal(tr: "Trainer", x_t: Tensor, x0: Tensor, mu_x: Tensor, t: Tensor) -> Tensor:
    """Authors' choice: the optimal structure state x*_{t-1} (Eq. 10) of a forward-sampled x_t."""
    return sdelib.optimal_reverse_state(tr.sdes.structure, x_t, x0, mu_x, t)


def _guide_net(tr: "Trainer", x_t: Tensor, x0: Tensor, mu_x: Tensor, t: Tensor) -> Tensor:
    """The trained structure net's estimate of x*_{t-1}: the reverse-step mean (z = 0)."""
    with torch.no_grad():
        eps = tr.structure_net(x_t, mu_x, t).float()
    return sdelib.reverse_mean(tr.sdes.structure, x_t, mu_x, eps, t)


GUIDANCE: dict[str, Callable[..., Tensor]] = {"optimal": _guide_optimal, "net": _guide_net}


def _texture_states(tr: "Trainer", b: Batch, g: torch.Generator) -> TextureStates:
    mu_y = sdelib.masked_mean(b.y0, b.known)
    y_t = sdelib.q_sample(tr.sdes.texture, b.y0, mu_y, b.t, tr.noise(b, b.y0, g))
    x_t = sdelib.q_sample(tr.sdes.structure, b.x0, b.mu_x, b.t, tr.noise(b, b.x0, g))
    x_prev = GUIDANCE[tr.cfg.guidance](tr, x_t, b.x0, b.mu_x, b.t)
    return TextureStates(y0=b.y0, mu_y=mu_y, known=b.known, t=b.t, y_t=y_t, x0=b.x0, mu_x=b.mu_x, x_t=x_t,
                         x_prev=x_prev)


def _role_irsde(tr: "Trainer", model: nn.Module, g: torch.Generator, out=None) -> Tensor:
    b = tr.sample_batch(g)
    mu = sdelib.masked_mean(b.y0, b.known)
    return irsde_loss(model, tr.sdes.texture, b.y0, mu, b.t, tr.noise(b, b.y0, g), out)


def _role_structure(tr: "Trainer", model: nn.Module, g: torch.Generator, out=None) -> Tensor:
    b = tr.sample_batch(g)
    return structure_loss(model, tr.sdes.structure, b.x0, b.mu_x, b.t, tr.noise(b, b.x0, g), out)


def _role_texture(tr: "Trainer", model: nn.Module, g: torch.Generator, out=None) -> Tensor:
    s = _texture_states(tr, tr.sample_batch(g), g)
    return texture_loss(model, tr.sdes, s, target=tr.cfg.target, weighting=tr.cfg.weighting, out=out)


def _role_discriminator(tr: "Trainer", model: nn.Module, g: torch.Generator, out=None) -> Tensor:
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


ROLE_STEPS: dict[str, Callable[..., Tensor]] = {
    "irsde": _role_irsde,
    "structure": _role_structure,
    "texture": _role_texture,
    "discriminator": _role_discriminator,
}


# --------------------------------------------------------------------------------------------
# the trainer: one object holding net, EMA, optimiser, generator, data stream; step() is one full step
# --------------------------------------------------------------------------------------------


class Trainer:
    """Holds everything one training run needs; ``step()`` runs one optimisation step (no host sync).

    The data come from a strbench.stream loader (worker processes: crop, flip, mask, structure maps);
    levels and noise from one seeded torch.Generator on the device, drawn for the whole global batch
    on every rank and sliced. Inside an initialised process group the net is wrapped in
    DistributedDataParallel and this rank takes its slots of the global batch.
    """

    def __init__(self, role: str, cfg: TrainConfig, dataset, masks, *, device: str | torch.device = "auto",
                 structure_net: Optional[nn.Module] = None):
        cfg.validate(role)
        if cfg.guidance == "net" and role in ("texture", "discriminator") and structure_net is None:
            raise ConfigError("train.guidance = 'net' needs a trained structure net (pass structure_net=...); "
                              "or use guidance 'optimal'")
        self.role, self.cfg = role, cfg
        self.device = resolve_device(device)
        self.dist = current_dist()
        if cfg.world_size != self.dist.world_size:
            raise ConfigError(f"train.world_size is {cfg.world_size} but this run has {self.dist.world_size} "
                              f"rank(s); set train.world_size: {self.dist.world_size} (the global batch "
                              "batch x world_size is part of the model hash)")
        pair = sdelib.make_sde_pair(cfg.sde, cfg.sde_structure)
        self.sdes = SDEPair(texture=sde_to(pair.texture, self.device), structure=sde_to(pair.structure, self.device))
        self.T = pair.texture.T
        if pair.structure.T != self.T:
            raise ConfigError(f"train.sde_structure.T ({pair.structure.T}) must equal train.sde.T ({self.T})")
        self.source, self.masks = stream.image_source(dataset), stream.mask_source(masks)
        if tuple(self.masks.hw) != tuple(self.source.hw):
            raise DataError(f"mask size {tuple(self.masks.hw)} differs from image size {tuple(self.source.hw)}")
        self.spec = stream.StreamSpec(seed=cfg.seed, batch=cfg.batch, world_size=self.dist.world_size,
                                      rank=self.dist.rank, flip=cfg.flip,
                                      variant=None if role == "irsde" else cfg.variant, canny_sigma=cfg.canny_sigma)
        self.workers = cfg.workers if cfg.workers >= 0 else stream.default_workers()
        self._it, self._it_step = None, -1  # loader iterator and the step of its next batch
        self._current: Optional[tuple[int, dict]] = None  # (step, device batch) being trained on
        self._override: Optional[dict] = None  # a preview batch
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
            torch.manual_seed(cfg.seed)
            self.net = build_net(role, cfg.preset, **cfg.net).to(self.device)
        self.net.train()
        self.model = self.net
        if self.dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids)
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.ema = None
        if cfg.ema > 0:
            self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
            self.ema_params = list(self.ema.parameters())
            self.ema_buffers = list(self.ema.buffers())
            self.net_buffers = list(self.net.buffers())
        extra = {"fused": True} if self.device.type == "cuda" else {"foreach": True}
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr, betas=(0.9, 0.99), **extra)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(cfg.seed)
        self.structure_net = None
        if structure_net is not None:
            self.structure_net = structure_net.to(self.device).eval().requires_grad_(False)
        self.amp = bool(cfg.amp) and self.device.type == "cuda"
        self.step_count = 0
        self.objective = ROLE_STEPS[role]

    # --- data ---
    def _to_device(self, b: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) for k, v in b.items()}

    def data_batch(self) -> dict:
        """This rank's batch of step ``step_count`` on the device (from the loader, fetched once)."""
        if self._current is None or self._current[0] != self.step_count:
            if self._it is None or self._it_step != self.step_count:
                self.close()
                loader = stream.make_loader(self.source, self.masks, self.spec, start=self.step_count,
                                            workers=self.workers, pin_memory=self.device.type == "cuda")
                self._it, self._it_step = iter(loader), self.step_count
            b = stream.next_batch(self._it)
            self._it_step += 1
            self._current = (self.step_count, self._to_device(b))
        return self._current[1]

    def close(self) -> None:
        """Stop the loader's worker processes (a later step starts a new loader where it left off)."""
        self._it, self._it_step = None, -1

    def noise(self, b: Batch, like: Tensor, g: torch.Generator) -> Tensor:
        """Standard normal noise shaped like `like`: drawn for the whole global batch, this rank's slice."""
        full = torch.randn((b.n_global or like.shape[0], *like.shape[1:]), generator=g, device=self.device)
        return full[b.offset:b.offset + like.shape[0]]

    def sample_batch(self, g: torch.Generator) -> Batch:
        """The step's data (stream) and levels t ~ U{1..T} from the generator (global batch, sliced)."""
        d = self._override if self._override is not None else self.data_batch()
        n = d["image"].shape[0]
        whole = self._override is not None and self.spec.world_size == 1  # a given batch is all of it
        n_global = n if whole else self.spec.global_batch
        offset = 0 if whole else self.spec.rank * self.spec.batch
        t = torch.randint(1, self.T + 1, (n_global,), generator=g, device=self.device)[offset:offset + n]
        return Batch(y0=d["image"], known=d["known"], t=t, x0=d.get("x0"), mu_x=d.get("mu_x"), n_global=n_global,
                     offset=offset)

    def autocast(self):
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # --- one step ---
    def step(self, batch: Optional[dict] = None) -> Tensor:
        """One full training step: lr, batch, targets, forward, backward (gradients averaged over the
        ranks), clip, Adam, EMA. Returns this rank's loss. `batch` (a ``data_batch()``) trains on those
        data instead of the stream's (benchmarks: the step without the loader)."""
        lr = lr_at(self.cfg, self.step_count)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self._override = batch
        try:
            with self.autocast():
                loss = self.objective(self, self.model, self.gen)
        finally:
            self._override = None
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip, foreach=True)
        self.opt.step()
        if self.ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(self.ema_params, self.params, 1.0 - self.cfg.ema)
                if self.ema_buffers:  # e.g. spectral norm's u, v (authors' texture net): follow the live net
                    torch._foreach_copy_(self.ema_buffers, self.net_buffers)
        self.step_count += 1
        return loss.detach()

    @torch.no_grad()
    def preview(self, n: int = 4, seed: int = 12345) -> dict:
        """Tensors of one fixed small batch (own stream seed and generator: training is untouched)."""
        g = torch.Generator(device=self.device)
        g.manual_seed(seed)
        out: dict = {}
        model = self.inference_model()
        was = model.training
        model.eval()
        spec = dataclasses.replace(self.spec, seed=seed, batch=min(n, self.cfg.batch), world_size=1, rank=0)
        world = self.spec
        try:
            self._override = self._to_device(stream.make_batch(self.source, self.masks, spec, step=0))
            self.spec = spec  # the preview batch is the whole batch
            self.objective(self, model, g, out)
        finally:
            self._override, self.spec = None, world
            model.train(was)
        return {k: v.detach().float().cpu() for k, v in out.items() if v.ndim == 4}

    def inference_model(self) -> nn.Module:
        return self.ema if self.ema is not None else self.net

    # --- state ---
    def state_dict(self) -> dict:
        rng = {"generator": self.gen.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": FORMAT, "strbench_version": strbench.__version__, "role": self.role,
            "config": json.dumps(self.cfg.to_dict(), sort_keys=True), "config_hash": self.cfg.hash(self.role),
            "step": self.step_count, "world_size": self.dist.world_size, "model": self.net.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.opt.state_dict(), "rng": rng,
        }

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["model"])
        if self.ema is not None:
            if state["ema"] is None:
                raise ConfigError("checkpoint has no EMA weights but the config asks for ema > 0")
            self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["rng"]["generator"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step_count = int(state["step"])  # the stream restarts at this step (data_batch)


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------


def _check_finite(pending: list[tuple[int, Tensor]], ckpt_path: Path, last_good: int,
                  info: DistInfo = DistInfo()) -> list[tuple[int, float]]:
    """One host sync for all pending losses, averaged over the ranks (each rank's loss is the mean over
    its equal share of the global batch, so the average is the global batch's loss); raise
    TrainingDiverged at the first NaN/Inf (on every rank alike)."""
    if not pending:
        return []
    values = torch.stack([v for _, v in pending]).float()
    if info.world_size > 1:
        dist.all_reduce(values)
        values = values / info.world_size
    out = list(zip([s for s, _ in pending], values.cpu().tolist()))
    for step, v in out:
        if not math.isfinite(v):
            where = f"the last good checkpoint (step {last_good}) in {ckpt_path} is intact" if last_good \
                else f"no checkpoint was written yet ({ckpt_path})"
            raise TrainingDiverged(f"training diverged: loss is {v} at step {step}; {where}; "
                                   f"lower train.lr or set train.grad_clip")
    return out


def _same_step_on_all_ranks(tr: Trainer, ckpt_path: Path) -> None:
    """Every rank resumed from the same step (the checkpoint folder must be shared by the ranks)."""
    if tr.dist.world_size == 1:
        return
    steps = torch.tensor([tr.step_count], device=tr.device)
    got = [torch.zeros_like(steps) for _ in range(tr.dist.world_size)]
    dist.all_gather(got, steps)
    got = [int(s) for s in got]
    if len(set(got)) > 1:
        raise CheckpointError(f"ranks resumed {ckpt_path} at different steps {got}; put the cache folder on a "
                              "file system that every rank sees")


def train_model(role: str, cfg: TrainConfig, dataset, masks, *, ckpt_path: str | Path,
                callback: Optional[Callable[[dict], Any]] = None, device: str | torch.device = "auto",
                structure_net: Optional[nn.Module] = None, stop_at: Optional[int] = None) -> nn.Module:
    """Train (or resume, or just load when finished) the `role` network; return the inference model
    (EMA weights when ema > 0) in eval mode.

    stop_at: train only up to step min(stop_at, cfg.steps) and write a resumable checkpoint there (the
    same content as a regular one, written after the pending losses were checked finite); a later call
    resumes it, and training in stages ends with the same weights and loss log, bit for bit, as training
    straight through (no extra log points are made at the stop). A checkpoint already past stop_at is
    returned as it is (training never goes back).

    dataset: a folder dataset (read file by file by the stream's workers), the built-in patches, any
    Dataset of Tensor[3,H,W], or a Tensor (N,3,H,W); masks: a MaskSet / Tensor (M,1,H,W) pool, or a
    stream.MaskGenerator (a fresh mask per sample).

    Under torchrun (WORLD_SIZE > 1, cfg.world_size equal to it) every rank calls this: the process group
    is joined (NCCL on CUDA, gloo on CPU), the net trained with DistributedDataParallel on this rank's
    slice of each global batch; every rank resumes from ckpt_path, rank 0 alone writes it and calls the
    callback. callback receives ``{"event": "loss", "step", "loss" (mean over the ranks and the steps
    since the previous log), "lr", "role"}`` every ``log_every`` steps and ``{"event": "images", "step",
    "role", "images": {name: Tensor}}`` every ``images_every`` steps. The losses logged so far are kept in
    the checkpoint: on resuming, the callback first receives ``{"event": "resumed", "step", "role"}`` and
    then every loss logged before that step again (the same dicts, plus ``"replayed": True``), so that the
    caller ends with the whole loss history of an interrupted training. A NaN/Inf loss raises
    TrainingDiverged naming the step; checkpoints are only written after the losses since the previous
    one were checked finite.
    """
    ckpt_path = Path(ckpt_path)
    info, dev = init_distributed(device)
    tr = Trainer(role, cfg, dataset, masks, device=dev, structure_net=structure_net)
    try:
        state = load_resumable(ckpt_path, expected_hash=cfg.hash(role))  # a corrupt file -> *.corrupt, previous one
        resumed = state is not None
        if resumed:
            tr.load_state_dict(state)
        _same_step_on_all_ranks(tr, ckpt_path)  # also: no rank writes before every rank has read
        last_good = tr.step_count if resumed else 0
        pending: list[tuple[int, Tensor]] = []  # losses since the last finiteness check
        log = state.get("log", {}) if resumed else {}  # the logged losses so far travel in the checkpoint
        history: list[list] = [list(e) for e in log.get("history", [])]  # [step, loss, lr] per log point
        synced: list[tuple[int, float]] = [tuple(e) for e in log.get("synced", [])]  # checked losses since the last log
        if resumed and callback is not None and info.is_main:  # the resumed run gets the whole loss history
            callback({"event": "resumed", "step": tr.step_count, "role": role})
            for step, loss, lr in history:
                callback({"event": "loss", "step": step, "loss": loss, "lr": lr, "role": role, "replayed": True})
        end = cfg.steps if stop_at is None else min(int(stop_at), cfg.steps)
        saved = tr.step_count if resumed and ckpt_path.is_file() else None  # the step of the checkpoint on disk
        while tr.step_count < end:
            loss = tr.step()
            step = tr.step_count
            pending.append((step, loss))
            do_log = step % cfg.log_every == 0 or step == cfg.steps
            do_ckpt = step % cfg.checkpoint_every == 0 or step == cfg.steps
            do_img = cfg.images_every > 0 and step % cfg.images_every == 0
            if do_log or do_ckpt or do_img:
                synced += _check_finite(pending, ckpt_path, last_good, info)
                pending = []
            if do_log:
                history.append([step, sum(v for _, v in synced) / len(synced), lr_at(cfg, step - 1)])
                synced = []
            if do_ckpt:
                if info.is_main:
                    save_checkpoint(ckpt_path, {**tr.state_dict(), "log": {"history": history, "synced": synced}},
                                    keep_previous=True)
                barrier(info)
                last_good = saved = step
            if do_log and callback is not None and info.is_main:
                _, mean, lr = history[-1]
                callback({"event": "loss", "step": step, "loss": mean, "lr": lr, "role": role})
            if callback is not None and do_img and info.is_main:
                callback({"event": "images", "step": step, "role": role, "images": tr.preview()})
        if tr.step_count not in (saved, 0):  # stopped (stop_at) between checkpoints: one there, resumable
            synced += _check_finite(pending, ckpt_path, last_good, info)
            if info.is_main:
                save_checkpoint(ckpt_path, {**tr.state_dict(), "log": {"history": history, "synced": synced}},
                                keep_previous=True)
            barrier(info)
    finally:
        tr.close()
    return tr.inference_model().eval()


def load_model(ckpt_path: str | Path, expected_hash: Optional[str] = None, *, device: str | torch.device = "cpu",
               use_ema: bool = True) -> nn.Module:
    """Rebuild a trained network from its checkpoint (weights_only load; refuses another config hash)."""
    state = load_checkpoint(ckpt_path, expected_hash=expected_hash)
    cfg = TrainConfig.from_dict(json.loads(state["config"]))
    net = build_net(state["role"], cfg.preset, **cfg.net)
    weights = state["ema"] if use_ema and state["ema"] is not None else state["model"]
    net.load_state_dict(weights)
    return net.to(resolve_device(device)).eval()
