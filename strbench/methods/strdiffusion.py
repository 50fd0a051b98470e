"""StrDiffusion (the paper's method): structure-guided sampling with adaptive resampling (Alg. 1).

Per step t = T..1: structure step x_t -> x_{t-1} (structure net, mu_x), then texture step
y_t -> y_{t-1} (texture net conditioned on x_{t-1}); x_T = mu_x + lambda_x n, y_T = mu_y + lambda n.
``mode="paper"``: Algorithm 1 as written (threshold Delta = first score, up to ``u_max`` candidates
x~_t = forward_step(x_{t-1}) -> x~_{t-1} -> y~_{t-1} from y_t; stop at the first rejected one, per
image). ``mode="official"``: the authors' code (see :func:`_official_loop`).
Ablations (Table 2): ``A`` = RePaint* on the IR-SDE net (``Models.irsde``); ``B`` = the same resampling
with no discriminator, every candidate accepted, so a fixed number of tries per resampling step
(paper: ``u_max`` every step; official: ``u_max - 1`` at each resampling step); ``C`` = no resampling;
``D`` = full. The structure variant comes in as (x0, mu_x): computed with
``structure_states(variant, image, known, canny_sigma)`` or given precomputed as inputs.

With ``solver: posterior | mr`` (:mod:`strbench.solvers`, docs/SCIENCE.md#solvers) both SDEs step on the
same coarse grid of ``steps`` levels: "t -> t-1" below reads "grid step k: levels[k] -> levels[k+1]", and
the official loop's stage boundary, ``jump`` and ``re`` count solver steps (with euler: levels, as before).

Settings that only apply to one mode/ablation default to None; giving a value where it does not
apply is an error. :class:`StrDiffusionSettings` is the one place of the defaults.
"""
from __future__ import annotations

from typing import Literal, Optional

import torch
from pydantic import Field, model_validator
from torch import Tensor

from strbench.errors import ConfigError
from strbench.methods.base import Method, SampleContext
from strbench.resampling import repaint_loop
from strbench.sde import masked_mean
from strbench.solvers import Solver, SolverSettings, make_solver
from strbench.steps import Stepper, time_table
from strbench.structure import DEFAULT_CANNY_SIGMA, DEFAULT_VARIANT

ABLATIONS = ("A", "B", "C", "D")  # Table 2: A IR-SDE+RePaint, B no discriminator, C no resampling, D full
MODES = ("paper", "official")

# official mode only: the released test loop's hard-coded values (its comments: T=400 6/3/5/5,
# T=100 25/4/2/2, faster 10/2/1/2; docs/SCIENCE.md#sampler-official)
_OFFICIAL_ONLY = {"u_min": 3, "jump": 5, "re": 5, "stage_end": 0.4, "late_structure": "texture_mean"}
_ABLATION_A_ONLY = {"jump_length": 10, "jump_n_sample": 10}  # ablation A: RePaint's schedule
_MODE_DEFAULTS = {
    "paper": {"u_max": 25, "structure_repaint": False, "disc_time": "t-1", "disc_mask_texture": False},
    "official": {"u_max": 6, "structure_repaint": True, "disc_time": "t", "disc_mask_texture": True},
}


