"""Image modes: 16-bit, palette, gray, alpha and CMYK files decode to the 8-bit RGB picture a PIL user expects
(16-bit scaled by v/257, not clipped to white); unsupported or corrupt files give one line naming the file."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from strbench import data as D
from strbench import masks as MK
from strbench.errors import DataError

from helpers import write_png

RNG = np.random.default_rng(0)
U8 = (RNG.random((12, 16, 4)) * 255).round().astype(np.uint8)  # H 12, W 16


def rgb(path):
    return np.asarray(D.open_image(path, "RGB")).astype(np.int64)


def _one_line(e, *needles):
    msg = str(e.value)
    assert "\n" not in msg
    for n in needles:
        assert str(n) in msg, (n, msg)


@pytest.mark.parametrize("color_type, channels", [(0, 1), (2, 3), (4, 2), (6, 4)])
def test_16bit_png_is_the_same_picture_as_its_8bit_version(tmp_path, color_type, channels):
    src8 = U8[..., :channels]
    f8 = write_png(tmp_path / "a8.png", src8, color_type=color_type, bit_depth=8)
    f16 = write_png(tmp_path / "a16.png", src8.astype(np.uint16) * 257, color_type=color_type, bit_depth=16)
    assert np.abs(rgb(f16) - rgb(f8)).max() <= 1
    t8, t16 = D.load_image(f8, 16, "center_crop"), D.load_image(f16, 16, "center_crop")
    assert (t16 - t8).abs().max() <= 1 / 255 + 1e-7
    assert t16.mean() < 0.9  # not the all-white picture that clipping gives


@pytest.mark.parametrize("color_type, channels", [(0, 1), (2, 3)])
def test_16bit_values_are_scaled_not_clipped(tmp_path, color_type, channels):
    v = (RNG.random((12, 16, channels)) * 65535).round().astype(np.uint16)
    f = write_png(tmp_path / "r16.png", v, color_type=color_type, bit_depth=16)
    want = np.broadcast_to(np.round(v / 257.0), (12, 16, 3))
    assert np.abs(rgb(f) - want).max() <= 1
    if channels == 1:  # gray: exactly round(v * 255 / 65535)
        assert np.array_equal(rgb(f), want)


def test_palette_gray_and_alpha(tmp_path):
    pal = np.array([[0, 0, 0], [255, 0, 0], [0, 128, 255], [255, 255, 255]], np.uint8)
    idx = U8[..., 0] % 4
    p = write_png(tmp_path / "p.png", idx, color_type=3, bit_depth=8, palette=pal)
    pt = write_png(tmp_path / "pt.png", idx, color_type=3, bit_depth=8, palette=pal, trns=[255, 0, 128, 255])
    assert np.array_equal(rgb(p), pal[idx]) and np.array_equal(rgb(pt), pal[idx])  # transparency dropped
    gray = write_png(tmp_path / "g.png", U8[..., 0], color_type=0, bit_depth=8)
    la = write_png(tmp_path / "la.png", U8[..., :2], color_type=4, bit_depth=8)
    for f in (gray, la):
        assert np.array_equal(rgb(f), np.repeat(U8[..., :1], 3, axis=2))
    rgba = U8.copy()
    rgba[..., 3] = 0  # fully transparent: the stored colour is kept (alpha dropped, as convert("RGB") does)
    fa = write_png(tmp_path / "rgba.png", rgba, color_type=6, bit_depth=8)
    assert np.array_equal(rgb(fa), U8[..., :3])
    one = tmp_path / "one.png"
    Image.fromarray(U8[..., 0] > 127).save(one)
    assert set(np.unique(rgb(one))) == {0, 255}


def test_cmyk_jpeg_and_tiff(tmp_path):
    cmyk = np.zeros((8, 8, 4), np.uint8)
    cmyk[:, :4, 0] = 255  # cyan ink on the left half, paper white on the right
    for name in ("c.tif", "c.jpg"):
        f = tmp_path / name
        Image.fromarray(cmyk, mode="CMYK").save(f, quality=100)
        a = rgb(f)
        assert np.abs(a[:, 6] - [255, 255, 255]).max() <= 3 and np.abs(a[:, 1] - [0, 255, 255]).max() <= 3


@pytest.mark.parametrize("make", ["float", "int32"])
def test_unknown_range_modes_are_refused(tmp_path, make):
    f = tmp_path / f"{make}.tif"
    arr = RNG.random((8, 8)).astype(np.float32) if make == "float" else (RNG.random((8, 8)) * 1e6).astype(np.int32)
    Image.fromarray(arr).save(f)
    with pytest.raises(DataError) as e:
        D.load_image(f, 8)
    _one_line(e, f, "mode")


@pytest.mark.parametrize("lenient", [False, True])
def test_truncated_or_corrupt_jpeg_gives_one_line(tmp_path, lenient, monkeypatch):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.repeat(np.repeat(U8[..., :3], 8, 0), 8, 1)).save(good, quality=95)
    data = good.read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff" + bytes(RNG.integers(0, 256, 300, dtype=np.uint8)))
    (tmp_path / "text.jpg").write_bytes(b"not an image\n")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", lenient)  # some libraries set it globally
    for name in ("trunc.jpg", "junk.jpg", "text.jpg"):
        with pytest.raises(DataError) as e:
            D.load_image(tmp_path / name, 32)
        _one_line(e, tmp_path / name, "replace or remove")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is lenient  # restored
    assert D.load_image(good, 32).shape == (3, 32, 32)


def test_16bit_and_palette_masks(tmp_path):
    """16-bit masks are thresholded at the same gray level as 8-bit ones; palette masks by their colours."""
    hole = np.zeros((12, 16), bool)
    hole[3:9, 4:12] = True
    known = (~hole).astype(np.uint8)
    folder = tmp_path / "m"
    folder.mkdir()
    v16 = np.where(hole, 40000, 20000).astype(np.uint16)  # 8-bit 156 (white) and 78 (black): 20000 > 255 clips
    write_png(folder / "a16.png", v16, color_type=0, bit_depth=16)
    write_png(folder / "b_pal.png", hole.astype(np.uint8), color_type=3, bit_depth=8,
              palette=[[0, 0, 0], [255, 255, 255]])
    write_png(folder / "c_la.png", np.stack([hole * 255, np.full_like(hole, 7)], -1).astype(np.uint8),
              color_type=4, bit_depth=8)
    s = MK.load_mask_folder(folder, (12, 16), "white_is_hole")
    assert len(s) == 3
    for m in s.masks:
        assert torch.equal(m[0], torch.from_numpy(known).float())


def test_corrupt_mask_gives_one_line(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(DataError) as e:
        MK.load_mask_folder(folder, 16, "white_is_hole")
    _one_line(e, folder / "bad.png", "mask")
