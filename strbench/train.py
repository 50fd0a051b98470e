"""Training objectives (paper Eqs. 5, 13, 14-16) and the training loop.

Objectives are pure functions of (network, SDE, tensors) returning a scalar loss. The loop
(:class:`Trainer`, :func:`train_model`) keeps the training set as one tensor on the device, precomputes
the structure maps once, samples batches, masks, levels and noise from one seeded torch.Generator
(so a resumed run reproduces the loss sequence exactly), and checkpoints atomically.
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
import torch.nn.functional as F
from torch import Tensor, nn

import strbench
from strbench import sde as sdelib
from strbench.checkpoint import load_checkpoint, save_checkpoint, FORMAT
from strbench.errors import ConfigError, DataError, TrainingDiverged
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
BOOKKEEPING = ("checkpoint_every", "log_every", "images_every")
_COMMON = ("steps", "batch", "lr", "lr_schedule", "lr_milestones", "lr_gamma", "lr_min", "warmup",
           "grad_clip", "ema", "seed", "preset", "net", "sde", "amp", "data_id")
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
    batch: int = 8
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
# data on the device
# --------------------------------------------------------------------------------------------


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"device: {e}; use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {device!r} requested but CUDA is not available; use auto or cpu")
    return dev


def stack_images(dataset) -> Tensor:
    """A Dataset of Tensor[3,H,W] (or (tensor, ...) items) or a Tensor (N,3,H,W) -> float32 (N,3,H,W)."""
    if isinstance(dataset, Tensor):
        images = dataset
    else:
        n = len(dataset)
        if n == 0:
            raise DataError("training dataset is empty")
        items = [dataset[i] for i in range(n)]
        items = [it[0] if isinstance(it, (tuple, list)) else it for it in items]
        images = torch.stack(items)
    images = images.float()
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise DataError(f"training images must be (N, 3, H, W) with N >= 1, got {tuple(images.shape)}")
    if images.min() < 0 or images.max() > 1:
        raise DataError("training images must lie in [0, 1]")
    return images


def mask_tensor(masks) -> Tensor:
    """A MaskSet (``.masks``), Tensor or array of known masks -> float32 (M, 1, H, W) in {0, 1}."""
    m = getattr(masks, "masks", masks)
    m = torch.as_tensor(m).float()
    if m.ndim == 3:
        m = m[:, None]
    if m.ndim != 4 or m.shape[1] != 1 or m.shape[0] == 0:
        raise DataError(f"training masks must be (M, 1, H, W) known masks with M >= 1, got {tuple(m.shape)}")
    if not torch.all((m == 0) | (m == 1)):
        raise DataError("training masks must be binary known masks (1 = known, 0 = hole)")
    return m


def sde_to(sde: SDE, device: torch.device) -> SDE:
    """Copy of the SDE with its per-level arrays on `device` (no host->device copy per step)."""
    return dataclasses.replace(sde, **{f.name: getattr(sde, f.name).to(device) for f in dataclasses.fields(sde)
                                       if isinstance(getattr(sde, f.name), Tensor)})


@dataclass
class DeviceData:
    """The training set on the device: images, structure maps (x_0 map, unmasked mu map), known masks."""

    images: Tensor  # (N, 3, H, W)
    masks: Tensor  # (M, 1, H, W)
    x0_map: Optional[Tensor] = None  # (N, 1, H, W)
    mu_map: Optional[Tensor] = None  # (N, 1, H, W); mu_x = mu_map * known


def prepare_data(role: str, cfg: TrainConfig, dataset, masks, device: torch.device) -> DeviceData:
    """Stack the dataset, precompute the structure maps once (CPU canny), move everything to `device`."""
    images = stack_images(dataset)
    m = mask_tensor(masks)
    if m.shape[-2:] != images.shape[-2:]:
        raise DataError(f"mask size {tuple(m.shape[-2:])} differs from image size {tuple(images.shape[-2:])}")
    x0_map = mu_map = None
    if role != "irsde":
        from strbench.structure import structure_states

        # mu_x = map * known (structure.py), so the unmasked map is the mu of an all-known mask
        x0_map, mu_map = structure_states(cfg.variant, images, torch.ones_like(images[:, :1]),
                                          canny_sigma=cfg.canny_sigma)
        x0_map, mu_map = x0_map.float().to(device), mu_map.float().to(device)
    return DeviceData(images=images.to(device), masks=m.to(device), x0_map=x0_map, mu_map=mu_map)


# --------------------------------------------------------------------------------------------
# per-role batch construction: (trainer, generator, out) -> loss
# --------------------------------------------------------------------------------------------


@dataclass
class Batch:
    y0: Tensor
    known: Tensor
    t: Tensor
    idx: Tensor


def _guide_optimal(tr: "Trainer", x_t: Tensor, x0: Tensor, mu_x: Tensor, t: Tensor) -> Tensor:
    """Authors' choice: the optimal structure state x*_{t-1} (Eq. 10) of a forward-sampled x_t."""
    return sdelib.optimal_reverse_state(tr.sdes.structure, x_t, x0, mu_x, t)