class StrDiffusionSettings(SolverSettings):
    """StrDiffusion sampling settings (None = the default for the mode/ablation: the official-only
    keys need mode official, jump_* need ablation A)."""

    method: Literal["strdiffusion"]
    ablation: Literal["A", "B", "C", "D"] = "D"  # Table 2: A IR-SDE+RePaint, B no D, C no resampling, D full
    mode: Literal["paper", "official"] = "paper"  # Alg. 1 as written | the authors' code
    accept: Literal["lower", "higher"] = "lower"  # Alg. 1 line 10 as written: accept when S < Delta
    u_max: Optional[int] = Field(None, ge=1)  # U of Alg. 1 (paper: 25) / u_max of the authors' code (official: 6)
    structure_repaint: Optional[bool] = None  # known structure replaced by a forward sample (official: on)
    disc_time: Optional[Literal["t-1", "t"]] = None  # time given to D (paper t-1, official t); = train disc_time
    disc_mask_texture: Optional[bool] = None  # D sees y * known (paper off, official on: the authors' test loop)
    u_min: Optional[int] = Field(None, ge=1)  # official: 3 (before the u_min-th try a rejection averages)
    jump: Optional[int] = Field(None, ge=1)  # official: 5 (resample only at steps t % jump == 0)
    re: Optional[int] = Field(None, ge=1)  # official: 5 (structure re-noising steps per candidate)
    stage_end: Optional[float] = Field(None, ge=0.0, le=1.0)  # official: 0.4 (early stage t >= int(stage_end T))
    late_structure: Optional[Literal["texture_mean", "net"]] = None  # official: texture_mean
    jump_length: Optional[int] = Field(None, ge=1)  # ablation A: 10
    jump_n_sample: Optional[int] = Field(None, ge=1)  # ablation A: 10

    @model_validator(mode="after")
    def _applies(self):
        for k in _OFFICIAL_ONLY:
            if self.mode != "official" and getattr(self, k) is not None:
                raise ValueError(f"sampler setting {k!r} only applies to mode='official' (mode is {self.mode!r})")
        for k in _ABLATION_A_ONLY:
            if self.ablation != "A" and getattr(self, k) is not None:
                raise ValueError(f"sampler setting {k!r} only applies to ablation 'A' (RePaint resampling)")
        return self

    def effective(self) -> dict:
        s = super().effective()
        for k, v in _MODE_DEFAULTS[self.mode].items():
            if s[k] is None:
                s[k] = v
        if self.mode == "official":
            s.update({k: v for k, v in _OFFICIAL_ONLY.items() if s[k] is None})
        if self.ablation == "A":
            s.update({k: v for k, v in _ABLATION_A_ONLY.items() if s[k] is None})
        return s


def roles(s: StrDiffusionSettings) -> tuple[str, ...]:
    """A: the IR-SDE net; B, C: structure + texture; D: + the discriminator."""
    if s.ablation == "A":
        return ("irsde",)
    if s.ablation in ("B", "C"):
        return ("structure", "texture")
    return ("structure", "texture", "discriminator")


def check_inputs(s: dict) -> dict:
    """The non-YAML sampler inputs: structure variant, Canny sigma, precomputed (x0, mu_x)."""
    from strbench.structure import VARIANTS

    if s["variant"] not in VARIANTS:
        raise ConfigError(f"sampler setting 'variant' must be one of {list(VARIANTS)}, got {s['variant']!r}")
    cs = s["canny_sigma"]
    if not isinstance(cs, (int, float)) or isinstance(cs, bool) or cs <= 0:
        raise ConfigError(f"sampler setting 'canny_sigma' must be > 0, got {cs!r}")
    if (s["x0"] is None) != (s["mu_x"] is None):
        raise ConfigError("sampler settings 'x0' and 'mu_x' go together: give both precomputed structure "
                          "states or neither")
    return s


