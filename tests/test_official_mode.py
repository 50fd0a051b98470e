"""StrDiffusion ``mode: official`` against the authors' test loop (docs/SCIENCE.md#sampler-official; issue 11 item 3).

``authors_loop`` below is an independent, single-image re-implementation of that loop written from the
description in docs/SCIENCE.md#sampler-official with plain loops and the raw SDE arrays (no Stepper): early stage t in [int(0.4 T), T],
one known-structure draw at level t-1 per outer step pasted before every structure step, threshold
D(y_{t-1} known, x_{t-1}, t) at every early level, candidates from the original y_t after an
Euler-Maruyama re-noising with the lower level's theta/sigma (Eq. 17 as printed), averaging below u_min,
break from u_min on; late stage: structure = channel mean of the texture. Everything runs in float64.
"""
import math

import pytest
import torch

from strbench import sde as S
from strbench.sample import Models, sample
from strbench.steps import Stepper

SIZE = 8
DT = torch.float64


def _batch(B=2):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(B, 3, SIZE, SIZE, generator=g, dtype=DT)
    known = torch.ones(B, 1, SIZE, SIZE, dtype=DT)
    known[0, :, 2:6, 2:6] = 0  # centre hole
    if B > 1:
        known[1, :, :, :4] = 0  # left half
    x0 = img.mean(1, keepdim=True)  # any structure map
    mu_x = (x0 > 0.5).to(DT) * known  # an "edge"-like map, masked (mu_x = edge * known)
    return img, known, x0, mu_x


# --- deterministic stand-in networks, elementwise per image (no mixing across the batch) ---------


def make_nets(sdes, img, x0):
    """Deterministic nets: the exact noise implied by the true image / structure map (strbench.sde.true_noise)
    plus a smooth bias; the texture one is pulled by the structure, so candidates differ."""
    def texture(y, mu, t, cond=None):
        return S.true_noise(sdes.texture, y, img, mu, t) + 0.3 * torch.tanh(cond - 0.5)

    def structure(x, mu, t, cond=None):
        return S.true_noise(sdes.structure, x, x0, mu, t) + 0.2 * torch.tanh(3 * (x - mu))

    return texture, structure


def critic(y, x, t):
    """A content-based D (per image) whose score swings fast with the states' means: on this case it
    accepts, averages and rejects candidates, differently for the two images."""
    return torch.sin(200 * y.mean(dim=(1, 2, 3)) + 150 * x.mean(dim=(1, 2, 3)))


class Recorder:
    """Wraps the nets and D, logging (kind, t, input) in call order; the callback logs outer steps."""

    def __init__(self, nets, D=critic):
        self.log, self.D = [], D
        self.tex, self.struct = nets

    def texture(self, y, mu, t, cond=None):
        self.log.append(("texture", int(t[0]), y.clone()))
        return self.tex(y, mu, t, cond)

    def structure(self, x, mu, t, cond=None):
        self.log.append(("structure", int(t[0]), x.clone()))
        return self.struct(x, mu, t, cond)

    def discriminator(self, y, x, t):
        self.log.append(("D", int(t[0]), y.clone()))
        return self.D(y, x, t)

    def callback(self, ev):
        if ev["phase"] == "step":
            self.log.append(("step", ev["t"], ev["y"], ev["x"]))

    def models(self):
        return Models(texture=self.texture, structure=self.structure, discriminator=self.discriminator)


class ScriptedNoise:
    """The k-th Gaussian draw is a fixed seeded tensor; records the shape of every draw in order."""

    def __init__(self, seed=1, zero=False):
        self.g, self.zero, self.shapes, self.draws = torch.Generator().manual_seed(seed), zero, [], []

    def __call__(self, like):
        self.shapes.append(tuple(like.shape))
        z = torch.zeros_like(like) if self.zero else torch.randn(like.shape, generator=self.g, dtype=like.dtype)
        self.draws.append(z)
        return z


# --- the authors' loop, one image, plain loops --------------------------------------------------


