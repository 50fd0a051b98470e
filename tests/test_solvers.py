"""Fast solvers (strbench/solvers.py, docs/SCIENCE.md#solvers): the grid, oracle exactness of every solver at
any number of steps, the posterior sampler against its closed form draw for draw, the MR Sampler's order of
convergence on a Gaussian data distribution (closed-form probability-flow ODE), settings validation, NFE."""
import math

import pytest
import torch

from helpers import dummy_net, oracle
from strbench import sde as S
from strbench.errors import ConfigError
from strbench.sample import Models, resolve_settings, sample
from strbench.solvers import Solver, marginals, posterior_coefficients, step_grid
from strbench.steps import Stepper

T = 20
SDES = S.make_sde_pair({"T": T})


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _batch(B=2, size=16, seed=0):
    img = torch.rand(B, 3, size, size, generator=_gen(seed))
    known = torch.ones(B, 1, size, size)
    known[0, :, 4:12, 4:12] = 0
    known[1:, :, :, : size // 2] = 0
    return img, known


class Scripted:
    """A noise sampler replaying a fixed list of draws (and counting them)."""

    def __init__(self, draws):
        self.draws, self.i = draws, 0

    def __call__(self, like):
        z = self.draws[self.i]
        self.i += 1
        return z.to(like.dtype)


# ---------------------------------------------------------------------------------------------
# the grid
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["linspace", "linear_lambda"])
@pytest.mark.parametrize("steps", [1, 2, 5, 7, 19, 20])
def test_step_grid_strictly_decreasing_from_T_to_0(schedule, steps):
    lv = step_grid(SDES.texture, steps, schedule)
    assert lv[0] == T and lv[-1] == 0 and len(lv) == steps + 1
    assert all(a > b for a, b in zip(lv[:-1], lv[1:]))


def test_step_grid_every_level_and_spacings_differ():
    assert step_grid(SDES.texture, T) == list(range(T, -1, -1))
    assert step_grid(SDES.texture, T, "linear_lambda") == list(range(T, -1, -1))
    sde = S.make_sde(T=100)
    assert step_grid(sde, 5) == [100, 80, 60, 40, 20, 0]
    lam_grid = step_grid(sde, 5, "linear_lambda")
    _, _, lam = marginals(sde)
    gaps = [lam[b] - lam[a] for a, b in zip(lam_grid[:-2], lam_grid[1:-1])]  # finite part: ~equal lam gaps
    assert max(gaps) < 1.3 * min(gaps) and lam_grid != step_grid(sde, 5)
    with pytest.raises(ValueError, match="steps"):
        step_grid(sde, 101)


# ---------------------------------------------------------------------------------------------
# oracle: every solver returns the ground truth at any number of steps
# ---------------------------------------------------------------------------------------------

SOLVER_CASES = [
    {"solver": "posterior"},
    {"solver": "mr", "order": 1, "solver_type": "ode"},
    {"solver": "mr", "order": 2, "solver_type": "ode"},
    {"solver": "mr", "order": 1, "solver_type": "sde"},
    {"solver": "mr", "order": 2, "solver_type": "sde", "time_schedule": "linear_lambda"},
]


@pytest.mark.parametrize("settings", SOLVER_CASES)
@pytest.mark.parametrize("steps", [1, 3, 10, T])
def test_oracle_irsde_every_solver_exact(settings, steps):
    img, known = _batch()
    r = sample("irsde", Models(irsde=oracle(SDES.texture, img)), img, known, sdes=SDES, generator=_gen(1),
               steps=steps, **settings)
    hole = known.expand_as(img) == 0
    assert (r.output - img).abs()[hole].max() < 1e-4
    assert r.nfe == steps  # one network call per step


@pytest.mark.parametrize("settings", SOLVER_CASES[1:3] + SOLVER_CASES[:1])
@pytest.mark.parametrize("sampler", [{"ablation": "C"}, {"ablation": "D", "u_max": 2},
                                     {"ablation": "D", "mode": "official", "late_structure": "net", "u_max": 3,
                                      "u_min": 2, "jump": 2, "re": 2},
                                     {"ablation": "A", "jump_length": 2, "jump_n_sample": 2}])