class _StrDiffusion:
    """State and network calls shared by the paper and official loops (texture y 3ch, structure x 1ch)."""

    def __init__(self, ctx: SampleContext, image: Tensor, known: Tensor, s: dict, x0: Tensor, mu_x: Tensor):
        sdes, counter = ctx.sdes, ctx.counter
        self.m, self.noise, self.cb, self.counter, self.s = ctx.models, ctx.noise, ctx.callback, counter, s
        self.begin = ctx.begin  # per outer step: per-image noise samplers re-seed there
        self.known, self.is_known = known, known > 0.5
        self.sy, self.sx = Stepper(sdes.texture), Stepper(sdes.structure)
        self.T = self.sy.T
        # texture and structure stepped on the same grid (docs/SCIENCE.md#solvers); euler: every level
        self.vy = make_solver(sdes.texture, s)
        self.vx = Solver(sdes.structure, self.vy.kind, order=self.vy.order, solver_type=s.get("solver_type") or "sde",
                         levels=self.vy.levels)
        self.levels, self.N = self.vy.levels, self.vy.n
        self.mu_y = masked_mean(image, known)
        self.x0, self.mu_x = x0, mu_x
        self.x0_known = x0 * known  # official mode's known structure (x_0 = gray * known)
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

    def nfe(self) -> int:
        return sum(self.counter.values())

    def structure_step(self, x: Tensor, k: int, prev: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        """Grid step k, x_t -> x_s (t = levels[k], s = levels[k+1]; euler: s = t-1) with the structure net
        (Alg. 1 line 2); paper mode with structure_repaint on: known region first replaced by a fresh
        forward sample of the true structure at level t. Returns (x_s, its data prediction or None)."""
        t = self.levels[k]
        if self.repaint_x:
            x = torch.where(self.is_known, self.sx.q(self.x0, self.mu_x, t, self.noise(x)), x)
        eps = self.m.structure(x, self.mu_x, self.ts[t])
        self.counter["structure"] += 1
        return self.vx.step(k, x, self.mu_x, eps, self.noise, prev)

    def known_structure(self, level: int) -> Tensor:
        """Official mode: one forward sample of the known structure at `level`, q(x_level | x_0 known)
        with mu = mu_x (the authors' ``generate_states(x0=S_GT*mask, mu=S_LQs*mask, t-1)``)."""
        return self.sx.q(self.x0_known, self.mu_x, level, self.noise(self.x0_known))

    def paste(self, k: Tensor, x: Tensor) -> Tensor:
        """k in the known region, x in the holes."""
        return torch.where(self.is_known, k, x)

    def structure_step_pasted(self, x: Tensor, k: int, kd: Optional[Tensor],
                              prev: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        """Official mode: grid step k of the structure net after pasting the given draw kd (None: no
        paste, structure_repaint off)."""
        if kd is not None:
            x = self.paste(kd, x)
        eps = self.m.structure(x, self.mu_x, self.ts[self.levels[k]])
        self.counter["structure"] += 1
        return self.vx.step(k, x, self.mu_x, eps, self.noise, prev)

    def texture_step(self, y: Tensor, k: int, cond: Tensor, prev: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        """Grid step k, y_t -> y_s with the texture net conditioned on the structure x_s (Alg. 1 line 3)."""
        eps = self.m.texture(y, self.mu_y, self.ts[self.levels[k]], cond=cond)
        self.counter["texture"] += 1
        return self.vy.step(k, y, self.mu_y, eps, self.noise, prev)

    def score(self, y: Tensor, x: Tensor, k: int) -> Tensor:
        """D(y_s, x_s, s) (paper, s = levels[k+1] = t-1 for euler) or D(..., t) (authors' code): (B,)
        correlation scores."""
        if self.s["disc_mask_texture"]:
            y = y * self.known
        out = self.m.discriminator(y, x, self.ts[self.levels[k + self.d_shift]]).reshape(-1)
        self.counter["discriminator"] += 1
        return out

    def better(self, S: Tensor, delta: Tensor) -> Tensor:
        """Alg. 1 line 10: S < Delta ("lower", as written) or S > Delta ("higher")."""
        return S < delta if self.lower else S > delta

    def emit(self, t, y, x, phase, score=None, threshold=None, accepted=None) -> None:
        if self.cb is not None:
            self.cb({"t": t, "y": y, "x": x, "score": score, "threshold": threshold, "accepted": accepted,
                     "phase": phase, "nfe": self.nfe()})


def _where(mask: Tensor, a: Optional[Tensor], b: Optional[Tensor]) -> Optional[Tensor]:
    if a is None or b is None:  # data predictions (mr order 2 history): None for euler
        return None
    return torch.where(mask.view(-1, 1, 1, 1), a, b)


def _mean(a: Optional[Tensor], b: Optional[Tensor]) -> Optional[Tensor]:
    return None if a is None or b is None else (a + b) / 2


def _paper_loop(r: _StrDiffusion, y: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Algorithm 1 (supplementary) as written, per image of the batch."""
    U = r.s["u_max"]
    hx = hy = None  # the previous step's data predictions (mr order 2)
    for k in range(r.N):  # 1 for t = T..1 (grid step k: t = levels[k] -> s = levels[k+1])
        t, s = r.levels[k], r.levels[k + 1]
        r.begin(t)
        x_prev, dx = r.structure_step(x, k, hx)  # 2
        y_prev, dy = r.texture_step(y, k, x_prev, hy)  # 3
        if r.resample:
            delta = r.score(y_prev, x_prev, k) if r.use_d else None  # 4 threshold Delta
            active = torch.ones(y.shape[0], dtype=torch.bool, device=y.device)
            for _u in range(U):  # 5 for u = 1..U
                x_tilde_t = r.vx.forward(x_prev, r.mu_x, k, r.noise(x_prev))  # 6 (Eq. 17, s -> t)
                x_c, dx_c = r.structure_step(x_tilde_t, k, hx)  # 7
                y_c, dy_c = r.texture_step(y, k, x_c, hy)  # 8 (from y_t, guided by the new structure)
                S = r.score(y_c, x_c, k) if r.use_d else None  # 9
                acc = active & r.better(S, delta) if r.use_d else active  # 10 (B: always accept)
                x_prev, y_prev = _where(acc, x_c, x_prev), _where(acc, y_c, y_prev)  # 11, 12
                dx, dy = _where(acc, dx_c, dx), _where(acc, dy_c, dy)
                r.tries += active
                r.n_accepted += acc
                active = acc  # 14 break (per image)
                r.emit(s, y_c, x_c, "resample", S, delta, acc)
                if r.use_d and not bool(active.any()):
                    break
        x, y, hx, hy = x_prev, y_prev, dx, dy
        r.emit(s, y, x, "step")
    return y, x


def _official_loop(r: _StrDiffusion, y: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """The authors' test loop (their ``reverse_sde``; docs/SCIENCE.md#sampler-official), per image of the batch.

    Early stage t in [int(stage_end T), T]: one forward sample k of the known structure at level t-1
    (x_0 = x0 known, mu = mu_x) is drawn per outer step and pasted into the known region before the
    structure step at t and before every re-denoising step; texture step from y_t; the threshold
    Delta = D(y_{t-1} known, x_{t-1}, t) is scored at every early level (never refreshed). When
    t % jump == 0, up to u_max - 1 candidates: the current structure re-noised n = min(re, T-t+1) levels
    with Euler-Maruyama (Eq. 17 as printed), denoised back to t-1, then one texture step FROM THE
    ORIGINAL y_t conditioned on it. Accepted when D prefers it; below u_min a rejected candidate is
    averaged with the current pair, from u_min on a rejection stops. The structure ends the step with
    k pasted. Late stage (t < int(stage_end T)): structure = channel mean of y_t (late_structure
    "texture_mean") or the structure net (``"net"``, k pasted likewise)."""
    s = r.s
    N = r.N  # solver steps (euler: N = T and step position p = t)
    t_early = int(s["stage_end"] * N)  # the code's range(int(0.4*T), T+1), in solver steps
    hx = hy = None  # the previous step's data predictions (mr order 2)
    for k in range(N):
        t, lo, p = r.levels[k], r.levels[k + 1], N - k
        r.begin(t)
        early = p >= t_early
        use_net = early or s["late_structure"] == "net"
        kd = r.known_structure(lo) if use_net and r.repaint_x else None  # one draw per outer step
        if use_net:
            x_prev, dx = r.structure_step_pasted(x, k, kd, hx)
        else:
            x_prev, dx = y.mean(dim=1, keepdim=True), None  # late stage: structure = gray of the texture y_t
        y_prev, dy = r.texture_step(y, k, x_prev, hy)
        if r.resample and early:
            delta = r.score(y_prev, x_prev, k) if r.use_d else None  # every early level, never refreshed
            if p % s["jump"] == 0:
                n_re = min(s["re"], k + 1)  # re-noise at most up to level T (re counts solver steps)
                active = torch.ones(y.shape[0], dtype=torch.bool, device=y.device)
                for i in range(1, s["u_max"]):  # the code's `for i in range(1, u_max)`
                    x_c = x_prev
                    for kk in range(k, k - n_re, -1):  # structure s -> n_re steps up (Eq. 17)
                        if r.vx.kind == "euler":  # Euler-Maruyama as printed, one level
                            x_c = r.sx.euler_forward(x_c, r.mu_x, r.levels[kk], r.noise(x_c))
                        else:  # exact transition over a coarse step (Euler-Maruyama could overshoot)
                            x_c = r.vx.forward(x_c, r.mu_x, kk, r.noise(x_c))
                    dx_c = None
                    for kk in range(k - n_re + 1, k + 1):  # and denoised back to s, kd re-pasted
                        x_c, dx_c = r.structure_step_pasted(x_c, kk, kd, dx_c)
                    y_c, dy_c = r.texture_step(y, k, x_c, hy)  # from the original y_t
                    S = r.score(y_c, x_c, k) if r.use_d else None
                    good = r.better(S, delta) if r.use_d else torch.ones_like(active)
                    acc = active & good
                    r.tries += active
                    r.n_accepted += acc
                    if i >= s["u_min"]:
                        x_prev, y_prev = _where(acc, x_c, x_prev), _where(acc, y_c, y_prev)
                        dx, dy = _where(acc, dx_c, dx), _where(acc, dy_c, dy)
                        active = acc
                    else:  # before u_min: take a better candidate, average a rejected one with the pair
                        x_prev = _where(good, x_c, (x_prev + x_c) / 2)
                        y_prev = _where(good, y_c, (y_prev + y_c) / 2)
                        dx, dy = _where(good, dx_c, _mean(dx, dx_c)), _where(good, dy_c, _mean(dy, dy_c))
                    r.emit(lo, y_c, x_c, "resample", S, delta, acc)
                    if r.use_d and not bool(active.any()):
                        break
        if kd is not None:
            x_prev = r.paste(kd, x_prev)
        x, y, hx, hy = x_prev, y_prev, dx, dy
        r.emit(lo, y, x, "step")
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


def run(ctx: SampleContext, image: Tensor, known: Tensor, s: dict):
    if s["ablation"] == "A":  # Table 2 case A: IR-SDE + RePaint's resampling
        ctx.need("irsde", why="StrDiffusion ablation 'A' (IR-SDE + RePaint resampling)")
        y0 = repaint_loop(ctx, ctx.models.irsde, image, known, jump_length=s["jump_length"],
                          jump_n_sample=s["jump_n_sample"], solver=make_solver(ctx.sdes.texture, s))
        return y0, {}
    ctx.need("texture", "structure", why=f"StrDiffusion ablation {s['ablation']!r}")
    if s["ablation"] == "D":
        ctx.need("discriminator", why="StrDiffusion ablation 'D' (adaptive resampling)")
    sdes = ctx.sdes
    if sdes.texture.T != sdes.structure.T:
        raise ConfigError(f"texture and structure SDEs need the same T, got {sdes.texture.T} and "
                          f"{sdes.structure.T}")
    x0, mu_x = _structure_inputs(image, known, s)
    r = _StrDiffusion(ctx, image, known, s, x0, mu_x)
    y = r.mu_y + r.sy.lam * r.noise(r.mu_y)  # y_T
    x = mu_x + r.sx.lam * r.noise(mu_x)  # x_T
    loop = _paper_loop if s["mode"] == "paper" else _official_loop
    y0, x_last = loop(r, y, x)
    return y0, {"structure": x_last, "tries": r.tries, "accepted": r.n_accepted}


def _tags(s: StrDiffusionSettings) -> dict:
    return {"ablation": s.ablation, "mode": s.mode}


METHOD = Method(
    name="strdiffusion", settings=StrDiffusionSettings, run=run, roles=roles,
    summary="StrDiffusion (CVPR 2024): structure-guided texture diffusion with adaptive resampling (Alg. 1)",
    default_case="StrDiffusion", tags=_tags, check=check_inputs, train_settings=("disc_time",),
    inputs={"variant": DEFAULT_VARIANT, "canny_sigma": DEFAULT_CANNY_SIGMA, "x0": None, "mu_x": None},
)
