"""Masks: convention, generator bins, polarity, mask sets and the folder loader (docs/SCIENCE.md#masks)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from strbench import masks as M
from strbench.errors import DataError


def test_hole_ratio_is_one_minus_mean_known():
    known = torch.ones(2, 1, 4, 5)
    known[0, 0, :2] = 0          # 10 of 20 pixels are holes
    known[1, 0, 0, 0] = 0        # 1 of 20
    np.testing.assert_allclose(M.hole_ratio(known).numpy(), [0.5, 0.05])
    with pytest.raises(ValueError):
        M.hole_ratio(torch.ones(1, 3, 4, 4))


def test_bins_are_half_open():
    assert not M.in_bin(0.1, 0.1, 0.2) and M.in_bin(0.2, 0.1, 0.2)
    assert M.in_bin(0.1000001, 0.1, 0.2) and not M.in_bin(0.2000001, 0.1, 0.2)
    assert M.bin_of(0.1) == "0-10%" and M.bin_of(0.2) == "10-20%" and M.bin_of(0.0) is None
    assert M.bin_of(0.65) is None
    assert M.bin_label(0.1, 0.2) == "10-20%" and M.bin_label(0.05, 0.1) == "5-10%"
    assert M.make_bins([0, 0.1, 0.2]) == ((0.0, 0.1), (0.1, 0.2))
    r = torch.tensor([0.1, 0.15, 0.2, 0.25])
    assert M.in_bin(r, 0.1, 0.2).tolist() == [False, True, True, False]
    with pytest.raises(ValueError):
        M.make_bins([0.2, 0.1])


def test_count_range_is_exact_at_integer_edges():
    # 0.5 * 64 = 32 exactly: 32 holes are in (0.4, 0.5], not in (0.5, 0.6]
    assert M._count_range(0.5, 0.6, 64)[0] == 33
    assert M._count_range(0.4, 0.5, 64)[1] == 32


@pytest.mark.parametrize("lo,hi", M.DEFAULT_BINS)
def test_generator_hits_each_bin_for_100_seeds(lo, hi):
    for seed in range(100):
        family = M.FAMILY_NAMES[seed % 3]
        known = M.generate_mask(32, seed, family, (lo, hi))
        assert known.dtype == np.uint8 and known.shape == (32, 32)
        assert set(np.unique(known)) <= {0, 1}
        r = M.hole_ratio(torch.from_numpy(known)[None, None].float())[0].item()
        assert M.in_bin(r, lo, hi), (seed, family, r)


def test_generator_spreads_inside_the_bin_and_is_seeded():
    rs = [1 - M.generate_mask(64, s, "medium", (0.2, 0.4)).mean() for s in range(40)]
    assert min(rs) < 0.25 and max(rs) > 0.35  # uniform target, not piled at an edge
    a = M.generate_mask(64, 7, "thick", (0.3, 0.4))
    assert np.array_equal(a, M.generate_mask(64, 7, "thick", (0.3, 0.4)))
    assert not np.array_equal(a, M.generate_mask(64, 8, "thick", (0.3, 0.4)))


def test_generator_without_bin_and_families_differ():
    thin = np.mean([1 - M.generate_mask(64, s, "thin").mean() for s in range(10)])
    thick = np.mean([1 - M.generate_mask(64, s, "thick").mean() for s in range(10)])
    assert 0 < thin < 1 and 0 < thick < 1
    with pytest.raises(ValueError, match="thin"):
        M.generate_mask(32, 0, "huge")
    with pytest.raises(ValueError):
        M.generate_mask(32, 0, "thin", (0.5, 0.4))


def test_random_masks_pool_is_deterministic_and_in_range():
    a = M.random_masks(20, 32, seed=1, ratio_range=(0.05, 0.6))
    assert a.shape == (20, 1, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, M.random_masks(20, 32, seed=1, ratio_range=(0.05, 0.6)))
    assert not torch.equal(a, M.random_masks(20, 32, seed=2))
    r = M.hole_ratio(a)
    assert bool(M.in_bin(r, 0.05, 0.6).all())


@pytest.mark.parametrize("polarity", list(M.POLARITIES))
def test_polarity_round_trip(polarity):
    known = M.generate_mask(32, 3, "medium", (0.2, 0.3))
    px = M.pixels_from_known(known, polarity)
    assert set(np.unique(px)) <= {0, 255}
    assert np.array_equal(M.known_from_pixels(px, polarity), known)
    other = "white_is_known" if polarity == "white_is_hole" else "white_is_hole"
    assert np.array_equal(M.known_from_pixels(px, other), 1 - known)


def test_strbench_writes_white_as_hole():
    known = np.ones((4, 4), np.uint8)
    known[0, 0] = 0
    px = M.pixels_from_known(known, "white_is_hole")
    assert px[0, 0] == 255 and px[1, 1] == 0
    with pytest.raises(DataError, match="white_is_hole"):
        M.known_from_pixels(px, "black_is_hole")


def test_mask_set_manifest_hash_deterministic_and_loads_back(tmp_path):
    bins = ((0.0, 0.1), (0.3, 0.4))
    a = M.build_mask_set(tmp_path / "a", 32, bins, per_bin=4, seed=5, families=("thin", "thick"))
    b = M.build_mask_set(tmp_path / "b", 32, bins, per_bin=4, seed=5, families=("thin", "thick"))
    c = M.build_mask_set(tmp_path / "c", 32, bins, per_bin=4, seed=6, families=("thin", "thick"))
    assert a.hash == b.hash != c.hash and len(a) == 8
    ma = json.loads((tmp_path / "a" / "manifest.json").read_text())
    mb = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert ma == mb and ma["hash"] == a.hash and len(ma["masks"]) == 8
    assert {"file", "ratio", "bin", "family", "seed"} <= set(ma["masks"][0])
    assert [m["bin"] for m in ma["masks"]] == ["0-10%"] * 4 + ["30-40%"] * 4
    assert [m["family"] for m in ma["masks"][:2]] == ["thin", "thick"]
    for m in ma["masks"]:
        lo, hi = bins[0] if m["bin"] == "0-10%" else bins[1]
        assert M.in_bin(m["ratio"], lo, hi)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp folder left
    # on disk white = hole: the loader with white_is_hole gives back the same content
    back = M.load_mask_folder(tmp_path / "a", 32, "white_is_hole")
    assert back.hash == a.hash and torch.equal(back.masks, a.masks)
    assert back.bin_of == a.bin_of
    # rebuilding in place is a no-op; a different set in the same folder is refused
    assert M.build_mask_set(tmp_path / "a", 32, bins, per_bin=4, seed=5, families=("thin", "thick")).hash == a.hash
    with pytest.raises(DataError, match="different mask set"):
        M.build_mask_set(tmp_path / "a", 32, bins, per_bin=4, seed=6, families=("thin", "thick"))


def test_select_uses_pixel_ratios():
    masks = torch.ones(3, 1, 10, 10)
    masks[0, 0, :1] = 0   # 0.1
    masks[1, 0, :2] = 0   # 0.2
    masks[2, 0, :3] = 0   # 0.3
    r = M.hole_ratio(masks)
    s = M.MaskSet(masks, r, tuple(M.bin_of(float(x)) for x in r), M.content_hash(masks))
    sub = s.select(0.1, 0.3)
    assert len(sub) == 2 and sub.bin_of == ("10-20%", "20-30%")
    assert sub.hash == M.content_hash(masks[1:]) != s.hash


def _write(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_loader_resizes_nearest_and_stays_binary(tmp_path):
    big = np.zeros((64, 64), np.uint8)
    big[:, :16] = 255                              # white quarter
    big[40:44, 40:44] = 200                        # > 127 counts as white
    big[50:54, 50:54] = 100                        # <= 127 counts as black
    _write(tmp_path / "m" / "x.png", big)
    s = M.load_mask_folder(tmp_path / "m", 32, polarity="white_is_hole")
    assert s.masks.shape == (1, 1, 32, 32)
    assert set(s.masks.unique().tolist()) == {0.0, 1.0}
    assert s.masks[0, 0, :, :8].sum() == 0 and s.masks[0, 0, 20:22, 20:22].sum() == 0
    np.testing.assert_allclose(s.ratios.item(), (32 * 8 + 4) / 1024)
    inv = M.load_mask_folder(tmp_path / "m", 32, polarity="white_is_known")
    assert torch.equal(inv.masks, 1 - s.masks)


def test_loader_rebins_and_filters(tmp_path):
    for i, rows in enumerate([3, 10, 30]):             # ratios 3/32, 10/32, 30/32
        a = np.zeros((32, 32), np.uint8)
        a[:rows] = 255
        _write(tmp_path / "m" / f"{i}.png", a)
    s = M.load_mask_folder(tmp_path / "m", 32, "white_is_hole")
    assert s.bin_of == ("0-10%", "30-40%", None) and s.files == ("0.png", "1.png", "2.png")
    f = M.load_mask_folder(tmp_path / "m", 32, "white_is_hole", bins=M.DEFAULT_BINS)
    assert len(f) == 2 and f.files == ("0.png", "1.png")
    a = np.zeros((32, 32), np.uint8)
    a[:2] = 255
    _write(tmp_path / "m" / "3.png", a)                  # a second 0-10% mask
    g = M.load_mask_folder(tmp_path / "m", 32, "white_is_hole", bins=[(0.0, 0.1)], per_bin=1)
    assert g.files == ("0.png",)
    with pytest.raises(ValueError):
        M.load_mask_folder(tmp_path / "m", 32, "white_is_hole", per_bin=1)
    with pytest.raises(DataError, match="polarity"):
        M.load_mask_folder(tmp_path / "m", 32, "white_is_hole", bins=[(0.6, 0.9)])


def test_loader_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        M.load_mask_folder(tmp_path / "nope", 32, "white_is_hole")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no mask images"):
        M.load_mask_folder(tmp_path / "empty", 32, "white_is_hole")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        M.load_mask_folder(tmp_path / "bad", 32, "white_is_hole")
    _write(tmp_path / "wide" / "w.png", np.zeros((32, 64), np.uint8))
    with pytest.raises(DataError, match="aspect ratio"):
        M.load_mask_folder(tmp_path / "wide", 32, "white_is_hole")
    with pytest.raises(DataError, match="polarity"):
        M.load_mask_folder(tmp_path / "wide", 32, "auto")
    with pytest.raises(TypeError):
        M.load_mask_folder(tmp_path / "wide", 32)  # polarity has no default