def authors_loop(sdes, img, known, x0, mu_x, noise, nets, D=critic, u_max=6, u_min=3, jump=5, re=5, stage=0.4):
    """Returns (y_0, final structure, decisions, D times). img (1,3,H,W), known/x0/mu_x (1,1,H,W)."""
    sy, sx = sdes.texture, sdes.structure
    texture_net, structure_net = nets
    T = sy.T

    def arrays(sde):
        return (sde.theta.tolist(), sde.sigma.tolist(), sde.sigmabar.tolist(), sde.thetabar.tolist(), sde.dt)

    Y, X = arrays(sy), arrays(sx)

    def reverse(a, v, mu, eps, t, z):  # Euler-Maruyama reverse step, score = -eps / sigmabar_t
        th, sg, sb, _, dt = a
        score = -eps / sb[t]
        return v - (th[t] * (mu - v) - sg[t] ** 2 * score) * dt - sg[t] * math.sqrt(dt) * z

    def em_forward(v, mu, lo, z):  # Eq. 17 as printed: theta/sigma of the lower level lo = t-1
        th, sg, _, _, dt = X
        return v + th[lo] * (mu - v) * dt + sg[lo] * math.sqrt(dt) * z

    def q(v0, mu, t, n):  # forward marginal at level t
        _, _, sb, tb, dt = X
        return mu + (v0 - mu) * math.exp(-tb[t] * dt) + sb[t] * n

    def paste(k, v):
        return k * known + v * (1 - known)

    tt = lambda t: torch.tensor([t])  # noqa: E731
    mu_y = img * known
    y = mu_y + sy.lam * noise(mu_y)
    x = mu_x + sx.lam * noise(mu_x)
    decisions, d_times = [], []
    start = int(stage * T)
    for t in range(T, start - 1, -1):  # early stage: t = T .. int(0.4 T)
        k = q(x0 * known, mu_x, t - 1, noise(x0))  # ONE draw at level t-1 for this outer step
        x = paste(k, x)
        x = reverse(X, x, mu_x, structure_net(x, mu_x, tt(t)), t, noise(x))
        xs_t = x
        y_upd = reverse(Y, y, mu_y, texture_net(y, mu_y, tt(t), cond=x), t, noise(y))
        d_n = float(D(y_upd * known, x, tt(t)))
        d_times.append(t)
        step = re if t % jump == 0 else 0
        if step + t > T:
            step = T - t + 1
        for i in range(1, u_max):
            if step == 0:
                break
            x1 = xs_t
            for j in range(step):
                x1 = em_forward(x1, mu_x, t - 1 + j, noise(x1))
            for z in reversed(range(step)):
                x1 = paste(k, x1)
                x1 = reverse(X, x1, mu_x, structure_net(x1, mu_x, tt(t + z)), t + z, noise(x1))
            y_tmp = reverse(Y, y, mu_y, texture_net(y, mu_y, tt(t), cond=x1), t, noise(y))  # original y_t
            d_p = float(D(y_tmp * known, x1, tt(t)))
            d_times.append(t)
            if i >= u_min:
                if d_p < d_n:
                    y_upd, xs_t = y_tmp, x1
                    decisions.append((t, i, "accept"))
                else:
                    decisions.append((t, i, "break"))
                    break
            elif d_p < d_n:
                y_upd, xs_t = y_tmp, x1
                decisions.append((t, i, "accept"))
            else:
                y_upd, xs_t = (y_upd + y_tmp) / 2, (x1 + xs_t) / 2
                decisions.append((t, i, "average"))
        y = y_upd
        x = paste(k, xs_t)
    for t in range(start - 1, 0, -1):  # late stage
        xs = y.mean(dim=1, keepdim=True)
        y = reverse(Y, y, mu_y, texture_net(y, mu_y, tt(t), cond=xs), t, noise(y))
        x = xs
    return y, x, decisions, d_times


def _case(B, T):
    img, known, x0, mu_x = _batch(B)
    sdes = S.make_sde_pair({"T": T})
    return img, known, x0, mu_x, sdes, make_nets(sdes, img, x0)


def _official(rec, img, known, x0, mu_x, T, noise, **kw):
    return sample("strdiffusion", rec.models(), img, known, sdes=S.make_sde_pair({"T": T}),
                  callback=rec.callback, noise_sampler=noise, mode="official",
                  x0=x0, mu_x=mu_x, **kw)


def _y0(rec):
    return [e for e in rec.log if e[0] == "step"][-1][2]


# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [10, 7])
def test_zero_noise_matches_authors_loop_per_image(T):
    """B=2, zero noise: the batched official sampler equals the single-image authors' loop for each image
    (final texture and structure to 1e-6), with accepted, averaged and breaking candidates all present."""
    img, known, x0, mu_x, sdes, nets = _case(2, T)
    rec = Recorder(nets)
    r = _official(rec, img, known, x0, mu_x, T, ScriptedNoise(zero=True))
    y0, x_last = _y0(rec), r.info["structure"]
    seen = set()
    for b in range(2):
        sl = slice(b, b + 1)
        ref_y, ref_x, dec, d_times = authors_loop(sdes, img[sl], known[sl], x0[sl], mu_x[sl],
                                                  lambda like: torch.zeros_like(like),
                                                  make_nets(sdes, img[sl], x0[sl]))
        torch.testing.assert_close(y0[sl], ref_y, atol=1e-6, rtol=0)
        torch.testing.assert_close(x_last[sl], ref_x, atol=1e-6, rtol=0)
        comp = img[sl] * known[sl] + ref_y.clamp(0, 1) * (1 - known[sl])
        torch.testing.assert_close(r.output[sl], comp, atol=1e-6, rtol=0)
        seen |= {d for _, _, d in dec}
        assert int(r.info["tries"][b]) == len(dec)
        assert int(r.info["accepted"][b]) == sum(d == "accept" for _, _, d in dec)
    assert seen == {"accept", "average", "break"}  # the case exercises every branch
    assert (y0 - img).abs().max() < 1.0  # a sane trajectory, not one that ran away