def _guide_net(tr: "Trainer", x_t: Tensor, x0: Tensor, mu_x: Tensor, t: Tensor) -> Tensor:
    """The trained structure net's estimate of x*_{t-1}: the reverse-step mean (z = 0)."""
    with torch.no_grad():
        eps = tr.structure_net(x_t, mu_x, t).float()
    return sdelib.reverse_mean(tr.sdes.structure, x_t, mu_x, eps, t)


GUIDANCE: dict[str, Callable[..., Tensor]] = {"optimal": _guide_optimal, "net": _guide_net}


def _structure_pair(tr: "Trainer", b: Batch):
    x0 = tr.data.x0_map[b.idx]
    mu_x = tr.data.mu_map[b.idx] * b.known
    return x0, mu_x


def _texture_states(tr: "Trainer", b: Batch, g: torch.Generator) -> TextureStates:
    mu_y = sdelib.masked_mean(b.y0, b.known)
    x0, mu_x = _structure_pair(tr, b)
    y_t = sdelib.q_sample(tr.sdes.texture, b.y0, mu_y, b.t, tr.randn(b.y0.shape, g))
    x_t = sdelib.q_sample(tr.sdes.structure, x0, mu_x, b.t, tr.randn(x0.shape, g))
    x_prev = GUIDANCE[tr.cfg.guidance](tr, x_t, x0, mu_x, b.t)
    return TextureStates(y0=b.y0, mu_y=mu_y, known=b.known, t=b.t, y_t=y_t, x0=x0, mu_x=mu_x, x_t=x_t,
                         x_prev=x_prev)


def _role_irsde(tr: "Trainer", model: nn.Module, g: torch.Generator, out=None) -> Tensor:
    b = tr.sample_batch(g)
    mu = sdelib.masked_mean(b.y0, b.known)
    return irsde_loss(model, tr.sdes.texture, b.y0, mu, b.t, tr.randn(b.y0.shape, g), out)


def _role_structure(tr: "Trainer", model: nn.Module, g: torch.Generator, out=None) -> Tensor:
    b = tr.sample_batch(g)
    x0, mu_x = _structure_pair(tr, b)
    return structure_loss(model, tr.sdes.structure, x0, mu_x, b.t, tr.randn(x0.shape, g), out)


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
# the trainer: one object holding net, EMA, optimiser, generator, data; step() is one full step
# --------------------------------------------------------------------------------------------


class Trainer:
    """Holds everything one training run needs; ``step()`` runs one optimisation step (no host sync)."""

    def __init__(self, role: str, cfg: TrainConfig, dataset, masks, *, device: str | torch.device = "auto",
                 structure_net: Optional[nn.Module] = None):
        cfg.validate(role)
        if cfg.guidance == "net" and role in ("texture", "discriminator") and structure_net is None:
            raise ConfigError("train.guidance = 'net' needs a trained structure net (pass structure_net=...); "
                              "or use guidance 'optimal'")
        self.role, self.cfg = role, cfg
        self.device = resolve_device(device)
        pair = sdelib.make_sde_pair(cfg.sde, cfg.sde_structure)
        self.sdes = SDEPair(texture=sde_to(pair.texture, self.device), structure=sde_to(pair.structure, self.device))
        self.T = pair.texture.T
        if pair.structure.T != self.T:
            raise ConfigError(f"train.sde_structure.T ({pair.structure.T}) must equal train.sde.T ({self.T})")
        self.data = prepare_data(role, cfg, dataset, masks, self.device)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
            torch.manual_seed(cfg.seed)
            self.net = build_net(role, cfg.preset, **cfg.net).to(self.device)
        self.net.train()
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.ema = None
        if cfg.ema > 0:
            self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
            self.ema_params = list(self.ema.parameters())
        extra = {"fused": True} if self.device.type == "cuda" else {"foreach": True}
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr, betas=(0.9, 0.99), **extra)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(cfg.seed)
        self.structure_net = None
        if structure_net is not None:
            self.structure_net = structure_net.to(self.device).eval().requires_grad_(False)
        self.amp = bool(cfg.amp) and self.device.type == "cuda"
        self.batch_size = cfg.batch
        self.step_count = 0
        self.objective = ROLE_STEPS[role]

    # --- sampling helpers (all through the given generator) ---
    def randn(self, shape, g: torch.Generator) -> Tensor:
        return torch.randn(shape, generator=g, device=self.device)

    def sample_batch(self, g: torch.Generator) -> Batch:
        """Images, masks and levels t ~ U{1..T}, each sampled with replacement from the generator."""
        n = self.batch_size
        idx = torch.randint(self.data.images.shape[0], (n,), generator=g, device=self.device)
        midx = torch.randint(self.data.masks.shape[0], (n,), generator=g, device=self.device)
        t = torch.randint(1, self.T + 1, (n,), generator=g, device=self.device)
        return Batch(y0=self.data.images[idx], known=self.data.masks[midx], t=t, idx=idx)

    def autocast(self):
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # --- one step ---
    def step(self) -> Tensor:
        """One full training step: lr, batch, targets, forward, backward, clip, Adam, EMA. Returns the loss."""
        lr = lr_at(self.cfg, self.step_count)
        for group in self.opt.param_groups:
            group["lr"] = lr
        with self.autocast():
            loss = self.objective(self, self.net, self.gen)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip, foreach=True)
        self.opt.step()
        if self.ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(self.ema_params, self.params, 1.0 - self.cfg.ema)
        self.step_count += 1
        return loss.detach()

    @torch.no_grad()
    def preview(self, n: int = 4, seed: int = 12345) -> dict:
        """Tensors of one fixed small batch (own generator: the training RNG stream is untouched)."""
        g = torch.Generator(device=self.device)
        g.manual_seed(seed)
        out: dict = {}
        model = self.inference_model()
        was = model.training
        model.eval()
        try:
            self.batch_size = min(n, self.cfg.batch)
            self.objective(self, model, g, out)
        finally:
            self.batch_size = self.cfg.batch
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
            "step": self.step_count, "model": self.net.state_dict(),
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
        self.step_count = int(state["step"])


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------