def test_oracle_strdiffusion_and_repaint_every_solver_exact(settings, sampler):
    img, known = _batch()
    x0 = torch.rand(2, 1, 16, 16, generator=_gen(7))
    models = Models(texture=oracle(SDES.texture, img), structure=oracle(SDES.structure, x0),
                    irsde=oracle(SDES.texture, img),
                    discriminator=lambda y, x, t: ((y - img) ** 2).mean(dim=(1, 2, 3)))
    extra = {} if sampler["ablation"] == "A" else {"x0": x0, "mu_x": x0 * known}
    r = sample("strdiffusion", models, img, known, sdes=SDES, generator=_gen(3), steps=6, **settings,
               **sampler, **extra)
    assert (r.output - img).abs()[known.expand_as(img) == 0].max() < 1e-4
    if sampler["ablation"] != "A":
        assert (r.info["structure"] - x0).abs()[known == 0].max() < 1e-4


def test_zero_net_fails_the_oracle_tolerance():
    img, known = _batch()
    r = sample("irsde", Models(irsde=lambda x, mu, t, cond=None: torch.zeros_like(x)), img, known, sdes=SDES,
               generator=_gen(1), solver="mr", steps=5)
    assert (r.output - img).abs()[known.expand_as(img) == 0].max() > 0.1


# ---------------------------------------------------------------------------------------------
# posterior: IR-SDE's posterior sampler at steps = T, draw for draw; = MR's SDE solver of order 1
# ---------------------------------------------------------------------------------------------


def _draws(n, shape, seed=11):
    g = _gen(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(n)]


def test_posterior_at_T_is_the_closed_form_draw_for_draw():
    img, known = _batch()
    img = img.double()
    sde = SDES.texture
    draws = _draws(T + 1, img.shape)
    r = sample("irsde", Models(irsde=dummy_net), img, known.double(), sdes=SDES, noise_sampler=Scripted(draws),
               solver="posterior", callback=None)
    # closed form: y_T = mu + lambda z; y_{t-1} = Eq. 4 mean with y0_hat + IR-SDE's posterior std z (t >= 2)
    mu = S.masked_mean(img, known.double())
    y = mu + sde.lam * draws[0]
    for t in range(T, 0, -1):
        tt = torch.full((img.shape[0],), t, dtype=torch.long)
        eps = dummy_net(y, mu, tt)
        y0_hat = mu + (y - mu - S.forward_std(sde, t, y) * eps) / torch.exp(-S._at(sde.thetabar, t, y) * sde.dt)
        A2 = math.exp(-2 * float(sde.theta[t]) * sde.dt)
        B2 = math.exp(-2 * float(sde.thetabar[t]) * sde.dt)
        C2 = math.exp(-2 * float(sde.thetabar[t - 1]) * sde.dt)
        std = sde.lam * math.sqrt((1 - A2) * (1 - C2) / (1 - B2))
        y = S.optimal_reverse_state(sde, y, y0_hat, mu, t) + (std * draws[T - t + 1] if t > 1 else 0)
    expect = torch.where(known > 0.5, img, y.clamp(0, 1))
    torch.testing.assert_close(r.output, expect, rtol=0, atol=1e-10)


def test_mr_sde_order1_equals_posterior():
    """(S4) at order 1 has (S2)'s mean and variance: the same draws give the same samples."""
    img, known = _batch()
    outs = []
    for settings in ({"solver": "posterior"}, {"solver": "mr", "order": 1, "solver_type": "sde"}):
        r = sample("irsde", Models(irsde=dummy_net), img.double(), known.double(), sdes=SDES,
                   noise_sampler=Scripted(_draws(8, img.shape)), steps=7, **settings)
        outs.append(r.output)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-9)
    assert not torch.equal(outs[0], sample("irsde", Models(irsde=dummy_net), img.double(), known.double(),
                                           sdes=SDES, noise_sampler=Scripted(_draws(8, img.shape)), steps=7,
                                           solver="mr", order=2, solver_type="sde").output)


def test_posterior_coefficients_are_eq4_at_one_level():
    sde = SDES.texture
    alpha, _, _ = marginals(sde)
    y, x0, mu = (torch.randn(1, 3, 2, 2, generator=_gen(i), dtype=torch.float64) for i in range(3))
    for t in (1, 5, T):
        cy, c0, _ = posterior_coefficients(alpha[t], alpha[t - 1], sde.lam)
        torch.testing.assert_close(mu + cy * (y - mu) + c0 * (x0 - mu), S.optimal_reverse_state(sde, y, x0, mu, t))


# ---------------------------------------------------------------------------------------------
# MR Sampler: order of convergence on a Gaussian data distribution
# ---------------------------------------------------------------------------------------------


