"""Closed forms of the mean-reverting SDE against simulation, Monte Carlo and the paper's identities."""
import json
import math

import pytest
import torch

from strbench import sde as S
from strbench.cli import main as cli_main


@pytest.fixture(scope="module")
def sde100():
    return S.make_sde(T=100)


def test_authors_defaults_check_values(sde100):
    assert sde100.dt == pytest.approx(0.10409, abs=1e-5)
    assert float(sde100.sigmabar[-1]) == pytest.approx(0.11765, abs=1e-5)
    assert S.make_sde(T=400).dt == pytest.approx(0.02622, abs=1e-5)
    # exp(-thetabar_T dt) = eps by construction of the time scale
    assert math.exp(-float(sde100.thetabar[-1]) * sde100.dt) == pytest.approx(0.005, rel=1e-12)
    assert float(sde100.thetabar[0]) == 0.0 and float(sde100.sigmabar[0]) == 0.0


@pytest.mark.parametrize("kind,params", [("cosine", {}), ("linear", {}), ("constant", {}),
                                         ("power", {"start": 0.05, "power": 2.0})])
def test_every_schedule_is_positive_and_reaches_eps(kind, params):
    s = S.make_sde(T=50, kind=kind, **params)
    assert s.theta.dtype == torch.float64 and s.theta.shape == (51,)
    assert torch.all(s.theta[1:] > 0)
    assert torch.all(torch.diff(s.sigmabar) >= 0)
    assert float(s.sigmabar[-1]) == pytest.approx(s.lam * math.sqrt(1 - 0.005**2), rel=1e-9)


def test_bad_schedule_names_raise():
    with pytest.raises(ValueError, match="unknown schedule kind 'nope'"):
        S.make_sde(kind="nope")
    with pytest.raises(ValueError, match="start"):
        S.make_sde(kind="power", start=0.0)
    with pytest.raises(ValueError, match="unknown texture target"):
        x = torch.zeros(1, 1, 2, 2)
        S.texture_target("eq99", S.make_sde(T=5), S.make_sde(T=5), y0=x, mu_y=x, x_t=x, x0=x, mu_x=x, t=2)


def test_forward_marginal_matches_fine_euler_maruyama(sde100):
    """Eq. 1 simulated with 10 sub-steps per level reproduces the closed-form mean and std."""
    g = torch.Generator().manual_seed(0)
    n, sub = 20000, 10
    y0, mu = 0.8, 0.2
    y = torch.full((n,), y0, dtype=torch.float64)
    h = sde100.dt / sub
    checks = {10: None, 40: None, 100: None}
    for t in range(1, sde100.T + 1):
        th, sg = float(sde100.theta[t]), float(sde100.sigma[t])
        for _ in range(sub):
            y = y + th * (mu - y) * h + sg * math.sqrt(h) * torch.randn(n, generator=g, dtype=torch.float64)
        if t in checks:
            checks[t] = (y.mean().item(), y.std().item())
    ref = torch.tensor([y0], dtype=torch.float64)
    m = torch.tensor([mu], dtype=torch.float64)
    for t, (mean, std) in checks.items():
        cm = S.forward_mean(sde100, ref, m, t).item()
        cs = S.forward_std(sde100, t, ref).item()
        assert mean == pytest.approx(cm, abs=4 * cs / math.sqrt(n) + 2e-3), t
        assert std == pytest.approx(cs, rel=0.03), t


def test_eq4_is_the_posterior_mean_monte_carlo(sde100):
    """Eq. 4 = E[y_{t-1} | y_t, y_0]: regress forward-sampled y_{t-1} on y_t (the posterior is Gaussian,
    so its mean is linear in y_t) and compare slope, intercept and predictions with the closed form."""
    g = torch.Generator().manual_seed(1)
    n = 400000
    y0 = torch.full((n,), 0.9, dtype=torch.float64)
    mu = torch.full((n,), 0.1, dtype=torch.float64)
    for t in (5, 30, 80):
        y_prev = S.q_sample(sde100, y0, mu, t - 1, torch.randn(n, generator=g, dtype=torch.float64))
        y_t = S.forward_step(sde100, y_prev, mu, t, torch.randn(n, generator=g, dtype=torch.float64))
        X = torch.stack([y_t, torch.ones_like(y_t)], 1)
        coef = torch.linalg.lstsq(X, y_prev.unsqueeze(1)).solution.squeeze(1)
        resid = (y_prev - (coef[0] * y_t + coef[1])).std()
        # probe inside the data: mean and +-1 std of y_t; standard error of a regression prediction there
        probe = y_t.mean() + y_t.std() * torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
        se = resid * torch.sqrt(1 / n + (probe - y_t.mean()) ** 2 / (n * y_t.var()))
        mc = coef[0] * probe + coef[1]
        exact = S.optimal_reverse_state(sde100, probe, y0[:3], mu[:3], t)
        assert torch.all((mc - exact).abs() < 6 * se), (t, mc, exact, se)


