"""RePaint's resampling (Lugmayr et al. 2022) on the mean-reverting SDE: the jump schedule and the loop.

Shared by RePaint* (``baselines/repaint.py``: the schedule driving the trained IR-SDE model) and by
StrDiffusion's ablation A of Table 2 (IR-SDE + RePaint resampling), so it lives in strbench:
- the jump schedule (:func:`jump_schedule`): RePaint's ``get_schedule_jump`` (equivalently
  diffusers' ``RePaintScheduler.set_timesteps``) with ``n_sample = 1``, written in levels T..0;
- a move t -> t-1 is one reverse step with the net after the known region of y_t has been replaced by a
  forward sample of the ground truth at level t (q_sample(gt, mu, t)); a move t-1 -> t ("undo") is one
  exact forward transition (Eq. 17).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from strbench.sde import masked_mean
from strbench.solvers import Solver
from strbench.steps import Stepper, time_table


def _jump_points(T: int, jump_length: int) -> list[int]:
    """RePaint's jump positions, in its 0-based step index: range(0, T - jump_length, jump_length)."""
    return list(range(0, T - jump_length, jump_length))


def jump_schedule(T: int, jump_length: int = 10, jump_n_sample: int = 10) -> list[int]:
    """RePaint's resampling schedule as the list of levels visited, from T down to 0.

    RePaint (get_schedule_jump, n_sample = 1) walks its step index i from T-1 down to -1; at every
    index j in range(0, T - jump_length, jump_length) it jumps back up jump_length steps, jump_n_sample - 1
    times in all. Level = index + 1, so the list starts at T and ends at 0. A move to a lower level is
    a reverse (denoising) step, a move to a higher level an undo (forward) step.
    """
    for name, v in (("T", T), ("jump_length", jump_length), ("jump_n_sample", jump_n_sample)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"jump_schedule: {name} must be an int >= 1, got {v!r}")
    jumps = {j: jump_n_sample - 1 for j in _jump_points(T, jump_length)}
    i = T
    index = []  # RePaint's step indices: T-1 ... 0, then -1 (the clean image)
    while i >= 1:
        i -= 1
        index.append(i)
        if jumps.get(i, 0) > 0:
            jumps[i] -= 1
            for _ in range(jump_length):
                i += 1
                index.append(i)
    index.append(-1)
    out = [i + 1 for i in index]
    check_schedule(out, T)
    return out


def check_schedule(levels: list[int], T: int) -> None:
    """Checks of a jump schedule: starts at T, ends at 0, every move +-1, stays in [0, T]."""
    if not levels or levels[0] != T or levels[-1] != 0:
        raise ValueError(f"jump schedule must start at T={T} and end at 0; got {levels[:1]}..{levels[-1:]}")
    for a, b in zip(levels[:-1], levels[1:]):
        if abs(a - b) != 1:
            raise ValueError(f"jump schedule moves {a} -> {b}: every move must be +-1")
    if min(levels) < 0 or max(levels) > T:
        raise ValueError(f"jump schedule leaves [0, {T}]")


def schedule_counts(T: int, jump_length: int = 10, jump_n_sample: int = 10) -> dict:
    """Closed count of the schedule's moves: undo = jump_length * (jump_n_sample - 1) * #jump points,
    reverse = T + undo (each undo is denoised again); reverse steps are the network evaluations."""
    undo = jump_length * (jump_n_sample - 1) * len(_jump_points(T, jump_length))
    return {"reverse": T + undo, "undo": undo}


def repaint_loop(ctx, net: Callable, image: Tensor, known: Tensor, *, jump_length: int = 10,
                 jump_n_sample: int = 10, solver: Optional[Solver] = None) -> Tensor:
    """RePaint's resampling with `net` on ``ctx.sdes.texture``, following :func:`jump_schedule`; returns
    y_0 (not composited). ``ctx.counter["irsde"]`` counts the network calls.

    reverse move t -> t-1:  y_t[known] <- q_sample(gt, mu, t)[known];  y_{t-1} = reverse step (net)
    undo move t-1 -> t:     y_t = forward_step(y_{t-1})  (exact transition, Eq. 17)

    With a ``solver`` (strbench.solvers; None or euler: every level, as above) the schedule runs over its
    N grid steps instead of the T levels: position p is level levels[N - p], a reverse move is one solver
    step, an undo the exact transition up one grid step (docs/SCIENCE.md#solvers).
    """
    st = Stepper(ctx.sdes.texture)
    solver = solver if solver is not None else Solver(ctx.sdes.texture)
    N, lv = solver.n, solver.levels
    positions = jump_schedule(N, jump_length, jump_n_sample)
    mu = masked_mean(image, known)
    is_known = known > 0.5
    y = mu + st.lam * ctx.noise(mu)  # y_T
    ts = time_table(st.T, y.shape[0], y.device)
    counter = ctx.counter
    counter.setdefault("irsde", 0)
    hist: dict = {}  # step index -> data prediction (mr order 2)
    for move, (a, b) in enumerate(zip(positions[:-1], positions[1:])):
        ctx.begin(move)
        if b < a:  # reverse step a -> a-1 (grid step k = N - a: level lv[k] -> lv[k+1])
            k = N - a
            gt_a = st.q(image, mu, lv[k], ctx.noise(image))
            y = torch.where(is_known, gt_a, y)  # known region <- forward sample of the ground truth
            eps = net(y, mu, ts[lv[k]])
            counter["irsde"] += 1
            y, hist[k] = solver.step(k, y, mu, eps, ctx.noise, hist.get(k - 1))
            phase = "step"
        else:  # undo a -> a+1 (level lv[N - a] -> lv[N - b])
            y = solver.forward(y, mu, N - b, ctx.noise(y))
            phase = "undo"
        ctx.emit(t=lv[N - b], y=y, phase=phase)
    return y
