"""Structure maps and variants (docs/SCIENCE.md#structure-maps, #variants, paper Sec. 3.4.1)."""
import numpy as np
import pytest
import torch
from skimage.color import rgb2gray
from skimage.feature import canny

from strbench import structure as S


def _image(b=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(b, 3, size, size, generator=g) * 0.2
    img[:, :, size // 4: 3 * size // 4, size // 4: 3 * size // 4] += 0.7  # a bright square: edges
    return img.clamp(0, 1)


def _known(b=2, size=32):
    k = torch.ones(b, 1, size, size)
    k[:, :, :, size // 2:] = 0
    return k


def test_gray_matches_skimage_rgb2gray():
    img = _image()
    got = S.gray(img)
    assert got.shape == (2, 1, 32, 32) and got.dtype == img.dtype
    for b in range(2):
        ref = rgb2gray(img[b].permute(1, 2, 0).double().numpy())
        np.testing.assert_allclose(got[b, 0].numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("sigma", [2.0, 3.0])
def test_edge_matches_skimage_canny_and_is_binary(sigma):
    img = _image()
    got = S.edge(img, sigma=sigma)
    assert got.shape == (2, 1, 32, 32)
    assert set(got.unique().tolist()) <= {0.0, 1.0} and got.sum() > 0
    ref = canny(rgb2gray(img[0].permute(1, 2, 0).double().numpy()), sigma=sigma)
    np.testing.assert_array_equal(got[0, 0].numpy().astype(bool), ref)


def test_edge_sigma_changes_the_map():
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(S.edge(img, 1.0), S.edge(img, 3.0))


def test_gray2edge_is_gray_and_masked_edge():
    img, known = _image(), _known()
    x0, mu = S.structure_states("gray2edge", img, known, canny_sigma=2.0)
    assert torch.equal(x0, S.gray(img))
    assert torch.equal(mu, S.edge(img, 2.0) * known)
    assert mu[..., 16:].abs().sum() == 0 and mu[..., :16].sum() > 0


@pytest.mark.parametrize("variant,a,b", [("gray2gray", "gray", "gray"), ("edge2edge", "edge", "edge"),
                                         ("edge2gray", "edge", "gray"), ("gray2edge", "gray", "edge")])
def test_all_variants(variant, a, b):
    img, known = _image(), _known()
    maps = {"gray": S.gray(img), "edge": S.edge(img, 3.0)}
    x0, mu = S.structure_states(variant, img, known)
    assert x0.shape == mu.shape == (2, 1, 32, 32)
    assert torch.equal(x0, maps[a]) and torch.equal(mu, maps[b] * known)
    assert set(S.VARIANTS) == set(S.VARIANT_MAPS)


def test_dtype_preserved():
    img = _image().double()
    x0, mu = S.structure_states("gray2edge", img, _known().double())
    assert x0.dtype == mu.dtype == torch.float64


def test_unknown_variant_names_valid_ones():
    with pytest.raises(ValueError, match="gray2edge"):
        S.structure_states("edge2rgb", _image(), _known())


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        S.gray(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="known"):
        S.structure_states("gray2gray", _image(), torch.ones(2, 1, 16, 16))