def test_forward_step_composes_to_the_marginal(sde100):
    """Exact transitions (RePaint undo) chained from level 0 reproduce q(y_t | y_0)."""
    g = torch.Generator().manual_seed(2)
    n = 100000
    y = torch.full((n,), 0.7, dtype=torch.float64)
    mu = torch.zeros(n, dtype=torch.float64)
    for t in range(1, 51):
        y = S.forward_step(sde100, y, mu, t, torch.randn(n, generator=g, dtype=torch.float64))
    ref = torch.tensor([0.7], dtype=torch.float64)
    assert y.mean().item() == pytest.approx(S.forward_mean(sde100, ref, ref * 0, 50).item(), abs=2e-3)
    assert y.std().item() == pytest.approx(S.forward_std(sde100, 50, ref).item(), rel=0.01)


def _states(seed=3, shape=(2, 3, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    y0 = torch.rand(shape, generator=g, dtype=torch.float64)
    known = (torch.rand(shape[0], 1, *shape[2:], generator=g) > 0.4).double()
    x0 = torch.rand(shape[0], 1, *shape[2:], generator=g, dtype=torch.float64)
    return y0, y0 * known, x0, x0 * known


@pytest.mark.parametrize("delta_kind", ["cosine", "linear"])
def test_eq22_to_eq23_identity(sde100, delta_kind):
    """Eq. 20 with Eq. 21 substituted (i.e. Eq. 22) equals Eq. 24 for every t, also when delta != theta."""
    sde_x = S.make_sde(T=100, kind=delta_kind)
    y0, mu_y, x0, mu_x = _states()
    g = torch.Generator().manual_seed(4)
    for t in (2, 10, 50, 99, 100):
        x_t = S.q_sample(sde_x, x0, mu_x, t, torch.randn(x0.shape, generator=g, dtype=torch.float64))
        x_prev = S.optimal_reverse_state(sde_x, x_t, x0, mu_x, t)  # Eq. 21
        lhs = S.texture_target_eq20(sde100, sde_x, y0=y0, mu_y=mu_y, x_prev=x_prev, x0=x0, mu_x=mu_x, t=t)
        rhs = S.texture_target_eq24(sde100, sde_x, y0=y0, mu_y=mu_y, x_t=x_t, x0=x0, mu_x=mu_x, t=t)
        assert torch.allclose(lhs, rhs, atol=1e-10), t
        assert lhs.shape == y0.shape  # the 1-channel structure broadcasts over RGB


def test_paper_target_tends_to_y0(sde100):
    y0, mu_y, x0, mu_x = _states()
    g = torch.Generator().manual_seed(5)
    errs = []
    for t in (40, 10, 3, 1):
        x_t = S.q_sample(sde100, x0, mu_x, t, torch.randn(x0.shape, generator=g, dtype=torch.float64))
        tgt = S.texture_target("paper_eq11", sde100, sde100, y0=y0, mu_y=mu_y, x_t=x_t, x0=x0, mu_x=mu_x, t=t)
        errs.append((tgt - y0).abs().max().item())
    assert errs[-1] < 1e-12
    assert errs == sorted(errs, reverse=True)


def test_official_target_is_eq4(sde100):
    y0, mu_y, x0, mu_x = _states()
    y_t = S.q_sample(sde100, y0, mu_y, 20, torch.randn_like(y0))
    a = S.texture_target("official_code", sde100, sde100, y0=y0, mu_y=mu_y, x_t=x0, x0=x0, mu_x=mu_x, t=20, y_t=y_t)
    assert torch.equal(a, S.optimal_reverse_state(sde100, y_t, y0, mu_y, 20))


def test_reverse_step_with_true_noise_is_consistent(sde100):
    """Noise <-> score round-trip, and batched time indices agree with scalar ones."""
    y0, mu, _, _ = _states()
    t = torch.tensor([7, 60])
    y_t = S.q_sample(sde100, y0, mu, t, torch.randn_like(y0))
    eps = S.true_noise(sde100, y_t, y0, mu, t)
    assert torch.allclose(S.noise_from_score(sde100, S.score_from_noise(sde100, eps, t), t), eps)
    batched = S.reverse_mean(sde100, y_t, mu, eps, t)
    for i, ti in enumerate(t.tolist()):
        single = S.reverse_mean(sde100, y_t[i:i + 1], mu[i:i + 1], eps[i:i + 1], ti)
        assert torch.allclose(batched[i:i + 1], single)


def test_float32_inputs_stay_float32(sde100):
    x = torch.rand(2, 3, 4, 4)
    out = S.q_sample(sde100, x, x * 0, torch.tensor([3, 4]), torch.randn_like(x))
    assert out.dtype == torch.float32


def test_schedule_command_json(capsys):
    assert cli_main(["schedule", "--T", "100", "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["dt"] == pytest.approx(0.10409, abs=1e-5)
    assert d["sigmabar"][-1] == pytest.approx(0.11765, abs=1e-5)
    assert len(d["theta"]) == len(d["thetabar"]) == len(d["sigma"]) == 101
    assert cli_main(["schedule", "--T", "400", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["dt"] == pytest.approx(0.02622, abs=1e-5)


def test_schedule_command_plot_and_errors(tmp_path, capsys):
    png = tmp_path / "s.png"
    assert cli_main(["schedule", "--T", "20", "--kind", "power", "--param", "power=3",
                     "--delta-kind", "linear", "--plot", str(png)]) == 0
    assert png.stat().st_size > 1000
    assert cli_main(["schedule", "--kind", "bogus"]) == 2
    assert "unknown schedule kind 'bogus'" in capsys.readouterr().err