def test_scripted_noise_matches_authors_loop_draw_for_draw():
    """B=1, a scripted noise sequence: the same draws, in the same order and shapes, give the same result
    (so no draw is added, dropped or reordered: one known draw per outer step, `re` EM draws ...)."""
    T = 10
    img, known, x0, mu_x, sdes, nets = _case(1, T)
    rec, noise = Recorder(nets), ScriptedNoise(seed=3)
    r = _official(rec, img, known, x0, mu_x, T, noise)
    ref_noise = ScriptedNoise(seed=3)
    ref_y, ref_x, dec, d_times = authors_loop(sdes, img, known, x0, mu_x, ref_noise, nets)
    assert noise.shapes == ref_noise.shapes
    torch.testing.assert_close(_y0(rec), ref_y, atol=1e-6, rtol=0)
    torch.testing.assert_close(r.info["structure"], ref_x, atol=1e-6, rtol=0)
    assert [e[1] for e in rec.log if e[0] == "D"] == d_times
    assert {d for _, _, d in dec} == {"accept", "average", "break"}


def test_draw_count_when_every_candidate_is_accepted():
    """Closed count of Gaussian draws, T=10 (early t = 10..4, resampling at t = 10 with 1 re-noising level
    and t = 5 with 5), u_max - 1 = 5 candidates each: 2 initial + 7 x (known + structure + texture) +
    3 late texture + 5 x (1 + 1 + 1) + 5 x (5 + 5 + 1) = 96; and D = 7 thresholds + 10 candidates."""
    img, known, x0, mu_x, sdes, nets = _case(2, 10)
    calls = {"n": 0}

    def falling(y, x, t):  # every score below the last: "lower" accepts every candidate
        calls["n"] += 1
        return torch.full((y.shape[0],), -float(calls["n"]), dtype=y.dtype)

    rec, noise = Recorder(nets, D=falling), ScriptedNoise()
    r = _official(rec, img, known, x0, mu_x, 10, noise)
    assert len(noise.shapes) == 96
    assert r.info["nfe_by_net"]["discriminator"] == 7 + 10 and r.info["tries"].tolist() == [10, 10]
    d_t = [e[1] for e in rec.log if e[0] == "D"]
    assert d_t == [10] * 6 + [9, 8, 7, 6] + [5] * 6 + [4]  # threshold at EVERY early level, D at time t


def test_discriminator_sees_masked_texture_at_t_and_threshold_every_early_level():
    img, known, x0, mu_x, sdes, nets = _case(2, 10)
    rec = Recorder(nets)
    _official(rec, img, known, x0, mu_x, 10, ScriptedNoise())
    d_calls = [e for e in rec.log if e[0] == "D"]
    assert {t for _, t, _ in d_calls} == set(range(4, 11))  # int(0.4 * 10) .. T, none in the late stage
    hole = known.expand(-1, 3, -1, -1) == 0
    assert all(bool((y[hole] == 0).all()) and bool((y[~hole] != 0).any()) for _, _, y in d_calls)
    # the paper-mode convention stays available: D at t-1 on the unmasked texture
    rec2 = Recorder(nets)
    _official(rec2, img, known, x0, mu_x, 10, ScriptedNoise(), disc_time="t-1", disc_mask_texture=False)
    d2 = [e for e in rec2.log if e[0] == "D"]
    assert {t for _, t, _ in d2} == set(range(3, 10)) and any(bool((y[hole] != 0).any()) for _, _, y in d2)


def _outer_steps(log):
    """Split the call log at the callback's outer-step events: (calls, step event) per outer step t = T..1."""
    out, cur = [], []
    for e in log:
        if e[0] == "step":
            out.append((cur, e))
            cur = []
        else:
            cur.append(e)
    return out


def test_candidates_start_from_the_original_texture_state():
    img, known, x0, mu_x, sdes, nets = _case(2, 10)
    rec = Recorder(nets)
    _official(rec, img, known, x0, mu_x, 10, ScriptedNoise())
    steps = _outer_steps(rec.log)
    n_resampled = 0
    for calls, _ in steps:
        tex = [y for kind, _, y in calls if kind == "texture"]
        assert all(torch.equal(y, tex[0]) for y in tex)  # every candidate's texture step reads y_t
        n_resampled += len(tex) > 1
    assert n_resampled == 2  # t = 10 and t = 5


