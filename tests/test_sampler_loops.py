"""Stored full-loop values of every sampler configuration: the proof that a refactor changed no number.

Modelled on diffusers' scheduler tests (``test_full_loop_no_noise``): a deterministic input, a
deterministic dummy network, the whole reverse loop with a fixed seed, and the output's sum and mean
compared with values stored below. Only the public API is used (``strbench.sample.sample``,
``strbench.sample.Models``, ``strbench.sde.make_sde_pair`` and the SDE's arrays), so the stored values
survive any reorganisation of the code behind it.

Fixture: T = 10 (cosine texture schedule; two cases with a distinct structure schedule), a batch of
B = 2 RGB 16 x 16 images from a closed formula (smooth waves plus a bright block, so that the gray and
canny edge maps are both non-trivial), a fixed known mask (image 0 a centre hole, image 1 the left half
missing), and a CPU ``torch.Generator`` seeded with 0. The networks are pure functions, not trained
nets: a noise net is half the exact noise implied by a target x_0 (a function of 5 x 5 box means of
x_t and of the structure condition or mu) plus a small tanh term, which keeps y_0 (nearly) inside
[0, 1] so that clamping hides almost nothing (IR-SDE's ODE case excepted: its raw y_0 spreads, which
y0_sum and y0_sumsq record). Guidance, the structure variant and the re-imposed known regions all
reach the holes. The discriminator's score depends on the texture and structure means, so
adaptive resampling accepts some candidates and rejects others (checked below). No decision is a
near-tie: the smallest |score - threshold| of every case is >= 2e-5 today (asserted > MARGIN =
1e-5), far above float32 rounding of these means (~1e-8), so a refactor that only reorders float
operations cannot flip a decision.

Stored per case: ``sum``, ``y0_sum`` and ``y0_sumsq`` (relative tolerance 1e-6), ``mean`` (absolute
1e-6), ``x_sum`` (the final structure state, relative 1e-6) where the method has one, and exactly:
``nfe``, ``tries`` and ``accepted`` (StrDiffusion). ``sum``/``mean`` are of the composited output;
``y0_sum``/``y0_sumsq`` (sum of squares: a wrong noise scale does not cancel in it) are of the raw
final texture state y_0 as the callback sees it, before clamping and compositing. Sums are taken in
float64 of the float32 tensors.

The values were computed on CPU (torch 2.14.1, numpy 2.4.6, scikit-image 0.26.0) by running this file:
    PYTHONPATH=. python tests/test_sampler_loops.py
which prints the EXPECTED and PHASES dicts as written here. Regenerate them only for a change that is
meant to change the numbers, and say so in the commit.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from strbench.sample import Models, sample
from strbench.sde import make_sde_pair

T, B, H = 10, 2, 16
SUM_RTOL = 1e-6  # relative, on sums (|sum| ~ 600 -> ~6e-4 absolute)
MEAN_ATOL = 1e-6  # absolute, on means (~0.4)
MARGIN = 1e-5  # smallest allowed |score - threshold| of an accept/reject decision in the fixture

SDES = {
    "same": make_sde_pair({"T": T}),  # delta == theta (the authors' code)
    "delta": make_sde_pair({"T": T}, {"T": T, "kind": "power", "power": 2.0, "eps": 0.01}),
}


# ---------------------------------------------------------------------------------------------
# deterministic fixture: images, mask, networks
# ---------------------------------------------------------------------------------------------


def image() -> torch.Tensor:
    """(B, 3, H, W) in [0, 1]: waves differing per channel and image, plus a bright block (edges)."""
    i = torch.arange(H, dtype=torch.float32).view(1, 1, H, 1)
    j = torch.arange(H, dtype=torch.float32).view(1, 1, 1, H)
    b = torch.arange(B, dtype=torch.float32).view(B, 1, 1, 1)
    c = torch.arange(3, dtype=torch.float32).view(1, 3, 1, 1)
    smooth = 0.5 + 0.3 * torch.sin(0.7 * i + 0.3 * j * (c + 1) + b)
    block = ((i >= 4) & (i < 12) & (j >= 5) & (j < 11)).float()
    return (0.7 * smooth + 0.3 * block).clamp(0, 1)


def known() -> torch.Tensor:
    """(B, 1, H, W): 1 known, 0 hole. Image 0: centre 8 x 8 hole; image 1: left half missing."""
    k = torch.ones(B, 1, H, H)
    k[0, :, 4:12, 4:12] = 0
    k[1, :, :, : H // 2] = 0
    return k


def blur(x):
    """5 x 5 box mean (borders: mean of the pixels inside): couples each pixel to its neighbours, so
    that what happens in the known region (RePaint's re-imposed ground truth, the official sampler's
    re-imposed structure, the structure variant) reaches the holes, as it does through a real net."""
    return F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)


def noise_net(sde, target):
    """A pure noise net: half the exact noise of x_t for the clean state x0 = target(x_t, mu, cond),
        0.5 (x_t - mu - (x0 - mu) e^{-thetabar_t dt}) / sigmabar_t + 0.1 tanh(blur(x_t) - mu) t / T.
    With the full exact noise every perturbation of the chain would be contracted away (a 1% change
    of the forward noise moved the stored sums by < 1e-7); at one half, and with targets that see
    blur(x_t), it moves them by 1e-6 to 5e-5."""
    decay = [math.exp(-tb * sde.dt) for tb in sde.thetabar.tolist()]
    sigmabar = [max(s, 1e-12) for s in sde.sigmabar.tolist()]

    def net(x_t, mu, t, cond=None):
        k = int(t[0])
        x0 = target(x_t, mu, cond)
        return 0.5 * (x_t - mu - (x0 - mu) * decay[k]) / sigmabar[k] + 0.1 * torch.tanh(blur(x_t) - mu) * (k / T)

    return net


def discriminator(y, x, t):
    """(B,) scores from the texture and structure means, scaled by the time given."""
    return (y.mean((1, 2, 3)) - x.mean((1, 2, 3))) * (1 + t.to(y.dtype) / T)


def models(sdes) -> Models:
    return Models(
        texture=noise_net(sdes.texture, lambda x, mu, cond: 0.3 + 0.3 * blur(cond) + 0.3 * blur(x)),  # x_{t-1}
        structure=noise_net(sdes.structure, lambda x, mu, cond: 0.15 + 0.5 * blur(mu) + 0.3 * blur(x)),
        discriminator=discriminator,
        irsde=noise_net(sdes.texture, lambda x, mu, cond: 0.4 + 0.3 * blur(x)),
    )


def precomputed_structure():
    """x0/mu_x given as settings instead of computed from a variant: a fixed ramp."""
    x0 = torch.linspace(0, 1, H).view(1, 1, 1, H).expand(B, 1, H, H).contiguous()
    return {"x0": x0, "mu_x": x0 * known()}


# ---------------------------------------------------------------------------------------------
# the cases: every configuration reachable through sample()
# ---------------------------------------------------------------------------------------------

_OFF = {"mode": "official", "u_max": 4, "u_min": 2}
CASES: dict[str, tuple[str, dict, str]] = {
    "irsde-sde": ("irsde", {}, "same"),
    "irsde-ode": ("irsde", {"ode": True}, "same"),
    "repaint": ("repaint", {"jump_length": 3, "jump_n_sample": 2}, "same"),
    "repaint-3x3": ("repaint", {"jump_length": 2, "jump_n_sample": 3}, "same"),
    "paper-A": ("strdiffusion", {"ablation": "A", "jump_length": 3, "jump_n_sample": 2}, "same"),
    "paper-B": ("strdiffusion", {"ablation": "B", "u_max": 3}, "same"),
    "paper-C": ("strdiffusion", {"ablation": "C"}, "same"),
    "paper-D-lower": ("strdiffusion", {"ablation": "D", "u_max": 4}, "same"),
    "paper-D-higher": ("strdiffusion", {"ablation": "D", "u_max": 4, "accept": "higher"}, "same"),
    "paper-D-gray2gray": ("strdiffusion", {"ablation": "D", "u_max": 5, "variant": "gray2gray"}, "same"),
    "paper-D-disc-t-masked": ("strdiffusion", {"ablation": "D", "u_max": 4, "disc_time": "t",
                                               "disc_mask_texture": True}, "same"),
    "paper-C-structure-repaint": ("strdiffusion", {"ablation": "C", "structure_repaint": True}, "same"),
    "paper-D-delta": ("strdiffusion", {"ablation": "D", "u_max": 4}, "delta"),
    "paper-D-precomputed": ("strdiffusion", {"ablation": "D", "u_max": 4, "_precomputed": True}, "same"),
    "official-A": ("strdiffusion", {"ablation": "A", "mode": "official", "jump_length": 3,
                                    "jump_n_sample": 2}, "same"),
    "official-B": ("strdiffusion", {"ablation": "B", **_OFF}, "same"),
    "official-C": ("strdiffusion", {"ablation": "C", "mode": "official"}, "same"),
    "official-D-lower": ("strdiffusion", {"ablation": "D", **_OFF}, "same"),
    "official-D-higher": ("strdiffusion", {"ablation": "D", **_OFF, "accept": "higher"}, "same"),
    "official-D-gray2gray": ("strdiffusion", {"ablation": "D", **_OFF, "variant": "gray2gray"}, "same"),
    "official-D-edge2edge": ("strdiffusion", {"ablation": "D", **_OFF, "variant": "edge2edge"}, "same"),
    "official-D-edge2gray": ("strdiffusion", {"ablation": "D", **_OFF, "variant": "edge2gray"}, "same"),
    "official-D-gray2edge": ("strdiffusion", {"ablation": "D", **_OFF, "variant": "gray2edge"}, "same"),
    "official-D-edge2edge-sigma1": ("strdiffusion", {"ablation": "D", **_OFF, "variant": "edge2edge",
                                                     "canny_sigma": 1.0}, "same"),
    "official-D-late-net": ("strdiffusion", {"ablation": "D", **_OFF, "late_structure": "net"}, "same"),
    "official-D-knobs": ("strdiffusion", {"ablation": "D", "mode": "official", "u_max": 5, "u_min": 3,
                                          "jump": 3, "re": 3, "stage_end": 0.2}, "same"),
    "official-D-no-structure-repaint": ("strdiffusion", {"ablation": "D", **_OFF, "structure_repaint": False,
                                                         "disc_time": "t-1"}, "same"),
    "official-D-delta": ("strdiffusion", {"ablation": "D", **_OFF}, "delta"),
}


def run_case(case: str, callback=None):
    method, settings, sdes_key = CASES[case]
    settings = dict(settings)
    if settings.pop("_precomputed", False):
        settings.update(precomputed_structure())
    sdes = SDES[sdes_key]
    return sample(method, models(sdes), image(), known(), sdes=sdes, generator=torch.Generator().manual_seed(0),
                  callback=callback, **settings)


def measure(case: str) -> dict:
    """The stored quantities of one case (the raw y_0 is the texture of the last callback, at t = 0)."""
    last: dict = {}
    margins: list[float] = []

    def cb(d):
        last.update(t=d["t"], y=d["y"].clone(), phase=d["phase"])
        if d["score"] is not None and d["threshold"] is not None:
            margins.append(float((d["score"] - d["threshold"]).abs().min()))

    r = run_case(case, cb)
    assert last["t"] == 0 and last["phase"] == "step"
    assert not margins or min(margins) > MARGIN, f"{case}: a near-tie decision ({min(margins):.1e})"
    out = {"sum": float(r.output.double().sum()), "mean": float(r.output.double().mean()),
           "y0_sum": float(last["y"].double().sum()), "y0_sumsq": float((last["y"].double() ** 2).sum()),
           "nfe": r.nfe}
    if "structure" in r.info:
        out["x_sum"] = float(r.info["structure"].double().sum())
    for k in ("tries", "accepted"):
        if k in r.info:
            out[k] = r.info[k].tolist()
    return out


# ---------------------------------------------------------------------------------------------
# stored values (today's code; see the module docstring before changing them)
# ---------------------------------------------------------------------------------------------

EXPECTED: dict[str, dict] = {
    "irsde-sde": {
        "sum": 625.0956107527018, "mean": 0.40696328825045686, "y0_sum": 790.3561506420374, "nfe": 10,
        "y0_sumsq": 434.92956690569923},
    "irsde-ode": {
        "sum": 607.4441257361323, "mean": 0.3954714360261278, "y0_sum": 719.5031611463928, "nfe": 10,
        "y0_sumsq": 1122.3808566136495},
    "repaint": {
        "sum": 631.1052439361811, "mean": 0.41087580985428457, "y0_sum": 701.22717705369, "nfe": 19,
        "y0_sumsq": 336.03939451093436},
    "repaint-3x3": {
        "sum": 639.6688484400511, "mean": 0.4164510732031583, "y0_sum": 706.098401427269, "nfe": 26,
        "y0_sumsq": 339.94609447272717},
    "paper-A": {
        "sum": 631.1052439361811, "mean": 0.41087580985428457, "y0_sum": 701.22717705369, "nfe": 19,
        "y0_sumsq": 336.03939451093436},
    "paper-B": {
        "sum": 594.1264934949577, "mean": 0.38680110253577976, "y0_sum": 704.2978128993418, "nfe": 80,
        "y0_sumsq": 352.82724554591766, "x_sum": 118.44931861758232, "tries": [30, 30], "accepted": [30, 30]},
    "paper-C": {
        "sum": 593.7486990615726, "mean": 0.3865551426182113, "y0_sum": 706.0323815643787, "nfe": 20,
        "y0_sumsq": 356.03814713522604, "x_sum": 109.25005583686288, "tries": [0, 0], "accepted": [0, 0]},
    "paper-D-lower": {
        "sum": 592.5539946714416, "mean": 0.38577734028088645, "y0_sum": 697.3872835161164, "nfe": 126,
        "y0_sumsq": 347.43590018363193, "x_sum": 118.43171267956495, "tries": [24, 23], "accepted": [18, 15]},
    "paper-D-higher": {
        "sum": 590.6921366453171, "mean": 0.38456519312846166, "y0_sum": 700.7050244882703, "nfe": 78,
        "y0_sumsq": 349.5115975721663, "x_sum": 99.25544475764036, "tries": [16, 10], "accepted": [6, 0]},
    "paper-D-gray2gray": {
        "sum": 590.5333848358132, "mean": 0.3844618390858159, "y0_sum": 767.7785479328595, "nfe": 120,
        "y0_sumsq": 419.8088696297483, "x_sum": 189.87105923466152, "tries": [22, 19], "accepted": [14, 10]},
    "paper-D-disc-t-masked": {
        "sum": 596.1499967416748, "mean": 0.3881184874620279, "y0_sum": 699.6452537579462, "nfe": 126,
        "y0_sumsq": 348.57011587621645, "x_sum": 118.13782186433673, "tries": [21, 26], "accepted": [14, 20]},
    "paper-C-structure-repaint": {
        "sum": 593.8989459425211, "mean": 0.3866529595979955, "y0_sum": 732.9562063887715, "nfe": 20,
        "y0_sumsq": 381.7036229073353, "x_sum": 140.42863791622221, "tries": [0, 0], "accepted": [0, 0]},
    "paper-D-delta": {
        "sum": 595.1259130612016, "mean": 0.38745176631588646, "y0_sum": 708.180292762816, "nfe": 126,
        "y0_sumsq": 356.95198383409536, "x_sum": 122.44170078635216, "tries": [26, 25], "accepted": [20, 19]},
    "paper-D-precomputed": {
        "sum": 606.6125163584948, "mean": 0.394930023670895, "y0_sum": 838.317881539464, "nfe": 126,
        "y0_sumsq": 504.69764517320107, "x_sum": 244.95908461883664, "tries": [21, 23], "accepted": [14, 14]},
    "official-A": {
        "sum": 631.1052439361811, "mean": 0.41087580985428457, "y0_sum": 701.22717705369, "nfe": 19,
        "y0_sumsq": 336.03939451093436},
    "official-B": {
        "sum": 619.7240164428949, "mean": 0.40346615653834306, "y0_sum": 794.8213193714619, "nfe": 50,
        "y0_sumsq": 426.51219788185693, "x_sum": 231.25378350913525, "tries": [12, 12], "accepted": [12, 12]},
    "official-C": {
        "sum": 613.6623275391757, "mean": 0.3995197444916509, "y0_sum": 790.3891891799867, "nfe": 17,
        "y0_sumsq": 441.2822581322167, "x_sum": 229.8575587247833, "tries": [0, 0], "accepted": [0, 0]},
    "official-D-lower": {
        "sum": 607.5720032677054, "mean": 0.3955546896274124, "y0_sum": 781.9865497127175, "nfe": 58,
        "y0_sumsq": 417.97723754475004, "x_sum": 225.22763743251562, "tries": [9, 9], "accepted": [3, 3]},
    "official-D-higher": {
        "sum": 620.1483340114355, "mean": 0.4037424049553617, "y0_sum": 795.5624663829803, "nfe": 66,
        "y0_sumsq": 427.2173147717204, "x_sum": 231.5460700839758, "tries": [11, 11], "accepted": [8, 10]},
    "official-D-gray2gray": {
        "sum": 610.1885546147823, "mean": 0.39725817357733223, "y0_sum": 805.3550811260939, "nfe": 58,
        "y0_sumsq": 443.80953524999677, "x_sum": 234.62213161587715, "tries": [9, 9], "accepted": [3, 3]},
    "official-D-edge2edge": {
        "sum": 606.4511229842901, "mean": 0.3948249498595639, "y0_sum": 771.1290010660887, "nfe": 58,
        "y0_sumsq": 406.2897735146147, "x_sum": 220.8605792298913, "tries": [9, 9], "accepted": [3, 3]},
    "official-D-edge2gray": {
        "sum": 610.289805740118, "mean": 0.3973240922787227, "y0_sum": 794.171638444066, "nfe": 58,
        "y0_sumsq": 430.442126027192, "x_sum": 230.09860463440418, "tries": [9, 9], "accepted": [4, 3]},
    "official-D-gray2edge": {
        "sum": 607.5720032677054, "mean": 0.3955546896274124, "y0_sum": 781.9865497127175, "nfe": 58,
        "y0_sumsq": 417.97723754475004, "x_sum": 225.22763743251562, "tries": [9, 9], "accepted": [3, 3]},
    "official-D-edge2edge-sigma1": {
        "sum": 608.5967162773013, "mean": 0.3962218204930347, "y0_sum": 790.0973064675927, "nfe": 58,
        "y0_sumsq": 426.658614945686, "x_sum": 228.47916682064533, "tries": [9, 9], "accepted": [3, 3]},
    "official-D-late-net": {
        "sum": 589.378040522337, "mean": 0.38370966179839644, "y0_sum": 725.5295543372631, "nfe": 61,
        "y0_sumsq": 362.038062355831, "x_sum": 141.3128453847021, "tries": [9, 9], "accepted": [3, 3]},
    "official-D-knobs": {
        "sum": 609.2661475986242, "mean": 0.39665764817618765, "y0_sum": 764.8092578947544, "nfe": 68,
        "y0_sumsq": 395.5006115952502, "x_sum": 218.86630826443434, "tries": [9, 10], "accepted": [2, 4]},
    "official-D-no-structure-repaint": {
        "sum": 610.3820512592793, "mean": 0.39738414795525995, "y0_sum": 770.4394308626652, "nfe": 58,
        "y0_sumsq": 404.598952738888, "x_sum": 220.98524087667465, "tries": [10, 10], "accepted": [5, 4]},
    "official-D-delta": {
        "sum": 610.4767803922296, "mean": 0.39744582056785777, "y0_sum": 791.8609919175506, "nfe": 58,
        "y0_sumsq": 428.35555627227416, "x_sum": 229.18880742788315, "tries": [9, 9], "accepted": [3, 3]},
}


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------


def test_every_case_has_stored_values():
    assert sorted(EXPECTED) == sorted(CASES)


def test_cases_cover_every_option():
    """Every method, ablation, mode, variant and acceptance direction appears in some case."""
    seen: dict[str, set] = {"method": set(), "ablation": set(), "mode": set(), "variant": set(), "accept": set()}
    for method, s, _ in CASES.values():
        seen["method"].add(method)
        if method == "strdiffusion":
            seen["ablation"].add(s.get("ablation", "D"))
            seen["mode"].add(s.get("mode", "paper"))
            seen["variant"].add(s.get("variant", "gray2edge"))
            seen["accept"].add(s.get("accept", "lower"))
    from typing import get_args

    from strbench import methods
    from strbench.structure import VARIANTS

    fields = methods.get("strdiffusion").settings.model_fields
    choices = {k: set(get_args(fields[k].annotation)) for k in ("ablation", "mode", "accept")}
    learned = {n for n, m in methods.registry().items() if not m.floor}  # floors have no network to dummy
    assert seen == {"method": learned, **choices, "variant": set(VARIANTS)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_full_loop_matches_stored_values(case):
    got, want = measure(case), EXPECTED[case]
    assert set(got) == set(want), (sorted(got), sorted(want))
    for k in ("sum", "y0_sum", "y0_sumsq", "x_sum"):
        if k in want:
            assert got[k] == pytest.approx(want[k], rel=SUM_RTOL, abs=0), (k, got[k], want[k])
    assert got["mean"] == pytest.approx(want["mean"], abs=MEAN_ATOL, rel=0), (got["mean"], want["mean"])
    for k in ("nfe", "tries", "accepted"):
        if k in want:
            assert got[k] == want[k], (k, got[k], want[k])


@pytest.mark.parametrize("case", sorted(c for c, (m, s, _) in CASES.items()
                                        if m == "strdiffusion" and s.get("ablation", "D") == "D"))
def test_adaptive_resampling_takes_both_branches(case):
    """The fixture exercises acceptance and rejection: some candidates accepted, not all of them."""
    want = EXPECTED[case]
    assert 0 < sum(want["accepted"]) < sum(want["tries"]), want


def test_stored_values_differ_between_configurations():
    """The fixture is sensitive: the options the cases exist for change the numbers."""
    variants = [f"official-D-{v}" for v in ("gray2gray", "edge2edge", "edge2gray", "gray2edge")]
    pairs = [(a, b) for i, a in enumerate(variants) for b in variants[i + 1:]]
    pairs += [("irsde-sde", "irsde-ode"), ("paper-D-lower", "paper-D-higher"), ("paper-C", "official-C"),
              ("paper-B", "paper-C"), ("official-B", "official-C"), ("official-D-lower", "official-D-higher"),
              ("paper-D-lower", "paper-D-delta"), ("official-D-lower", "official-D-delta"),
              ("official-D-edge2edge", "official-D-edge2edge-sigma1"), ("repaint", "repaint-3x3"),
              ("paper-D-lower", "paper-D-disc-t-masked"), ("official-D-lower", "official-D-late-net"),
              ("paper-C", "paper-C-structure-repaint"), ("paper-D-lower", "paper-D-precomputed")]
    for a, b in pairs:
        assert EXPECTED[a]["sum"] != pytest.approx(EXPECTED[b]["sum"], rel=1e-5), (a, b)


def test_ablation_a_is_repaint():
    """Ablation A is RePaint* on the IR-SDE net (whatever the mode): the same numbers as 'repaint'."""
    assert EXPECTED["paper-A"] == EXPECTED["official-A"] == EXPECTED["repaint"]


# callback phase sequences: counts and the level sequence, "<phase initial><t>" per callback
PHASES: dict[str, dict] = {
    "repaint": {
        "counts": {"step": 19, "resample": 0, "undo": 9},
        "sequence": ("s9 s8 s7 u8 u9 u10 s9 s8 s7 s6 s5 s4 u5 u6 u7 s6 s5 s4 s3 s2 s1 u2 u3 u4 s3 s2 s1 s0")},
    "paper-D-lower": {
        "counts": {"step": 10, "resample": 32, "undo": 0},
        "sequence": ("r9 r9 s9 r8 r8 r8 r8 s8 r7 r7 s7 r6 r6 r6 s6 r5 r5 r5 r5 s5 r4 r4 r4 r4 s4 r3 s3 r2 r2 r2 "
                     "r2 s2 r1 r1 r1 r1 s1 r0 r0 r0 r0 s0")},
    "official-D-lower": {
        "counts": {"step": 10, "resample": 10, "undo": 0},
        "sequence": ("r9 r9 r9 s9 s8 r7 r7 r7 s7 s6 r5 r5 s5 s4 r3 r3 s3 s2 s1 s0")},
}


def phase_sequence(case: str) -> dict:
    seq: list[str] = []
    nfe: list[int] = []

    def cb(d):
        seq.append(f"{d['phase'][0]}{d['t']}")
        nfe.append(d["nfe"])

    r = run_case(case, cb)
    assert nfe == sorted(nfe) and nfe[-1] == r.nfe  # the callback's running count ends at the result's
    counts = {p: sum(s[0] == p[0] for s in seq) for p in ("step", "resample", "undo")}
    return {"counts": counts, "sequence": " ".join(seq)}


@pytest.mark.parametrize("case", sorted(PHASES))
def test_callback_phase_sequence(case):
    got = phase_sequence(case)
    assert got == PHASES[case]


def _print_expected() -> None:
    """Print EXPECTED and PHASES as they are written above (today's values)."""
    import textwrap

    def q(v):
        return repr(v).replace("'", '"')

    print("EXPECTED: dict[str, dict] = {")
    for case in CASES:
        d = measure(case)
        rows = [["sum", "mean", "y0_sum", "nfe"], [k for k in ("y0_sumsq", "x_sum", "tries", "accepted") if k in d]]
        body = ",\n        ".join(", ".join(f'"{k}": {q(d[k])}' for k in row) for row in rows if row)
        print(f'    "{case}": {{\n        {body}}},')
    print("}")
    print("PHASES: dict[str, dict] = {")
    for case in PHASES:
        v = phase_sequence(case)
        lines = textwrap.wrap(v["sequence"], 90, break_on_hyphens=False)
        seq = ("\n" + " " * 21).join(q(s + (" " if i < len(lines) - 1 else "")) for i, s in enumerate(lines))
        print(f'    "{case}": {{\n        "counts": {q(v["counts"])},\n        "sequence": ({seq})}},')
    print("}")


if __name__ == "__main__":
    _print_expected()