def _gaussian_ode_errors(order, steps_list, T_=1000, end=100, m=0.3, sd=0.2):
    """y_0 ~ N(m, sd^2) per pixel, mu = 0: the PF-ODE keeps (z_t - alpha_t m) / sqrt(alpha_t^2 sd^2 + sigma_t^2)
    fixed, so z_end is known in closed form; max error of the MR ODE solver from T to level `end`."""
    sde = S.make_sde(T=T_)
    alpha, sigma, _ = marginals(sde)

    def net(y, mu, t):  # exact noise prediction E[eps | y_t] of the Gaussian
        a, s = alpha[int(t[0])], sigma[int(t[0])]
        d0 = m + a * sd**2 / (a * a * sd**2 + s * s) * (y - a * m)
        return (y - a * d0) / s

    zT = torch.linspace(-2, 2, 41, dtype=torch.float64).view(1, 1, 1, -1) * sigma[T_]
    ref = alpha[end] * m + math.sqrt(alpha[end]**2 * sd**2 + sigma[end]**2) * (zT - alpha[T_] * m) / math.sqrt(
        alpha[T_]**2 * sd**2 + sigma[T_]**2)
    mu = torch.zeros_like(zT)
    errs = []
    for n in steps_list:
        sol = Solver(sde, "mr", order=order, solver_type="ode", levels=step_grid(sde, n, "linear_lambda", end=end))
        y, prev = zT.clone(), None
        for k in range(sol.n):
            t = sol.levels[k]
            y, prev = sol.step(k, y, mu, net(y, mu, torch.tensor([t])), lambda like: 1 / 0, prev)
        errs.append(float((y - ref).abs().max()))
    return errs


# measured (T = 1000 cosine, linear_lambda grid to level 100): order 1 ratios 1.95, 1.97; order 2 3.94, 4.05
@pytest.mark.parametrize("order,lo,hi", [(1, 1.7, 2.3), (2, 3.4, 4.6)])
def test_mr_ode_converges_at_its_order(order, lo, hi):
    errs = _gaussian_ode_errors(order, [16, 32, 64])
    ratios = [a / b for a, b in zip(errs[:-1], errs[1:])]
    assert all(lo < r < hi for r in ratios), (errs, ratios)


# ---------------------------------------------------------------------------------------------
# euler unchanged; settings
# ---------------------------------------------------------------------------------------------


def test_euler_solver_is_stepper_reverse():
    sde = SDES.texture
    sol, st = Solver(sde), Stepper(sde)
    y, mu, eps, z = (torch.randn(2, 3, 4, 4, generator=_gen(i)) for i in range(4))
    for k in (0, 7, T - 1):
        out, d0 = sol.step(k, y, mu, eps, lambda like: z)
        assert d0 is None and torch.equal(out, st.reverse(y, mu, eps, T - k, z))


def test_default_settings_dump_unchanged():
    """Cell hashes come from the settings dump: a case that leaves solver at euler dumps no solver key."""
    for method, values in (("irsde", {}), ("repaint", {}), ("strdiffusion", {"ablation": "C"})):
        from strbench import methods
        m = methods.get(method)
        dump = m.make(**values).model_dump()
        assert not {"solver", "steps", "order", "solver_type", "time_schedule"} & set(dump)
        assert "solver" in m.make(**values, solver="mr").model_dump()
        assert m.make(**values).effective()["solver"] == "euler"


@pytest.mark.parametrize("method,bad,match", [
    ("irsde", {"order": 2}, "does not apply to solver 'euler'"),
    ("irsde", {"steps": 10}, "does not apply to solver 'euler'"),
    ("strdiffusion", {"solver_type": "sde"}, "does not apply to solver 'euler'"),
    ("repaint", {"solver": "posterior", "order": 1}, "only applies to solver 'mr'"),
    ("irsde", {"solver": "mr", "ode": True}, "solver_type: ode"),
    ("irsde", {"solver": "rk4"}, "solver"),
    ("irsde", {"solver": "mr", "order": 3}, "order"),
])
def test_solver_settings_refused(method, bad, match):
    with pytest.raises(ConfigError, match=match):
        resolve_settings(method, bad)


def test_steps_above_T_refused():
    img, known = _batch()
    with pytest.raises(ConfigError, match="steps"):
        sample("irsde", Models(irsde=dummy_net), img, known, sdes=SDES, generator=_gen(0), solver="mr", steps=T + 1)