def test_structure_known_region_is_one_draw_at_level_t_minus_1_per_outer_step():
    """Before the structure step at t and before every re-denoising step the known region holds the same
    forward sample q(x_{t-1} | x_0 known) (mu = mu_x); a fresh draw in each outer step."""
    T = 10
    img, known, x0, mu_x, sdes, nets = _case(2, T)
    sx = sdes.structure
    rec, noise = Recorder(nets), ScriptedNoise()
    _official(rec, img, known, x0, mu_x, T, noise)
    kn = known == 1
    steps = _outer_steps(rec.log)
    firsts = []
    for t, (calls, ev) in zip(range(T, 0, -1), steps):
        xs = [x for kind, _, x in calls if kind == "structure"]
        if t < 4:
            assert not xs  # late stage: structure = channel mean of the texture, no structure net
            continue
        assert all(torch.equal(x[kn], xs[0][kn]) for x in xs)
        assert torch.equal(ev[3][kn], xs[0][kn])  # x_{t-1} leaves the step with the same draw pasted
        if t in (10, 5):
            assert len(xs) > 1  # re-denoising steps saw the same known region
        firsts.append(xs[0][kn])
    assert all(not torch.equal(a, b) for a, b in zip(firsts[:-1], firsts[1:]))
    # the first draw of the run after y_T, x_T is the known draw of t = T: q at level T-1
    k = S.q_sample(sx, x0 * known, mu_x, T - 1, noise.draws[2])
    torch.testing.assert_close(steps[0][0][0][2][kn], k[kn], atol=1e-12, rtol=0)


def test_euler_forward_step_is_eq17_as_printed():
    """x_t = x_{t-1} + theta_{t-1} (mu - x_{t-1}) dt + sigma_{t-1} sqrt(dt) z, by hand at one pixel; it
    differs from the exact transition (which uses theta_t)."""
    sde = S.make_sde(T=10)
    st = Stepper(sde)
    x, mu, z = (torch.tensor([[[[v]]]], dtype=DT) for v in (0.7, 0.2, -1.3))
    t = 6
    th, sg, dt = float(sde.theta[t - 1]), float(sde.sigma[t - 1]), sde.dt
    hand = 0.7 + th * (0.2 - 0.7) * dt + sg * math.sqrt(dt) * -1.3
    assert abs(float(st.euler_forward(x.clone(), mu, t, z)) - hand) < 1e-12
    assert abs(float(S.euler_forward_step(sde, x, mu, t, z)) - hand) < 1e-12
    assert abs(float(st.forward(x.clone(), mu, t, z)) - hand) > 1e-4


def test_official_defaults_are_the_released_loop():
    from strbench.sample import resolve_settings

    o = resolve_settings("strdiffusion", {"mode": "official"})
    assert (o["u_max"], o["u_min"], o["jump"], o["re"], o["stage_end"]) == (6, 3, 5, 5, 0.4)
    assert (o["disc_time"], o["disc_mask_texture"], o["structure_repaint"]) == ("t", True, True)
    p = resolve_settings("strdiffusion", {})
    assert (p["u_max"], p["disc_time"], p["disc_mask_texture"]) == (25, "t-1", False)


# --- D's time convention in training ------------------------------------------------------------


def test_train_disc_time_is_in_the_hash_and_steers_the_loss():
    from strbench.errors import ConfigError
    from strbench.train import TrainConfig, Trainer

    c = TrainConfig()
    assert "disc_time" in c.to_dict() and c.disc_time == "t-1"
    assert "disc_time" not in c.identity("discriminator")["config"]  # default: models hashed before keep theirs
    t_cfg = c.replace(disc_time="t")
    assert t_cfg.identity("discriminator")["config"]["disc_time"] == "t"
    assert t_cfg.hash("discriminator") != c.hash("discriminator")
    assert t_cfg.hash("texture") == c.hash("texture")
    with pytest.raises(ConfigError, match="disc_time"):
        c.replace(disc_time="t+1").validate("discriminator")

    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(4, 3, 16, 16, generator=g)
    masks = torch.ones(2, 1, 16, 16)
    masks[:, :, 4:12, 4:12] = 0
    seen = {}
    for dt in ("t-1", "t"):
        cfg = TrainConfig(batch=4, sde={"T": 10}, disc_time=dt)
        tr = Trainer("discriminator", cfg, imgs, masks, device="cpu")
        ts = []

        def D(y, x, t):
            ts.append(t.clone())
            return y.mean(dim=(1, 2, 3))

        tr.objective(tr, D, torch.Generator().manual_seed(5))
        seen[dt] = ts
    assert len(seen["t"]) == 3 and all(torch.equal(a, b + 1) for a, b in zip(seen["t"], seen["t-1"]))
