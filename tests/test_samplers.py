"""Samplers (strbench/sample.py, strbench/methods/, baselines/): oracle reconstructions, compositing, determinism, NFE
closed forms, the acceptance direction of adaptive resampling, settings validation."""
import math

import pytest
import torch

from helpers import dummy_net, oracle
from strbench import methods
from strbench import sde as S
from strbench.errors import ConfigError
from strbench.resampling import jump_schedule, schedule_counts
from strbench.sample import Models, SampleResult, resolve_settings, sample
from strbench.steps import Stepper

H = 16


def _batch(B=2, size=H, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(B, 3, size, size, generator=g)
    known = torch.ones(B, 1, size, size)
    q = size // 4
    known[0, :, q:3 * q, q:3 * q] = 0  # centre hole
    known[1:, :, :, : size // 2] = 0  # left half
    return img, known


def _gen(seed):
    return torch.Generator().manual_seed(seed)


class CountingD:
    """D whose score is the call index times a per-image sign: image b's scores rise (sign +1) or fall (-1)."""

    def __init__(self, signs):
        self.signs, self.calls = torch.tensor(signs, dtype=torch.float32), 0

    def __call__(self, y, x, t):
        self.calls += 1
        return self.signs[: y.shape[0]] * self.calls


def quality_d(gt):
    """D scoring closeness of the texture to the ground truth (lower = closer): a plausible critic."""
    def D(y, x, t):
        return ((y - gt) ** 2).mean(dim=(1, 2, 3))
    return D


SDES = S.make_sde_pair({"T": 100})
SDES10 = S.make_sde_pair({"T": 10})


def _all_models(img):
    x0 = img.mean(1, keepdim=True)
    return Models(texture=dummy_net, structure=dummy_net, discriminator=quality_d(img), irsde=dummy_net), x0


CASES = [
    ("irsde", {}),
    ("irsde", {"ode": True}),
    ("repaint", {"jump_length": 3, "jump_n_sample": 2}),
    ("strdiffusion", {"ablation": "A", "jump_length": 3, "jump_n_sample": 2}),
    ("strdiffusion", {"ablation": "B", "u_max": 2}),
    ("strdiffusion", {"ablation": "C"}),
    ("strdiffusion", {"ablation": "D", "u_max": 3}),
    ("strdiffusion", {"ablation": "D", "mode": "official", "u_max": 3, "u_min": 2}),
    ("strdiffusion", {"ablation": "B", "mode": "official", "u_max": 3, "u_min": 2}),
]


def _run(method, settings, seed=0, sdes=SDES10, img=None, known=None, callback=None):
    if img is None:
        img, known = _batch()
    models, x0 = _all_models(img)
    if method == "strdiffusion" and settings.get("ablation") != "A":
        settings = {**settings, "x0": x0, "mu_x": x0 * known}
    return sample(method, models, img, known, sdes=sdes, generator=_gen(seed), callback=callback, **settings)


# ---------------------------------------------------------------------------------------------
# the per-step scalars agree with strbench.sde
# ---------------------------------------------------------------------------------------------


def test_stepper_matches_sde_closed_forms():
    sde = S.make_sde(T=50)
    st = Stepper(sde)
    g = _gen(3)
    y, mu, eps, z = (torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64) for _ in range(4))
    for t in (1, 2, 25, 50):
        torch.testing.assert_close(st.reverse(y, mu, eps, t, z), S.reverse_sde_step(sde, y, mu, eps, t, z))
        torch.testing.assert_close(st.reverse(y, mu, eps, t, None), S.reverse_ode_step(sde, y, mu, eps, t))
        torch.testing.assert_close(st.forward(y, mu, t, z), S.forward_step(sde, y, mu, t, z))
        torch.testing.assert_close(st.q(y, mu, t, z), S.q_sample(sde, y, mu, t, z))


# ---------------------------------------------------------------------------------------------
# oracle: the whole reverse-time chain reconstructs x_0
# ---------------------------------------------------------------------------------------------

# Measured with T=100 (cosine, lambda 30/255), 32 px, 8 seeds x 3 images: max |error| in the holes
# <= 0.010 and mean <= 0.0018 for every method (IR-SDE SDE/ODE, RePaint*, StrDiffusion C/D paper and
# official, texture and structure): the Euler error and the last reverse step's own noise. A zero
# noise net instead leaves mean errors ~0.5 (y_0 -> mu = 0 in the holes).
ORACLE_MAX = 0.02
ORACLE_MEAN = 0.004


@pytest.mark.parametrize("ode", [False, True])
def test_oracle_irsde_reconstructs_holes(ode):
    img, known = _batch(B=3, size=32)
    r = sample("irsde", Models(irsde=oracle(SDES.texture, img)), img, known, sdes=SDES, generator=_gen(1),
               ode=ode)
    hole = known.expand_as(img) == 0
    err = (r.output - img).abs()[hole]
    assert err.max() < ORACLE_MAX and err.mean() < ORACLE_MEAN, (err.max(), err.mean())


def test_oracle_repaint_reconstructs_holes():
    img, known = _batch(B=2, size=32)
    r = sample("repaint", Models(irsde=oracle(SDES.texture, img)), img, known, sdes=SDES, generator=_gen(2),
               jump_length=10, jump_n_sample=3)
    err = (r.output - img).abs()[known.expand_as(img) == 0]
    assert err.max() < ORACLE_MAX and err.mean() < ORACLE_MEAN


def test_zero_net_is_far_from_oracle():
    """The tolerance above is tight enough to fail: a net that predicts no noise misses by a lot."""
    img, known = _batch(B=2, size=32)
    r = sample("irsde", Models(irsde=lambda x, mu, t, cond=None: torch.zeros_like(x)), img, known, sdes=SDES,
               generator=_gen(1))
    assert (r.output - img).abs()[known.expand_as(img) == 0].mean() > 10 * ORACLE_MEAN


@pytest.mark.parametrize("settings", [
    {"ablation": "C"},
    {"ablation": "C", "mode": "official", "late_structure": "net"},
    {"ablation": "D", "u_max": 2},
    {"ablation": "D", "mode": "official", "late_structure": "net", "u_max": 3, "u_min": 2},
    {"ablation": "C", "structure_repaint": True},
])
def test_oracle_strdiffusion_structure_and_texture(settings):
    img, known = _batch(B=2, size=32)
    x0 = torch.rand(2, 1, 32, 32, generator=_gen(7))  # any structure map
    mu_x = x0 * known
    models = Models(texture=oracle(SDES.texture, img), structure=oracle(SDES.structure, x0),
                    discriminator=quality_d(img))
    r = sample("strdiffusion", models, img, known, sdes=SDES, generator=_gen(3), x0=x0, mu_x=mu_x, **settings)
    x_err = (r.info["structure"] - x0).abs()[known == 0]
    y_err = (r.output - img).abs()[known.expand_as(img) == 0]
    assert x_err.max() < ORACLE_MAX and x_err.mean() < ORACLE_MEAN, (x_err.max(), x_err.mean())
    assert y_err.max() < ORACLE_MAX and y_err.mean() < ORACLE_MEAN, (y_err.max(), y_err.mean())


# ---------------------------------------------------------------------------------------------
# compositing, determinism, shapes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method,settings", CASES)
def test_known_pixels_exact_and_in_range(method, settings):
    img, known = _batch()
    r = _run(method, settings, img=img, known=known)
    assert isinstance(r, SampleResult) and r.output.shape == img.shape and r.output.dtype == img.dtype
    k = known.expand_as(img) == 1
    assert torch.equal(r.output[k], img[k])
    assert r.output.min() >= 0 and r.output.max() <= 1
    assert not torch.equal(r.output[~k], img[~k])  # holes are generated, not copied


@pytest.mark.parametrize("method,settings", CASES)
def test_same_seed_identical_different_seed_differs(method, settings):
    a = _run(method, settings, seed=5).output
    b = _run(method, settings, seed=5).output
    c = _run(method, settings, seed=6).output
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_global_rng_untouched_and_irrelevant():
    """All noise comes from the generator: the global RNG neither matters nor moves."""
    torch.manual_seed(0)
    a = _run("strdiffusion", {"ablation": "D", "u_max": 2}).output
    state = torch.get_rng_state()
    torch.manual_seed(123)
    b = _run("strdiffusion", {"ablation": "D", "u_max": 2}).output
    assert torch.equal(a, b)
    torch.manual_seed(0)
    _run("irsde", {})
    assert torch.equal(torch.get_rng_state(), state)


def test_gradients_off_inside():
    seen = []

    def net(x_t, mu, t, cond=None):
        seen.append(torch.is_grad_enabled())
        return torch.zeros_like(x_t)

    img, known = _batch()
    sample("irsde", Models(irsde=net), img, known, sdes=SDES10, generator=_gen(0))
    assert seen and not any(seen)


# ---------------------------------------------------------------------------------------------
# NFE per image
# ---------------------------------------------------------------------------------------------


def test_nfe_closed_forms():
    T, U = 10, 3
    img, known = _batch()
    x0 = img.mean(1, keepdim=True)
    base = dict(x0=x0, mu_x=x0 * known)
    run = lambda method, D=None, **kw: sample(  # noqa: E731
        method, Models(texture=dummy_net, structure=dummy_net, discriminator=D, irsde=dummy_net), img, known,
        sdes=SDES10, generator=_gen(0), **({} if method != "strdiffusion" or kw.get("ablation") == "A" else base),
        **kw)
    assert run("irsde").nfe == T
    assert run("repaint", jump_length=3, jump_n_sample=2).nfe == schedule_counts(T, 3, 2)["reverse"] == 19
    a = run("strdiffusion", ablation="A", jump_length=3, jump_n_sample=2)
    assert a.nfe == 19 > run("irsde").nfe
    c = run("strdiffusion", ablation="C")
    assert c.nfe == 2 * T and c.info["nfe_by_net"] == {"structure": T, "texture": T, "discriminator": 0}
    b = run("strdiffusion", ablation="B", u_max=U)
    assert b.nfe == T * (2 + 2 * U)  # always accept: U candidates of (structure + texture) per step
    # rising scores: every first candidate scores above Delta -> "lower" rejects at once (1 try per step)
    d_low = run("strdiffusion", CountingD([1, 1]), ablation="D", u_max=U, accept="lower")
    assert d_low.nfe == T * (2 + 1 + 1 * 3)
    d_high = run("strdiffusion", CountingD([1, 1]), ablation="D", u_max=U, accept="higher")
    assert d_high.nfe == T * (2 + 1 + U * 3)
    assert d_high.info["nfe_by_net"]["discriminator"] == T * (1 + U)
    assert c.nfe < d_low.nfe < d_high.nfe
    # official, T=10: structure net while t >= int(0.4 T) = 4 (7 steps), texture mean below (3 steps):
    # 7*2 + 3 = 17; the threshold D at every early level (7); resampling (jump 5, re 5) at t in {10, 5}:
    # n_re = 1 at t=10 (capped at level T), 5 at t=5; u_max - 1 tries of (n_re structure + texture + D)
    c_off = run("strdiffusion", ablation="C", mode="official")
    assert c_off.nfe == 17
    d_off = run("strdiffusion", CountingD([1, 1]), ablation="D", mode="official", u_max=U, accept="higher")
    tries = U - 1
    assert d_off.nfe == 17 + 7 + tries * (1 + 1 + 1) + tries * (5 + 1 + 1)
    assert d_off.info["nfe_by_net"]["discriminator"] == 7 + 2 * tries


# ---------------------------------------------------------------------------------------------
# adaptive resampling: acceptance direction, per-image break, callback
# ---------------------------------------------------------------------------------------------


def test_acceptance_direction_per_image():
    """Image 0's scores rise, image 1's fall. 'lower' keeps resampling image 1 only, 'higher' image 0 only."""
    T, U = 10, 3
    img, known = _batch()
    x0 = img.mean(1, keepdim=True)
    out = {}
    for acc in ("lower", "higher"):
        r = sample("strdiffusion", Models(texture=dummy_net, structure=dummy_net, discriminator=CountingD([1, -1])),
                   img, known, sdes=SDES10, generator=_gen(0), x0=x0, mu_x=x0 * known, u_max=U, accept=acc)
        out[acc] = r
    lo, hi = out["lower"].info, out["higher"].info
    assert lo["accepted"].tolist() == [0, T * U] and lo["tries"].tolist() == [T, T * U]
    assert hi["accepted"].tolist() == [T * U, 0] and hi["tries"].tolist() == [T * U, T]
    assert not torch.equal(out["lower"].output, out["higher"].output)


def test_accepted_candidate_is_what_D_preferred():
    """With a critic that scores distance to the ground truth, 'lower' accepts only improving candidates,
    so every accepted score in the callback is below its threshold."""
    img, known = _batch()
    models, x0 = _all_models(img)
    events = []
    sample("strdiffusion", models, img, known, sdes=SDES10, generator=_gen(0), x0=x0, mu_x=x0 * known,
           u_max=4, callback=events.append)
    res = [e for e in events if e["phase"] == "resample"]
    assert res
    for e in res:
        a = e["accepted"]
        assert torch.all(e["score"][a] < e["threshold"][a])
    assert any(bool(e["accepted"].any()) for e in res) and any(not bool(e["accepted"].all()) for e in res)


def test_callback_contract():
    keys = {"t", "y", "x", "score", "threshold", "accepted", "phase", "nfe"}
    img, known = _batch()
    ev = []
    _run("repaint", {"jump_length": 3, "jump_n_sample": 2}, img=img, known=known, callback=ev.append)
    s = jump_schedule(10, 3, 2)
    assert [e["t"] for e in ev] == s[1:]
    assert sum(e["phase"] == "undo" for e in ev) == schedule_counts(10, 3, 2)["undo"]
    assert all(set(e) == keys for e in ev)
    ev = []
    r = _run("strdiffusion", {"ablation": "D", "u_max": 2}, img=img, known=known, callback=ev.append)
    steps = [e for e in ev if e["phase"] == "step"]
    assert [e["t"] for e in steps] == list(range(9, -1, -1))
    assert all(e["x"].shape == (2, 1, H, H) and e["y"].shape == (2, 3, H, H) for e in steps)
    assert ev[-1]["nfe"] == r.nfe
    assert all(set(e) == keys for e in ev)


# ---------------------------------------------------------------------------------------------
# structure variants, settings validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["gray2gray", "edge2edge", "edge2gray", "gray2edge"])
def test_structure_variants_computed(variant):
    from strbench.structure import structure_states

    img, known = _batch(size=32)
    seen = []

    def structure(x_t, mu, t, cond=None):
        seen.append(mu)
        return torch.zeros_like(x_t)

    r = sample("strdiffusion", Models(texture=dummy_net, structure=structure), img, known, sdes=SDES10,
               generator=_gen(0), ablation="C", variant=variant, canny_sigma=2.0)
    _, mu_x = structure_states(variant, img, known, canny_sigma=2.0)
    assert torch.equal(seen[0], mu_x) and r.output.shape == img.shape


def test_unknown_setting_names_valid_ones():
    img, known = _batch()
    with pytest.raises(ValueError, match="bogus") as e:
        sample("irsde", Models(irsde=dummy_net), img, known, sdes=SDES10, generator=_gen(0), bogus=1)
    assert "ode" in str(e.value)
    with pytest.raises(ConfigError, match="u_maxx"):
        resolve_settings("strdiffusion", {"u_maxx": 3})
    with pytest.raises(ConfigError, match="unknown sampling method"):
        resolve_settings("ddpm", {})


@pytest.mark.parametrize("settings,match", [
    ({"ablation": "E"}, "ablation"),
    ({"mode": "fast"}, "mode"),
    ({"accept": "less"}, "accept"),
    ({"u_max": 0}, "u_max"),
    ({"u_max": 2.5}, "u_max"),
    ({"jump": 2}, "only applies to mode='official'"),
    ({"jump_length": 5}, "only applies to ablation 'A'"),
    ({"mode": "official", "stage_end": 1.5}, "stage_end"),
    ({"mode": "official", "late_structure": "edge"}, "late_structure"),
    ({"x0": torch.zeros(1)}, "go together"),
    ({"variant": "rgb2rgb"}, "variant"),
])
def test_bad_settings_raise(settings, match):
    with pytest.raises(ConfigError, match=match):
        resolve_settings("strdiffusion", settings)


def test_mode_defaults():
    p = resolve_settings("strdiffusion", {})
    o = resolve_settings("strdiffusion", {"mode": "official"})
    assert p["accept"] == o["accept"] == "lower"
    assert (p["structure_repaint"], p["disc_time"], p["u_min"]) == (False, "t-1", None)
    assert (o["structure_repaint"], o["disc_time"]) == (True, "t")
    assert (p["u_max"], p["disc_mask_texture"]) == (25, False)
    assert (o["u_max"], o["u_min"], o["jump"], o["re"], o["stage_end"]) == (6, 3, 5, 5, 0.4)
    assert o["disc_mask_texture"] is True and o["late_structure"] == "texture_mean"
    assert {"irsde", "repaint", "strdiffusion"} <= set(methods.names())


def test_missing_model_and_bad_inputs():
    img, known = _batch()
    with pytest.raises(ConfigError, match="discriminator"):
        sample("strdiffusion", Models(texture=dummy_net, structure=dummy_net), img, known, sdes=SDES10,
               generator=_gen(0), x0=img[:, :1], mu_x=img[:, :1])
    with pytest.raises(ConfigError, match="irsde"):
        sample("repaint", Models(), img, known, sdes=SDES10, generator=_gen(0))
    with pytest.raises(ValueError, match="known"):
        sample("irsde", Models(irsde=dummy_net), img, known[:, :, :4], sdes=SDES10, generator=_gen(0))
    with pytest.raises(ValueError, match="Generator"):
        sample("irsde", Models(irsde=dummy_net), img, known, sdes=SDES10, generator=0)
    with pytest.raises(ConfigError, match="same T"):
        sample("strdiffusion", Models(texture=dummy_net, structure=dummy_net), img, known, ablation="C",
               sdes=S.SDEPair(S.make_sde(T=10), S.make_sde(T=12)), generator=_gen(0), x0=img[:, :1],
               mu_x=img[:, :1])


def test_real_nets_run():
    """The networks engineer's nets plug in (tiny preset, 16 px, T=4)."""
    from strbench import roles

    torch.manual_seed(0)
    m = Models(texture=roles.build_net("texture"), structure=roles.build_net("structure"),
               discriminator=roles.build_net("discriminator"), irsde=roles.build_net("irsde"))
    img, known = _batch(size=16)
    sd = S.make_sde_pair({"T": 4})
    for method, kw in [("irsde", {}), ("repaint", {"jump_length": 2, "jump_n_sample": 2}),
                       ("strdiffusion", {"u_max": 2}), ("strdiffusion", {"mode": "official", "u_max": 2})]:
        if method == "strdiffusion":
            kw = {**kw, "x0": img.mean(1, keepdim=True), "mu_x": img.mean(1, keepdim=True) * known}
        r = sample(method, m, img, known, sdes=sd, generator=_gen(0), **kw)
        assert torch.isfinite(r.output).all() and r.nfe >= 4
    assert math.isfinite(float(r.output.mean()))


def test_bench_sample_runs():
    """`strbench bench sample` (registered in strbench.bench.BENCHES) runs and counts what it should."""
    from strbench import bench

    assert bench.BENCHES["sample"] is bench.bench_sample
    rows = bench.bench_sample(device="cpu", size=16, batch=2, repeats=1, T=3)
    by = {r["sampler"]: r for r in rows}
    assert by["IR-SDE"]["nfe"] == 3 and by["StrDiffusion C"]["nfe"] == 6
    assert by["RePaint*"]["nfe"] == schedule_counts(3, 1, 10)["reverse"]
    assert all(r["ratio"] > 0 and math.isfinite(r["ratio"]) for r in rows)
