"""Sampling: one signature for every method, and StrDiffusion with adaptive resampling (Alg. 1).

    sample(method, models, image, known, *, sdes, generator, callback=None, **settings) -> SampleResult

``method`` is a key of :data:`SAMPLERS` (``irsde``, ``repaint``, ``strdiffusion``). Every method:
- is batched and runs under ``torch.no_grad()``; it never reads or writes files;
- draws all its noise from ``generator`` (a ``torch.Generator`` on the input's device), so a seed
  fixes the output bit for bit on a given device;
- returns the composited output ``gt * known + clamp(y_0, 0, 1) * (1 - known)`` (known pixels are
  the ground truth exactly);
- counts network evaluations per image: ``SampleResult.nfe`` = noise-network evaluations +
  discriminator evaluations. Calls are batched, so one call is one evaluation of every image in the
  batch; ``info["nfe_by_net"]`` splits the count by network (``irsde``, ``structure``, ``texture``,
  ``discriminator``). When adaptive resampling stops early for some images of a batch, those images
  still ride along in the remaining batched calls (their results are discarded): ``nfe`` counts what
  was spent, ``info["tries"]`` says how many resampling candidates each image actually used;
- calls ``callback(dict)`` after every move with keys ``t`` (the level of the states in the dict),
  ``y`` (texture), ``x`` (structure or None), ``score``, ``threshold``, ``accepted`` ((B,) tensors or
  None), ``phase`` (``step`` | ``resample`` | ``undo``) and ``nfe`` (evaluations so far). Tensors are
  the live states (no copies); the caller keeps what it needs (Fig. 8 KL curves, MLflow strips).

StrDiffusion (``strdiffusion``), per step t = T..1: structure step x_t -> x_{t-1} (structure net,
mu_x), then texture step y_t -> y_{t-1} (texture net conditioned on x_{t-1}); x_T = mu_x + lambda_x n,
y_T = mu_y + lambda n. ``mode="paper"``: Algorithm 1 as written (threshold Delta = first score, up to
``u_max`` candidates x~_t = forward_step(x_{t-1}) -> x~_{t-1} -> y~_{t-1} from y_t; stop at the first
rejected one, per image). ``mode="official"``: the authors' code (see :func:`_official_loop`).
Ablations (Table 2): ``A`` = RePaint* on the IR-SDE net (``Models.irsde``); ``B`` = the same resampling
with no discriminator, every candidate accepted, so a fixed number of tries per resampling step
(paper: ``u_max`` every step; official: ``u_max - 1`` at each resampling step); ``C`` = no resampling;
``D`` = full. The structure variant comes in as (x0, mu_x): computed with
``structure_states(variant, image, known, canny_sigma)`` or given precomputed as settings.

Settings are validated: an unknown name raises ``ConfigError`` (a ValueError) naming the valid ones.
Settings that only apply to one mode/ablation default to None; giving a value where it does not
apply raises too. See :data:`SETTINGS` for the defaults and ``README`` for what each means.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from baselines.irsde import Stepper, irsde_loop, randn_like, time_table
from baselines.repaint import repaint_loop
from strbench.errors import ConfigError
from strbench.sde import SDEPair, masked_mean

# --------------------------------------------------------------------------------------------
# public types
# --------------------------------------------------------------------------------------------


@dataclass
class Models:
    """The networks a method may use: noise nets ``net(x_t, mu, t, cond=None)``, ``D(y, x, t)``."""

    texture: Optional[Callable] = None  # structure-guided texture net (cond = x_{t-1})
    structure: Optional[Callable] = None  # structure net of the chosen variant
    discriminator: Optional[Callable] = None  # D(y, x, t) -> logits (B,)
    irsde: Optional[Callable] = None  # plain IR-SDE net (IR-SDE, RePaint*, ablation A)


@dataclass
class SampleResult:
    output: Tensor  # (B, 3, H, W) composited: gt * known + y_0 * (1 - known)
    nfe: int  # network evaluations per image (noise nets + discriminator)
    info: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# settings: defaults and checks
# --------------------------------------------------------------------------------------------

ABLATIONS = ("A", "B", "C", "D")  # Table 2: A IR-SDE+RePaint, B no discriminator, C no resampling, D full
MODES = ("paper", "official")
ACCEPT = ("lower", "higher")

SETTINGS: dict[str, dict[str, Any]] = {
    "irsde": {"ode": False},
    "repaint": {"jump_length": 10, "jump_n_sample": 10},
    "strdiffusion": {
        "ablation": "D",
        "mode": "paper",
        "variant": "gray2edge",
        "canny_sigma": 3.0,
        "x0": None,  # precomputed structure states (B,1,H,W); else structure_states(variant, ...)
        "mu_x": None,
        "accept": "lower",  # Alg. 1 line 10 as written: accept a candidate when S < Delta
        "u_max": 25,  # U of Alg. 1 / u_max of the authors' code (T=100; their T=400 value is 6)
        "structure_repaint": None,  # official: True; paper: False
        "disc_time": None,  # time given to D: paper "t-1" (D(y_{t-1}, x_{t-1}, t-1)); official "t"
        "disc_mask_texture": False,  # True: D sees y * known, as the authors' test script
        # official mode only (defaults for T=100; the code's T=400 values: u_max 6, u_min 3, jump 5, re 5)
        "u_min": None,  # 4
        "jump": None,  # 2: resample only at steps t % jump == 0
        "re": None,  # 2: structure re-noising steps per candidate
        "stage_end": None,  # 0.4: resample only while t >= stage_end * T
        "late_structure": None,  # "texture_mean" (below stage_end*T x = channel mean of y_t) | "net"
        # ablation A only (RePaint's schedule)
        "jump_length": None,  # 10
        "jump_n_sample": None,  # 10
    },
}

_OFFICIAL_ONLY = {"u_min": 4, "jump": 2, "re": 2, "stage_end": 0.4, "late_structure": "texture_mean"}
_ABLATION_A_ONLY = {"jump_length": 10, "jump_n_sample": 10}
_MODE_DEFAULTS = {
    "paper": {"structure_repaint": False, "disc_time": "t-1"},
    "official": {"structure_repaint": True, "disc_time": "t"},
}


def _int(name: str, v, lo: int = 1) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ConfigError(f"sampler setting {name!r} must be an int >= {lo}, got {v!r}")


def _choice(name: str, v, choices) -> None:
    if v not in choices:
        raise ConfigError(f"sampler setting {name!r} must be one of {list(choices)}, got {v!r}")


def _bool(name: str, v) -> None:
    if not isinstance(v, bool):
        raise ConfigError(f"sampler setting {name!r} must be true or false, got {v!r}")


def _check_irsde(s: dict) -> dict:
    _bool("ode", s["ode"])
    return s


def _check_repaint(s: dict) -> dict:
    _int("jump_length", s["jump_length"])
    _int("jump_n_sample", s["jump_n_sample"])
    return s


def _check_strdiffusion(s: dict) -> dict:
    from strbench.structure import VARIANTS

    _choice("ablation", s["ablation"], ABLATIONS)
    _choice("mode", s["mode"], MODES)
    _choice("variant", s["variant"], VARIANTS)
    _choice("accept", s["accept"], ACCEPT)
    _int("u_max", s["u_max"])
    if not isinstance(s["canny_sigma"], (int, float)) or isinstance(s["canny_sigma"], bool) \
            or s["canny_sigma"] <= 0:
        raise ConfigError(f"sampler setting 'canny_sigma' must be > 0, got {s['canny_sigma']!r}")
    if (s["x0"] is None) != (s["mu_x"] is None):
        raise ConfigError("sampler settings 'x0' and 'mu_x' go together: give both precomputed structure "
                          "states or neither")
    _bool("disc_mask_texture", s["disc_mask_texture"])
    for k, v in _MODE_DEFAULTS[s["mode"]].items():
        if s[k] is None:
            s[k] = v
    _bool("structure_repaint", s["structure_repaint"])
    _choice("disc_time", s["disc_time"], ("t-1", "t"))
    for k, v in _OFFICIAL_ONLY.items():
        if s["mode"] == "official":
            s[k] = v if s[k] is None else s[k]
        elif s[k] is not None:
            raise ConfigError(f"sampler setting {k!r} only applies to mode='official' (mode is {s['mode']!r})")
    if s["mode"] == "official":
        _int("u_min", s["u_min"])
        _int("jump", s["jump"])
        _int("re", s["re"])
        if not isinstance(s["stage_end"], (int, float)) or not 0.0 <= s["stage_end"] <= 1.0:
            raise ConfigError(f"sampler setting 'stage_end' must be in [0, 1], got {s['stage_end']!r}")
        _choice("late_structure", s["late_structure"], ("texture_mean", "net"))
    for k, v in _ABLATION_A_ONLY.items():
        if s["ablation"] == "A":
            s[k] = v if s[k] is None else s[k]
            _int(k, s[k])
        elif s[k] is not None:
            raise ConfigError(f"sampler setting {k!r} only applies to ablation 'A' (RePaint resampling)")
    return s


def resolve_settings(method: str, settings: dict) -> dict:
    """Defaults merged with `settings`, checked; unknown names raise ConfigError naming the valid ones."""
    if method not in SAMPLERS:
        raise ConfigError(f"unknown sampling method {method!r}; choose one of {sorted(SAMPLERS)}")
    defaults = SETTINGS[method]
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown} for method {method!r}; valid: {sorted(defaults)}")
    return SAMPLERS[method].check({**defaults, **settings})


# --------------------------------------------------------------------------------------------
# the common shell
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    run: Callable[..., tuple[Tensor, dict]]  # (models, image, known, *, sdes, generator, callback, counter, **s)
    check: Callable[[dict], dict]


def _check_inputs(image: Tensor, known: Tensor, generator) -> None:
    if not isinstance(image, Tensor) or image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be a (B, 3, H, W) tensor, got {getattr(image, 'shape', type(image))}")
    if not isinstance(known, Tensor) or known.shape != (image.shape[0], 1, *image.shape[-2:]):
        raise ValueError(f"known must be (B, 1, H, W) = {(image.shape[0], 1, *image.shape[-2:])}, "
                         f"got {getattr(known, 'shape', type(known))}")
    if known.device != image.device:
        raise ValueError(f"image is on {image.device} but known on {known.device}")
    if not isinstance(generator, torch.Generator):
        raise ValueError("generator must be a torch.Generator (all sampling noise is drawn from it)")
    g, d = generator.device, image.device
    if g.type != d.type or (g.index is not None and d.index is not None and g.index != d.index):
        raise ValueError(f"generator is on {g} but the image on {d}: create it with "
                         f"torch.Generator(device=image.device)")


def _need(models: Models, *names: str, why: str) -> None:
    missing = [n for n in names if getattr(models, n) is None]
    if missing:
        raise ConfigError(f"{why} needs the model(s) {missing} (Models.{', Models.'.join(missing)})")


def sample(method: str, models: Models, image: Tensor, known: Tensor, *, sdes: SDEPair,
           generator: torch.Generator, callback: Optional[Callable[[dict], None]] = None,
           **settings) -> SampleResult:
    """Inpaint `image` where `known` == 0 with `method`; see the module docstring for the contract."""
    s = resolve_settings(method, settings)
    _check_inputs(image, known, generator)
    known = (known > 0.5).to(image.dtype)
    counter: dict[str, int] = {}
    with torch.no_grad():
        y0, info = SAMPLERS[method].run(models, image, known, sdes=sdes, generator=generator,
                                        callback=callback, counter=counter, **s)
        output = torch.where(known > 0.5, image, y0.clamp(0.0, 1.0))
    shown = {k: v for k, v in s.items() if not isinstance(v, Tensor)}
    info = {"settings": shown, "nfe_by_net": dict(counter), **info}
    return SampleResult(output=output, nfe=int(sum(counter.values())), info=info)


def _run_irsde(models, image, known, *, sdes, generator, callback, counter, ode):
    _need(models, "irsde", why="method 'irsde'")
    y0 = irsde_loop(models.irsde, sdes.texture, image, known, generator=generator, callback=callback,
                    ode=ode, counter=counter)
    return y0, {}


def _run_repaint(models, image, known, *, sdes, generator, callback, counter, jump_length, jump_n_sample):
    _need(models, "irsde", why="method 'repaint'")
    y0 = repaint_loop(models.irsde, sdes.texture, image, known, generator=generator, callback=callback,
                      jump_length=jump_length, jump_n_sample=jump_n_sample, counter=counter)
    return y0, {}


# --------------------------------------------------------------------------------------------
# StrDiffusion
# --------------------------------------------------------------------------------------------


class _StrDiffusion:
    """State and network calls shared by the paper and official loops (texture y 3ch, structure x 1ch)."""

    def __init__(self, models: Models, image: Tensor, known: Tensor, sdes: SDEPair, generator, callback,
                 counter: dict, s: dict, x0: Tensor, mu_x: Tensor):
        self.m, self.g, self.cb, self.counter, self.s = models, generator, callback, counter, s
        self.known, self.is_known = known, known > 0.5
        self.sy, self.sx = Stepper(sdes.texture), Stepper(sdes.structure)
        self.T = self.sy.T
        self.mu_y = masked_mean(image, known)
        self.x0, self.mu_x = x0, mu_x
        self.ts = time_table(self.T, image.shape[0], image.device)
        self.repaint_x = s["structure_repaint"]
        self.d_shift = 1 if s["disc_time"] == "t-1" else 0
        self.use_d = s["ablation"] == "D"
        self.resample = s["ablation"] in ("B", "D")
        self.lower = s["accept"] == "lower"
        for k in ("structure", "texture", "discriminator"):
            counter.setdefault(k, 0)
        B = image.shape[0]
        self.tries = torch.zeros(B, dtype=torch.long, device=image.device)
        self.n_accepted = torch.zeros(B, dtype=torch.long, device=image.device)

    def noise(self, like: Tensor) -> Tensor:
        return randn_like(like, self.g)

    def nfe(self) -> int:
        return sum(self.counter.values())

    def structure_step(self, x: Tensor, t: int) -> Tensor:
        """x_t -> x_{t-1} with the structure net (Alg. 1 line 2); known region first replaced by a
        forward sample of the true structure at level t when structure_repaint is on (authors' code)."""
        if self.repaint_x:
            x = torch.where(self.is_known, self.sx.q(self.x0, self.mu_x, t, self.noise(x)), x)
        eps = self.m.structure(x, self.mu_x, self.ts[t])
        self.counter["structure"] += 1
        return self.sx.reverse(x, self.mu_x, eps, t, self.noise(x))

    def texture_step(self, y: Tensor, t: int, cond: Tensor) -> Tensor:
        """y_t -> y_{t-1} with the texture net conditioned on the structure x_{t-1} (Alg. 1 line 3)."""
        eps = self.m.texture(y, self.mu_y, self.ts[t], cond=cond)
        self.counter["texture"] += 1
        return self.sy.reverse(y, self.mu_y, eps, t, self.noise(y))

    def score(self, y: Tensor, x: Tensor, t: int) -> Tensor:
        """D(y_{t-1}, x_{t-1}, t-1) (paper) or D(..., t) (authors' code): (B,) correlation scores."""
        if self.s["disc_mask_texture"]:
            y = y * self.known
        out = self.m.discriminator(y, x, self.ts[t - self.d_shift]).reshape(-1)
        self.counter["discriminator"] += 1
        return out

    def better(self, S: Tensor, delta: Tensor) -> Tensor:
        """Alg. 1 line 10: S < Delta ("lower", as written) or S > Delta ("higher")."""
        return S < delta if self.lower else S > delta

    def emit(self, t, y, x, phase, score=None, threshold=None, accepted=None) -> None:
        if self.cb is not None:
            self.cb({"t": t, "y": y, "x": x, "score": score, "threshold": threshold, "accepted": accepted,
                     "phase": phase, "nfe": self.nfe()})


def _where(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return torch.where(mask.view(-1, 1, 1, 1), a, b)


def _paper_loop(r: _StrDiffusion, y: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Algorithm 1 (supplementary) as written, per image of the batch."""
    U = r.s["u_max"]
    for t in range(r.T, 0, -1):  # 1 for t = T..1
        x_prev = r.structure_step(x, t)  # 2
        y_prev = r.texture_step(y, t, x_prev)  # 3
        if r.resample:
            delta = r.score(y_prev, x_prev, t) if r.use_d else None  # 4 threshold Delta
            active = torch.ones(y.shape[0], dtype=torch.bool, device=y.device)
            for _u in range(U):  # 5 for u = 1..U
                x_tilde_t = r.sx.forward(x_prev, r.mu_x, t, r.noise(x_prev))  # 6 (Eq. 17)
                x_c = r.structure_step(x_tilde_t, t)  # 7
                y_c = r.texture_step(y, t, x_c)  # 8 (from y_t, guided by the new structure)
                S = r.score(y_c, x_c, t) if r.use_d else None  # 9
                acc = active & r.better(S, delta) if r.use_d else active  # 10 (B: always accept)
                x_prev, y_prev = _where(acc, x_c, x_prev), _where(acc, y_c, y_prev)  # 11, 12
                r.tries += active
                r.n_accepted += acc
                active = acc  # 14 break (per image)
                r.emit(t - 1, y_c, x_c, "resample", S, delta, acc)
                if r.use_d and not bool(active.any()):
                    break
        x, y = x_prev, y_prev
        r.emit(t - 1, y, x, "step")
    return y, x


def _official_loop(r: _StrDiffusion, y: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """The authors' sampler (SPEC section 2): resample every `jump` steps while t >= stage_end * T,
    structure re-noised `re` levels then denoised again, candidate accepted when its score beats the
    first score; before the u_min-th try a rejected candidate is averaged with the current pair; below
    stage_end * T the structure is the channel mean of the texture (late_structure="texture_mean")."""
    s = r.s
    T = r.T
    for t in range(T, 0, -1):
        early = t >= s["stage_end"] * T
        if early or s["late_structure"] == "net":
            x_prev = r.structure_step(x, t)
        else:
            x_prev = y.mean(dim=1, keepdim=True)  # late stage: structure = gray of the texture y_t
        y_prev = r.texture_step(y, t, x_prev)
        if r.resample and early and t % s["jump"] == 0:
            n_re = min(s["re"], T - t + 1)  # re-noise at most up to level T
            delta = r.score(y_prev, x_prev, t) if r.use_d else None
            active = torch.ones(y.shape[0], dtype=torch.bool, device=y.device)
            for i in range(1, s["u_max"]):  # the code's `for i in range(1, u_max)`
                y_t = r.sy.forward(y_prev, r.mu_y, t, r.noise(y_prev))  # texture back to level t
                x_c = x_prev
                for lvl in range(t, t + n_re):  # structure t-1 -> t-1+n_re
                    x_c = r.sx.forward(x_c, r.mu_x, lvl, r.noise(x_c))
                for lvl in range(t + n_re - 1, t - 1, -1):  # and denoised back to t-1
                    x_c = r.structure_step(x_c, lvl)
                y_c = r.texture_step(y_t, t, x_c)
                S = r.score(y_c, x_c, t) if r.use_d else None
                good = r.better(S, delta) if r.use_d else torch.ones_like(active)
                acc = active & good
                r.tries += active
                r.n_accepted += acc
                if i >= s["u_min"]:
                    x_prev, y_prev = _where(acc, x_c, x_prev), _where(acc, y_c, y_prev)
                    active = acc
                else:  # before u_min: take a better candidate, average a rejected one with the pair
                    x_prev = _where(good, x_c, (x_prev + x_c) / 2)
                    y_prev = _where(good, y_c, (y_prev + y_c) / 2)
                r.emit(t - 1, y_c, x_c, "resample", S, delta, acc)
                if r.use_d and not bool(active.any()):
                    break
        x, y = x_prev, y_prev
        r.emit(t - 1, y, x, "step")
    return y, x


def _structure_inputs(image: Tensor, known: Tensor, s: dict) -> tuple[Tensor, Tensor]:
    if s["x0"] is not None:
        x0, mu_x = s["x0"], s["mu_x"]
        want = (image.shape[0], 1, *image.shape[-2:])
        for name, v in (("x0", x0), ("mu_x", mu_x)):
            if not isinstance(v, Tensor) or tuple(v.shape) != want:
                raise ValueError(f"sampler setting {name!r} must be a tensor of shape {want}")
        return x0.to(image.device, image.dtype), mu_x.to(image.device, image.dtype)
    from strbench.structure import structure_states

    return structure_states(s["variant"], image, known, canny_sigma=float(s["canny_sigma"]))


def _run_strdiffusion(models, image, known, *, sdes, generator, callback, counter, **s):
    if s["ablation"] == "A":  # Table 2 case A: IR-SDE + RePaint's resampling
        _need(models, "irsde", why="StrDiffusion ablation 'A' (IR-SDE + RePaint resampling)")
        y0 = repaint_loop(models.irsde, sdes.texture, image, known, generator=generator, callback=callback,
                          jump_length=s["jump_length"], jump_n_sample=s["jump_n_sample"], counter=counter)
        return y0, {}
    _need(models, "texture", "structure", why=f"StrDiffusion ablation {s['ablation']!r}")
    if s["ablation"] == "D":
        _need(models, "discriminator", why="StrDiffusion ablation 'D' (adaptive resampling)")
    if sdes.texture.T != sdes.structure.T:
        raise ConfigError(f"texture and structure SDEs need the same T, got {sdes.texture.T} and "
                          f"{sdes.structure.T}")
    x0, mu_x = _structure_inputs(image, known, s)
    r = _StrDiffusion(models, image, known, sdes, generator, callback, counter, s, x0, mu_x)
    y = r.mu_y + r.sy.lam * r.noise(r.mu_y)  # y_T
    x = mu_x + r.sx.lam * r.noise(mu_x)  # x_T
    loop = _paper_loop if s["mode"] == "paper" else _official_loop
    y0, x_last = loop(r, y, x)
    return y0, {"structure": x_last, "tries": r.tries, "accepted": r.n_accepted}


SAMPLERS: dict[str, Method] = {
    "irsde": Method(_run_irsde, _check_irsde),
    "repaint": Method(_run_repaint, _check_repaint),
    "strdiffusion": Method(_run_strdiffusion, _check_strdiffusion),
}