def test_mr_defaults_and_nfe_strdiffusion():
    s = resolve_settings("irsde", {"solver": "mr"})
    assert (s["order"], s["solver_type"], s["time_schedule"]) == (2, "ode", "linspace")
    img, known = _batch()
    x0 = img.mean(1, keepdim=True)
    models = Models(texture=dummy_net, structure=dummy_net)
    r = sample("strdiffusion", models, img, known, sdes=SDES, generator=_gen(0), ablation="C", solver="mr",
               steps=5, x0=x0, mu_x=x0 * known)
    assert r.info["nfe_by_net"] == {"structure": 5, "texture": 5, "discriminator": 0}


# ---------------------------------------------------------------------------------------------
# the frontier: one line per (method, solver), points labelled by their steps
# ---------------------------------------------------------------------------------------------


def test_frontier_one_line_per_method_and_solver():
    import pandas as pd

    import report_fixtures as F
    from strbench import report as R

    recs = []
    cases = [("IR-SDE euler", None, 100, 25.0)]
    cases += [(f"IR-SDE posterior {n}", {"solver": "posterior", "steps": n}, n, 24.0 + n / 100) for n in (5, 20)]
    cases += [(f"IR-SDE mr2 ode {n}", {"solver": "mr", "order": 2, "solver_type": "ode", "steps": n}, n, 24.5)
              for n in (5, 20, 50)]
    for case, settings, nfe, psnr in cases:
        for j, b in enumerate(F.BINS):
            r = F.cell(f"{case}{j}", case, b, "P", F.DAY1, psnr=psnr - j, nfe=nfe, cell_hash=f"{case}{j}",
                       settings=settings, fid=None)
            r["tags.strbench.method"] = "irsde"
            recs.append(r)
    points, _ = R.frontier_frame(pd.DataFrame(recs))
    fam = dict(zip(points["label"], points["family"]))
    assert fam["IR-SDE euler"] == "IR-SDE" and fam["IR-SDE posterior 5"] == "IR-SDE · posterior"
    assert fam["IR-SDE mr2 ode 50"] == "IR-SDE · mr o2 ode"
    ax = R.figure_frontier(points).get_axes()[0]
    assert len(ax.get_lines()) == 3
    assert sorted(t.get_text() for t in ax.texts) == ["20", "20", "5", "5", "50", "euler"]


# ---------------------------------------------------------------------------------------------
# strbench tune searches the solver keys like any key
# ---------------------------------------------------------------------------------------------


def test_tune_space_over_solver_order_steps(monkeypatch):
    from pathlib import Path

    import optuna

    from strbench import tune

    root = Path(__file__).parents[1]
    monkeypatch.chdir(root)
    key = "methods.StrDiffusion."
    spec = tune.parse_spec({
        "base": "experiments/quickstart.yaml", "profile": "cpu", "study": {"name": "solvers"},
        "space": {key + "solver": {"type": "categorical", "choices": ["euler", "posterior", "mr"]},
                  key + "steps": {"type": "int", "low": 4, "high": 20, "when": {key + "solver": ["posterior", "mr"]}},
                  key + "order": {"type": "categorical", "choices": [1, 2], "when": {key + "solver": "mr"}},
                  key + "solver_type": {"type": "categorical", "choices": ["ode", "sde"],
                                        "when": {key + "solver": "mr"}}}})
    ev = tune.runner_evaluator(spec)
    for overlay in tune.probe_overlays(spec):  # every key applies to the base experiment
        ev.check(overlay)
    mr = tune.sample_overlay(optuna.trial.FixedTrial({key + "solver": "mr", key + "steps": 8, key + "order": 2,
                                                      key + "solver_type": "sde"}), spec)
    assert mr == {key + "solver": "mr", key + "steps": 8, key + "order": 2, key + "solver_type": "sde"}
    eu = tune.sample_overlay(optuna.trial.FixedTrial({key + "solver": "euler"}), spec)
    assert eu == {key + "solver": "euler"}  # steps/order not sampled: they do not apply to euler
    ev.check(mr)
    with pytest.raises(ConfigError, match="does not apply to solver 'euler'"):
        ev.check({key + "solver": "euler", key + "order": 2})


def test_bench_sample_covers_the_solvers():
    from strbench import bench

    names = ["IR-SDE mr2 ode 2", "StrDiffusion C posterior 2"]
    rows = {r["sampler"]: r for r in bench.bench_sample(device="cpu", size=16, batch=2, repeats=1, T=8, only=names)}
    assert sorted(rows) == sorted(names) and rows["IR-SDE mr2 ode 2"]["nfe"] == 2
    assert rows["StrDiffusion C posterior 2"]["nfe_by_net"] == {"structure": 2, "texture": 2}
    assert all(r["ratio"] > 0 and math.isfinite(r["ratio"]) for r in rows.values())


