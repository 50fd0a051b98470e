"""PSNR/SSIM protocols, bootstrap intervals and the Fig. 8 KL divergence (strbench.metrics); FID is in test_fid.py."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from strbench import metrics as M


def _images(b=3, size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(b, 3, 6, 6, generator=g), size=(size, size), mode="bilinear",
                                        align_corners=False)
    known = torch.ones(b, 1, size, size)
    known[:, :, size // 4: size // 2, size // 4: 3 * size // 4] = 0
    return x, known


def test_to_uint8_rounds_and_clips():
    x = torch.tensor([-0.2, 0.0, 0.5 / 255, 1.49 / 255, 1.51 / 255, 0.5, 1.0, 1.3]).view(1, 1, 1, -1)
    assert M.to_uint8(x).flatten().tolist() == [0, 0, 0, 1, 2, 128, 255, 255]


def test_psnr_matches_closed_form_on_uint8():
    gt, known = _images()
    pred = gt.clone()
    pred[:, :, 0, :] = (M.to_uint8(gt[:, :, 0, :]).float() + 10).clamp(max=255) / 255  # +10 grey levels, one row
    df = M.image_metrics(pred, gt, known, "skimage_default")
    g8, p8 = M.to_uint8(gt).double(), M.to_uint8(pred).double()
    for i in range(gt.shape[0]):
        mse = ((g8[i] - p8[i]) ** 2).mean().item()
        assert df.psnr[i] == pytest.approx(10 * math.log10(255 ** 2 / mse), rel=1e-12)


def test_ssim_identity_hole_ratio_and_record():
    gt, known = _images()
    df = M.image_metrics(gt, gt, known, "pennet")
    assert list(df.columns) == ["psnr", "ssim", "hole_ratio"]
    assert np.all(np.isinf(df.psnr)) and np.allclose(df.ssim, 1.0)
    assert np.allclose(df.hole_ratio, 1 - known.mean(dim=(1, 2, 3)).numpy())
    rec = df.attrs["protocol"]
    assert rec["name"] == "pennet" and rec["ssim"]["win_size"] == 47  # 48 px: largest odd window that fits
    assert rec["ssim"]["win_size_requested"] == 51 and rec["n_images"] == 3 and rec["image_size"] == [48, 48]
    assert "scikit-image" in rec["versions"]


def test_protocols_differ_and_unknown_raises():
    gt, known = _images(size=64)
    noisy = (gt + 0.1 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    ssim = {p: M.image_metrics(noisy, gt, known, p).ssim.to_numpy() for p in M.PROTOCOLS}
    assert M.image_metrics(noisy, gt, known, "pennet").attrs["protocol"]["ssim"] == {"win_size": 51}
    assert not np.allclose(ssim["pennet"], ssim["skimage_default"])
    assert not np.allclose(ssim["gaussian"], ssim["skimage_default"])
    psnr = {p: M.image_metrics(noisy, gt, known, p).psnr.to_numpy() for p in M.PROTOCOLS}
    assert np.allclose(psnr["pennet"], psnr["gaussian"])  # the protocols differ only in SSIM
    with pytest.raises(ValueError, match="unknown metric protocol"):
        M.image_metrics(noisy, gt, known, "pennett")
    with pytest.raises(ValueError):
        M.image_metrics(noisy[:, :1], gt[:, :1], known)


def test_bootstrap_ci_seeded_covers_mean_and_shrinks():
    rng = np.random.default_rng(0)
    small, large = rng.normal(10, 2, 20), rng.normal(10, 2, 500)
    lo, hi = M.bootstrap_ci(small, seed=3)
    assert (lo, hi) == M.bootstrap_ci(small, seed=3)
    assert lo < small.mean() < hi
    lo2, hi2 = M.bootstrap_ci(large)
    # width ~ 2 * 1.96 * sd / sqrt(n) for the mean
    assert hi2 - lo2 == pytest.approx(2 * 1.96 * large.std() / math.sqrt(500), rel=0.15)
    assert hi2 - lo2 < hi - lo
    assert all(math.isnan(v) for v in M.bootstrap_ci([1.0]))
    assert M.bootstrap_ci([1.0, np.inf, 3.0, 5.0], seed=0)[1] <= 5.0  # non-finite values dropped


def test_bootstrap_ci_coverage_monte_carlo():
    rng = np.random.default_rng(1)
    hits = 0
    for k in range(200):
        lo, hi = M.bootstrap_ci(rng.normal(0.0, 1.0, 40), n=400, seed=k)
        hits += lo <= 0.0 <= hi
    assert 0.88 <= hits / 200 <= 0.99


def test_kl_regions_zero_for_identical_and_closed_form():
    gt, known = _images()
    r = M.kl_regions(gt, gt, known)
    assert r == {"masked": pytest.approx(0.0, abs=1e-12), "unmasked": pytest.approx(0.0, abs=1e-12)}
    # state constant 0.5 in the hole, gt uniform over 4 bins there: KL(state || gt) = log 4 (eps -> 0)
    b, s = 1, 8
    known = torch.ones(b, 1, s, s)
    known[..., :4, :] = 0
    gt = torch.zeros(b, 1, s, s)
    gt[..., :4, :] = torch.tensor([0.1, 0.35, 0.6, 0.85]).repeat(8).view(4, 8)
    state = gt.clone()
    state[..., :4, :] = 0.6
    r = M.kl_regions(state, gt, known, bins=4, eps=1e-12)
    assert r["masked"] == pytest.approx(math.log(4), rel=1e-9) and r["unmasked"] == pytest.approx(0.0, abs=1e-9)
    assert r.protocol["direction"].startswith("KL(state")


def test_kl_direction_reference_and_empty_region():
    gt, known = _images()
    state = (gt * 0.5).clamp(0, 1)
    r = M.kl_regions(state, gt, known, bins=16)
    sel = np.broadcast_to(known.numpy() < 0.5, gt.shape)
    p, _ = np.histogram(state.numpy()[sel], bins=16, range=(0, 1))
    q, _ = np.histogram(gt.numpy()[sel], bins=16, range=(0, 1))
    eps = 1e-6
    assert r["masked"] == pytest.approx(entropy(p + eps, q + eps), rel=1e-9)
    assert r["masked"] > 0 and r["unmasked"] > 0
    whole = M.kl_regions(state, gt, known, bins=16, reference="image")
    assert whole["masked"] != pytest.approx(r["masked"])
    full = M.kl_regions(state, gt, torch.ones_like(known))
    assert full["masked"] is None and "empty masked region" in full.reasons["masked"]
    assert full["unmasked"] is not None
    with pytest.raises(ValueError):
        M.kl_regions(state, gt, known, reference="other")


def test_kid_subsets_adapt_to_small_sets():
    assert M.kid_subsets(10, 12) == (10, 1)
    assert M.kid_subsets(5000, 3000) == (1000, 100)
    assert M.kid_subsets(1000, 1000) == (1000, 1)


@pytest.mark.parametrize("n1,n2,d", [(10, 7, 64), (3, 40, 64), (100, 90, 64)])
def test_fid_low_rank_formula_equals_torch_fidelity(n1, n2, d):
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    g = torch.Generator().manual_seed(n1)
    a = torch.randn(n1, d, generator=g) * 2 + 1
    b = torch.randn(n2, d, generator=g) @ torch.randn(d, d, generator=g) * 0.3
    ref = fid_statistics_to_metric(fid_features_to_statistics(a.double()), fid_features_to_statistics(b.double()),
                                   verbose=False)["frechet_inception_distance"]
    assert M.fid_from_features(a, b) == pytest.approx(ref, rel=1e-6)
    assert M.fid_from_features(a, a) == pytest.approx(0.0, abs=1e-9)


# ----------------------------------------------------------------------------------------------- P-IDS / U-IDS
def _features(n, d, shift, seed):
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(n, d, generator=g)
    fake = torch.randn(n, d, generator=g) + shift
    return real, fake


def test_ids_separable_sets_give_zero():
    real, fake = _features(400, 8, 6.0, 0)  # far apart: one hyperplane separates them
    p_ids, u_ids = M.ids_from_features(real, fake)
    assert u_ids == 0.0 and p_ids == 0.0


def test_ids_same_distribution_gives_about_one_half():
    real, fake = _features(2000, 8, 0.0, 1)  # many pairs in few dimensions: the SVM can do no better than chance
    p_ids, u_ids = M.ids_from_features(real, fake)
    assert 0.4 < u_ids <= 0.5 and 0.4 < p_ids < 0.6
    p_mid, u_mid = M.ids_from_features(*_features(2000, 8, 0.3, 1))  # slightly apart: in between
    assert 0.05 < u_mid < u_ids - 0.05 and p_mid < p_ids


def test_ids_on_few_images_in_many_dimensions_is_zero_whatever_the_sets():
    """Why the tables say how many images IDS rests on: 30 pairs of 2048-d features from one distribution are
    still perfectly separable."""
    p_ids, u_ids = M.ids_from_features(*_features(30, 2048, 0.0, 2))
    assert u_ids == 0.0 and p_ids == 0.0


def test_ids_needs_paired_sets():
    with pytest.raises(ValueError, match="one shape"):
        M.ids_from_features(torch.zeros(4, 3), torch.zeros(5, 3))


def test_inception_metrics_names_ids_results_and_gives_reasons_without_weights(monkeypatch):
    from strbench import fid_weights as FW
    from strbench.errors import WeightsError

    def none(path=None):
        raise WeightsError("no FID weights: test")

    monkeypatch.delenv(FW.ENV_WEIGHTS, raising=False)
    monkeypatch.setattr(FW, "resolve_fid_weights", none)
    x, _ = _images(b=2, size=16)
    res = M.inception_metrics(x, x, which=("fid", "ids"))
    assert set(res) == {"fid", "p_ids", "u_ids"} and all(r.value is None and "test" in r.reason for r in res.values())