def _check_finite(pending: list[tuple[int, Tensor]], ckpt_path: Path, last_good: int) -> list[float]:
    """One host sync for all pending losses; raise TrainingDiverged at the first NaN/Inf."""
    if not pending:
        return []
    values = torch.stack([v for _, v in pending]).float().cpu().tolist()
    for (step, _), v in zip(pending, values):
        if not math.isfinite(v):
            where = f"the last good checkpoint (step {last_good}) in {ckpt_path} is intact" if last_good \
                else f"no checkpoint was written yet ({ckpt_path})"
            raise TrainingDiverged(f"training diverged: loss is {v} at step {step}; {where}; "
                                   f"lower train.lr or set train.grad_clip")
    return values


def train_model(role: str, cfg: TrainConfig, dataset, masks, *, ckpt_path: str | Path,
                callback: Optional[Callable[[dict], Any]] = None, device: str | torch.device = "auto",
                structure_net: Optional[nn.Module] = None) -> nn.Module:
    """Train (or resume, or just load when finished) the `role` network; return the inference model
    (EMA weights when ema > 0) in eval mode.

    callback receives ``{"event": "loss", "step", "loss" (mean since the previous log), "lr", "role"}``
    every ``log_every`` steps and ``{"event": "images", "step", "role", "images": {name: Tensor}}`` every
    ``images_every`` steps. A NaN/Inf loss raises TrainingDiverged naming the step; checkpoints are only
    written after the losses since the previous one were checked finite.
    """
    ckpt_path = Path(ckpt_path)
    tr = Trainer(role, cfg, dataset, masks, device=device, structure_net=structure_net)
    if ckpt_path.exists():
        tr.load_state_dict(load_checkpoint(ckpt_path, expected_hash=cfg.hash(role)))
    last_good = tr.step_count if ckpt_path.exists() else 0
    window: list[tuple[int, Tensor]] = []  # losses since the last log
    unchecked: list[tuple[int, Tensor]] = []  # losses since the last finiteness check
    while tr.step_count < cfg.steps:
        loss = tr.step()
        step = tr.step_count
        window.append((step, loss))
        unchecked.append((step, loss))
        do_log = step % cfg.log_every == 0 or step == cfg.steps
        do_ckpt = step % cfg.checkpoint_every == 0 or step == cfg.steps
        do_img = cfg.images_every > 0 and step % cfg.images_every == 0
        if do_log or do_ckpt or do_img:
            _check_finite(unchecked, ckpt_path, last_good)
            unchecked = []
        if do_ckpt:
            save_checkpoint(ckpt_path, tr.state_dict())
            last_good = step
        if callback is not None and do_log:
            mean = float(torch.stack([v for _, v in window]).float().mean())
            callback({"event": "loss", "step": step, "loss": mean, "lr": lr_at(cfg, step - 1), "role": role})
        if do_log:
            window = []
        if callback is not None and do_img:
            callback({"event": "images", "step": step, "role": role, "images": tr.preview()})
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
