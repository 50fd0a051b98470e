"""Datasets: the built-in photos split by source, folder layouts, resizing, and clear errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from strbench import data as D
from strbench.errors import ConfigError, DataError


def _png(path, h=20, w=30, value=None, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if value is None else np.full((h, w, 3), value, np.uint8)
    Image.fromarray(arr).save(path)
    return arr


# --- built-in ---------------------------------------------------------------------------------

def test_every_builtin_photo_loads_offline_as_rgb():
    for name, load in D.BUILTIN_PHOTOS.items():
        img = load()
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, name
        assert min(img.shape[:2]) >= 256, name


def test_builtin_split_by_source_photo_and_deterministic():
    tr, va, te = (D.builtin_dataset(32, s) for s in ("train", "val", "test"))
    assert set(tr.sources).isdisjoint(te.sources)
    assert set(tr.sources).isdisjoint(va.sources) and set(va.sources).isdisjoint(te.sources)
    assert set(te.sources) == set(D.BUILTIN_TEST_PHOTOS) and set(va.sources) == set(D.BUILTIN_VAL_PHOTOS)
    assert set(tr.sources) | set(va.sources) | set(te.sources) == set(D.BUILTIN_PHOTOS)
    assert len(tr) > 3 * len(te) > 0 and len(va) > 0
    x = tr[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    # no test patch equals a train patch (no pixel of a test photo seen in training)
    flat_tr = {bytes(p.numpy()) for p in tr.patches}
    assert not any(bytes(p.numpy()) in flat_tr for p in te.patches)
    # deterministic: rebuilt from scratch gives the same tensor
    a = te.patches.clone()
    D._builtin_patches.cache_clear()
    assert torch.equal(a, D.builtin_dataset(32, "test").patches)


def test_builtin_counts_and_limit():
    info = D.builtin_info(256)  # no flat patches at this size: counts follow from the photo sizes
    assert info["per_photo"]["astronaut"] == 5 and info["per_photo"]["coffee"] == 1
    assert (info["train"], info["val"], info["test"]) == (22, 1, 6)
    assert len(D.builtin_dataset(64, "test", limit=5)) == 5
    i64 = D.builtin_info(64)
    assert len(D.builtin_dataset(64, "all")) == i64["train"] + i64["val"] + i64["test"]


def test_builtin_accepts_the_config_dump():
    cfg = {"type": "builtin", "root": None, "size": 32, "resize": "resize",
           "splits": {"train": None, "val": None, "test": None}}  # config.DatasetCfg().model_dump()
    assert len(D.make_dataset(cfg, split="test")) == len(D.builtin_dataset(32, "test"))
    with pytest.raises(ConfigError, match="dataset.root"):
        D.make_dataset({**cfg, "root": "/data/psv"})


def test_builtin_patches_hold_content():
    te = D.builtin_dataset(64, "test").tensor()
    assert te.flatten(1).std(dim=1).min() >= D.BUILTIN_FLAT_STD - 1e-3


# --- folder -----------------------------------------------------------------------------------

def test_folder_dataset_tree_sorted_and_resized(tmp_path):
    a = _png(tmp_path / "train" / "b" / "img10.png", seed=1)
    _png(tmp_path / "train" / "b" / "img2.jpg", seed=2)
    _png(tmp_path / "train" / "a.bmp", seed=3)
    (tmp_path / "train" / "notes.txt").write_text("not an image")
    _png(tmp_path / "test" / "t.png", seed=4)
    ds = D.ImageFolderDataset(tmp_path, 16, "train")
    assert [p.name for p in ds.files] == ["a.bmp", "img2.jpg", "img10.png"]  # natural order
    x = ds[2]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
    full = D.ImageFolderDataset(tmp_path, 20, "train", resize="center_crop")[2]
    np.testing.assert_allclose(full.permute(1, 2, 0).numpy() * 255, a[:, 5:25], atol=1e-3)
    assert len(D.ImageFolderDataset(tmp_path, 16, "test")) == 1
    assert len(D.ImageFolderDataset(tmp_path, 16, "all")) == 4


def test_folder_flist_and_hash_split(tmp_path):
    for i in range(40):
        _png(tmp_path / f"{i:03d}.png", h=8, w=8, seed=i)
    tr, va, te = (D.ImageFolderDataset(tmp_path, 8, s) for s in ("train", "val", "test"))
    assert len(tr) + len(va) + len(te) == 40 and len(te) > 0 and len(va) > 0
    assert set(tr.files).isdisjoint(te.files) and set(va.files).isdisjoint(set(te.files) | set(tr.files))
    assert te.files == D.ImageFolderDataset(tmp_path, 8, "test").files
    (tmp_path / "test.txt").write_text("# held out\n001.png\n\n005.png\n")
    assert [p.name for p in D.ImageFolderDataset(tmp_path, 8, "test").files] == ["001.png", "005.png"]
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "mine.txt").write_text("002.png\n")
    cfg = {"type": "folder", "root": str(tmp_path), "size": 8, "splits": {"test": "lists/mine.txt"}}
    assert [p.name for p in D.make_dataset(cfg, split="test").files] == ["002.png"]  # config list wins
    with pytest.raises(DataError, match="dataset.splits.test"):
        D.make_dataset({**cfg, "splits": {"test": "lists/nope.txt"}}, split="test")
    (tmp_path / "test.txt").write_text("001.png\nmissing.png\n")
    with pytest.raises(DataError, match="missing.png"):
        D.ImageFolderDataset(tmp_path, 8, "test")


def test_random_crop_is_seeded_per_epoch(tmp_path):
    _png(tmp_path / "train" / "x.png", h=16, w=64)
    ds = D.ImageFolderDataset(tmp_path, 16, "train", resize="random_crop", seed=0)
    crops = []
    for e in range(6):
        ds.set_epoch(e)
        crops.append(ds[0])
    assert torch.equal(crops[0], (ds.set_epoch(0), ds[0])[1])
    assert any(not torch.equal(crops[0], c) for c in crops[1:])


def test_named_layouts(tmp_path):
    psv = tmp_path / "psv"
    for i in range(3):
        _png(psv / "paris_train_original" / f"{i}_im.png", h=20, w=35, seed=i)
    _png(psv / "paris_eval_gt" / "001_im.png", seed=9)
    assert len(D.make_dataset({"type": "psv", "root": str(psv), "size": 16})) == 3
    assert len(D.make_dataset({"type": "psv", "root": str(psv), "size": 16, "split": "test"})) == 1

    cel = tmp_path / "celeba"
    for i in range(1, 7):
        _png(cel / "img_align_celeba" / f"{i:06d}.jpg", h=22, w=18, seed=i)
    (cel / "list_eval_partition.txt").write_text(
        "000001.jpg 0\n000002.jpg 0\n000003.jpg 0\n000004.jpg 1\n000005.jpg 2\n000006.jpg 2\n")
    cfg = {"type": "celeba", "root": str(cel), "size": 16}
    assert [p.name for p in D.make_dataset(cfg, split="test").files] == ["000005.jpg", "000006.jpg"]
    assert len(D.make_dataset(cfg, split="train")) == 3 and len(D.make_dataset(cfg, split="val")) == 1

    hq = tmp_path / "hq"
    for i in range(30):
        _png(hq / "CelebA-HQ-img" / f"{i}.jpg", h=8, w=8, seed=i)
    te = D.make_dataset({"type": "celeba", "root": str(hq), "size": 8, "split": "test"})
    assert [p.name for p in te.files] == ["26.jpg", "27.jpg", "28.jpg", "29.jpg"]  # 26/30 | 4/30, natural order

    pl = tmp_path / "places"
    _png(pl / "data_256" / "a" / "airfield" / "00000001.jpg", seed=1)
    _png(pl / "val_256" / "Places365_val_00000001.jpg", seed=2)
    _png(pl / "val_256" / "Places365_val_00000002.jpg", seed=3)
    assert len(D.make_dataset({"type": "places2", "root": str(pl), "size": 16})) == 1
    assert len(D.make_dataset({"type": "places2", "root": str(pl), "size": 16, "split": "test", "limit": 1})) == 1
    with pytest.raises(DataError, match="paris_eval_gt"):
        D.make_dataset({"type": "psv", "root": str(pl), "size": 16, "split": "test"})


# --- errors -----------------------------------------------------------------------------------

def test_missing_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        D.make_dataset({"type": "folder", "root": str(tmp_path / "nope")})
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        D.ImageFolderDataset(tmp_path / "empty", 16, "train")


def test_unreadable_image_names_the_file(tmp_path):
    _png(tmp_path / "train" / "ok.png")
    (tmp_path / "train" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    ds = D.ImageFolderDataset(tmp_path, 16, "train")
    with pytest.raises(DataError, match="broken.jpg"):
        ds[0]


def test_config_errors():
    with pytest.raises(ConfigError, match="builtin"):
        D.make_dataset({"type": "imagenet"})
    with pytest.raises(ConfigError, match="dataset.colour"):
        D.make_dataset({"type": "builtin", "colour": True})
    with pytest.raises(ConfigError, match="dataset.root"):
        D.make_dataset({"type": "psv"})
    with pytest.raises(ConfigError, match="split"):
        D.make_dataset({"type": "builtin", "split": "dev"})
    with pytest.raises(ConfigError, match="size"):
        D.make_dataset({"type": "builtin", "size": 4})
    with pytest.raises(ConfigError, match="resize"):
        D.ImageFolderDataset(".", 16, "train", resize="stretch")


def test_val_is_carved_from_train_where_a_layout_has_none(tmp_path):
    """PSV has no validation split: `val` is a fixed hashed share of the training images, never a test image,
    and `train` leaves it out (tuning scores neither on test images nor on images it trained on)."""
    psv = tmp_path / "psv"
    for i in range(120):
        _png(psv / "paris_train_original" / f"{i:03d}_im.png", h=8, w=8, seed=i)
    _png(psv / "paris_eval_gt" / "001_im.png", seed=999)
    cfg = {"type": "psv", "root": str(psv), "size": 8}
    tr, va, te = (D.make_dataset(cfg, split=s) for s in ("train", "val", "test"))
    assert 0 < len(va) < 10 and len(tr) + len(va) == 120 and len(te) == 1
    assert set(va.files).isdisjoint(tr.files) and set(va.files).isdisjoint(te.files)
    assert va.files == D.make_dataset(cfg, split="val").files  # deterministic
    _png(tmp_path / "pl" / "data_256" / "x.jpg")  # one training image: no share left for val
    with pytest.raises(DataError, match="val split .* is empty"):
        D.make_dataset({"type": "places2", "root": str(tmp_path / "pl"), "size": 8, "split": "val"})