# ---------------------------------------------------------------------------------------------
# StrDiffusion on a coarse grid: D at the visited levels, stage boundary / jump / re in solver steps
# ---------------------------------------------------------------------------------------------


class RecordingD:
    def __init__(self):
        self.times = []

    def __call__(self, y, x, t):
        self.times.append(int(t[0]))
        return (y - 0.5).abs().mean(dim=(1, 2, 3))


@pytest.mark.parametrize("mode,disc_time,levels", [("paper", "t-1", {16, 12, 8, 4, 0}),
                                                   ("official", "t", {20, 16, 12, 8})])
def test_strdiffusion_discriminator_at_visited_levels(mode, disc_time, levels):
    img, known = _batch()
    x0 = img.mean(1, keepdim=True)
    D = RecordingD()
    extra = {"u_max": 2} if mode == "paper" else {"u_max": 3, "u_min": 2, "jump": 2, "re": 2}
    sample("strdiffusion", Models(texture=dummy_net, structure=dummy_net, discriminator=D), img, known, sdes=SDES,
           generator=_gen(0), ablation="D", mode=mode, disc_time=disc_time, solver="posterior", steps=5,
           x0=x0, mu_x=x0 * known, **extra)
    assert D.times and set(D.times) <= levels  # grid [20, 16, 12, 8, 4, 0]
    if mode == "official":  # early stage: solver steps p = 5..2 (p >= int(0.4 * 5)); level 4 is late
        assert set(D.times) == levels


def test_official_jump_and_re_count_solver_steps():
    """5 steps on T = 20: early steps p = 5, 4, 3, 2; jump 2 resamples at p = 4, 2 (levels 16, 8), u_max 3 gives
    2 candidates each, re 2 re-noises each 2 grid steps (2 structure calls); late step p = 1 uses the texture mean."""
    img, known = _batch()
    x0 = img.mean(1, keepdim=True)
    r = sample("strdiffusion", Models(texture=dummy_net, structure=dummy_net), img, known, sdes=SDES,
               generator=_gen(0), ablation="B", mode="official", u_max=3, u_min=2, jump=2, re=2, solver="mr",
               steps=5, x0=x0, mu_x=x0 * known)
    assert r.info["tries"].tolist() == [4, 4]
    assert r.info["nfe_by_net"] == {"structure": 4 + 2 * 2 * 2, "texture": 5 + 4, "discriminator": 0}


# ---------------------------------------------------------------------------------------------
# stored sums: a refactor of the solvers must not change their numbers (like tests/test_sampler_loops.py)
# ---------------------------------------------------------------------------------------------

# (method, settings) -> (sum of the composited output in float64, NFE per image); computed on CPU, torch 2.14.1
STORED = [
    ("irsde", {"solver": "posterior", "steps": 5}, 671.7071337308735, 5),
    ("irsde", {"solver": "mr", "steps": 5}, 687.2547578618396, 5),
    ("irsde", {"solver": "mr", "order": 2, "solver_type": "sde", "steps": 7, "time_schedule": "linear_lambda"},
     683.0861161015928, 7),
    ("repaint", {"solver": "mr", "steps": 6, "jump_length": 2, "jump_n_sample": 2}, 693.8847517459653, 10),
    ("strdiffusion", {"ablation": "D", "u_max": 2, "solver": "mr", "steps": 5}, 719.8695933925337, 45),
    ("strdiffusion", {"ablation": "D", "mode": "official", "u_max": 3, "u_min": 2, "jump": 2, "re": 2,
                      "solver": "posterior", "steps": 5}, 702.6391065865755, 29),
]


@pytest.mark.parametrize("method,settings,total,nfe", STORED)
def test_solver_loops_match_stored_sums(method, settings, total, nfe):
    img, known = _batch()
    x0 = img.mean(1, keepdim=True)
    models = Models(irsde=dummy_net, texture=dummy_net, structure=dummy_net,
                    discriminator=lambda y, x, t: (y - 0.5).abs().mean(dim=(1, 2, 3)))
    extra = {"x0": x0, "mu_x": x0 * known} if method == "strdiffusion" else {}
    r = sample(method, models, img, known, sdes=SDES, generator=_gen(0), **settings, **extra)
    assert float(r.output.double().sum()) == pytest.approx(total, rel=1e-6, abs=0) and r.nfe == nfe
