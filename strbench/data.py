"""Image datasets: a user's folder (generic, Paris StreetView, CelebA, Places2) and the built-in photos.

Every dataset yields float tensors (3, size, size) in [0, 1], RGB. Build one with
``make_dataset({"type": ..., ...}, split=...)``; types: ``builtin``, ``folder``, ``psv``, ``celeba``,
``places2``; splits: ``train``, ``val``, ``test``, ``all``.

Folder layouts (``root`` is the folder the user gives; image files: .jpg .jpeg .png .bmp, any depth,
sorted by path with numbers in natural order). A split's file list (one image path per line, absolute
or relative to ``root``) overrides the layout: the config's ``splits: {train: ..., val: ..., test: ...}``
first, else ``root/<split>.txt`` or ``root/<split>.flist``::

    folder   root/train/..., root/test/..., root/val/...  -- a sub-folder per split, or
             root/...  -- no split folders: an image is "test" when int(sha1(relative path)[:8], 16)
             / 2**32 < test_fraction (default 0.1), else "train" (stable when files are added)
    psv      root/paris_train_original/*.png   train (14,900 images, 936x537)
             root/paris_eval_gt/*.png          test (100 images, 227x227)
    celeba   root/img_align_celeba/*.jpg with root/list_eval_partition.txt (or root/Eval/...):
             the official partition (0 train, 1 val, 2 test); otherwise root/CelebA-HQ-img/ (or
             celeba_hq/, CelebA-HQ/, or the images directly in root): natural-sorted, first 26/30
             train, last 4/30 test (CelebA-HQ's 30,000 images -> 26,000 / 4,000, as in the paper)
    places2  root/data_256/... or root/train/...   train
             root/val_256/...  or root/val/...     test

``val``: the layout's own validation images where it has them (CelebA partition 1, a val/ folder or
list); otherwise a fixed VAL_FRACTION (2%) of the training images, chosen by a hash
of each relative path and left out of ``train``, so tuning never scores on test images nor on images
it trained on. ``all`` is every image of the layout. ``resize``: "resize" (squash to size x size),
"center_crop" or "random_crop" (shorter side scaled to size, then a square crop; random crops are
drawn from (seed, epoch, index), see ``set_epoch``).

Built-in default (``type: builtin``): nine real photographs that ship inside scikit-image and
matplotlib and load offline (``BUILTIN_PHOTOS``). Each photo is shrunk so its shorter side is at most
512 px, then for k = 0, 1, 2, ... it is resized (Lanczos) to shorter side size * 2**k while that fits
and cut into non-overlapping size x size patches on a centred grid; near-flat patches (pixel std
< 0.02) are dropped. The split is by source photo, so no test pixel is seen in training: test =
astronaut, coffee (``BUILTIN_TEST_PHOTOS``); val = chelsea (``BUILTIN_VAL_PHOTOS``); train = rocket,
hubble_deep_field, immunohistochemistry, retina, motorcycle (left view), grace_hopper. Patches
(train / val / test): size 32 -> 1609 / 127 / 455; 64 -> 404 / 31 / 116; 128 -> 96 / 7 / 28;
256 -> 22 / 1 / 6 (``builtin_info(size)`` gives the counts per photo).
"""
from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from strbench.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
SPLITS = ("train", "test", "val", "all")
RESIZE_MODES = ("resize", "center_crop", "random_crop")


def natural_key(path: str):
    """Sort key of a path with its numbers in natural order ('img2' before 'img10')."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise ConfigError(f"dataset.size must be an integer >= 8 (pixels); got {size!r}")
    return int(size)


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    return split


# ----------------------------------------------------------------------------------------------
# File listing

def list_images(folder: Path) -> list[Path]:
    """Every image file under folder (any depth), sorted naturally by relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"dataset folder {folder} does not exist; set dataset.root to the dataset's folder")
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"dataset folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                        "set dataset.root to the folder that holds them")
    return sorted(files, key=lambda p: natural_key(str(p.relative_to(folder))))


def read_flist(flist: Path, root: Path) -> list[Path]:
    """Paths listed one per line (absolute, or relative to root); blank lines and '#' comments skipped."""
    lines = [ln.strip() for ln in Path(flist).read_text().splitlines()]
    files = [Path(ln) if Path(ln).is_absolute() else Path(root) / ln
             for ln in lines if ln and not ln.startswith("#")]
    if not files:
        raise DataError(f"file list {flist} lists no images; add one image path per line")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(f"file list {flist} names {len(missing)} missing file(s), e.g. {missing[0]}; "
                        "fix the list or the paths (relative paths are read from the dataset root)")
    return files


def _flist(root: Path, split: str) -> Path | None:
    for name in (f"{split}.txt", f"{split}.flist"):
        if (root / name).is_file():
            return root / name
    return None


def _first_dir(root: Path, names: Sequence[str], what: str) -> Path:
    for n in names:
        if (root / n).is_dir():
            return root / n
    raise DataError(f"{what}: none of {', '.join(n + '/' for n in names)} exists under {root}; "
                    "point dataset.root at the dataset's top folder (see strbench.data for the layout)")


def _hash_fraction(rel: str) -> float:
    return int(hashlib.sha1(rel.encode()).hexdigest()[:8], 16) / 2**32


VAL_FRACTION = 0.02  # share of the training images held out as `val` where a layout has no val split


def _rel(f: Path, root: Path) -> str:
    try:
        return str(f.relative_to(root))
    except ValueError:
        return str(f)


def _carve_val(train_files: list[Path], root: Path, split: str) -> list[Path]:
    """For layouts without their own validation split: `val` is a fixed, hashed VAL_FRACTION of the
    training images (stable when files are added), and `train` is the rest."""
    if split not in ("train", "val"):
        raise ValueError(split)
    val = {f for f in train_files if _hash_fraction("val:" + _rel(f, root)) < VAL_FRACTION}
    pick = [f for f in train_files if (f in val) == (split == "val")]
    if not pick:
        raise DataError(f"the {split} split of {root} is empty ({len(train_files)} training images); "
                        f"add {split}.txt or a {split}/ folder")
    return pick


def _layout_folder(root: Path, split: str, test_fraction: float = 0.1) -> list[Path]:
    if split == "all":
        return list_images(root)
    if split == "test":
        for name in ("test", "val"):
            if (root / name).is_dir():
                return list_images(root / name)
    elif (root / split).is_dir() and (split == "val" or (root / "val").is_dir()):
        return list_images(root / split)
    elif (root / "train").is_dir():  # no val/: val is carved from train/
        return _carve_val(list_images(root / "train"), root, split)
    if any((root / s).is_dir() for s in ("train", "test", "val")):
        raise DataError(f"dataset folder {root} has split folders but no {split}/ (nor {split}.txt); add it")
    files = list_images(root)
    test = [f for f in files if _hash_fraction(str(f.relative_to(root))) < test_fraction]
    if split == "test":
        if not test:
            raise DataError(f"the test split of {root} is empty (test_fraction={test_fraction}, "
                            f"{len(files)} images); add test.txt or a test/ folder")
        return test
    return _carve_val([f for f in files if f not in set(test)], root, split)


def _layout_psv(root: Path, split: str) -> list[Path]:
    if split == "all":
        return list_images(_first_dir(root, ("paris_train_original",), "Paris StreetView train")) + \
            _layout_psv(root, "test")
    if split == "test":
        return list_images(_first_dir(root, ("paris_eval_gt",), "Paris StreetView test"))
    return _carve_val(list_images(_first_dir(root, ("paris_train_original",), "Paris StreetView train")),
                      root, split)


CELEBA_DIRS = ("img_align_celeba", "CelebA-HQ-img", "celeba_hq", "CelebA-HQ")
CELEBA_PARTITION = {"train": ("0",), "val": ("1",), "test": ("2",), "all": ("0", "1", "2")}


def _layout_celeba(root: Path, split: str) -> list[Path]:
    img_dir = next((root / d for d in CELEBA_DIRS if (root / d).is_dir()), root)
    part = next((p for p in (root / "list_eval_partition.txt", root / "Eval" / "list_eval_partition.txt")
                 if p.is_file()), None)
    if img_dir.name == "img_align_celeba" and part is not None:
        want = CELEBA_PARTITION[split]
        names = [ln.split() for ln in part.read_text().splitlines() if ln.strip()]
        files = [img_dir / n for n, p in names if p in want]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise DataError(f"{part} names {len(missing)} image(s) missing from {img_dir}, e.g. {missing[0]}; "
                            "extract the whole img_align_celeba archive")
        return files
    files = list_images(img_dir)
    n_train = round(len(files) * 26 / 30)
    if split in ("train", "val"):
        return _carve_val(files[:n_train], root, split)
    return {"test": files[n_train:], "all": files}[split]


def _layout_places2(root: Path, split: str) -> list[Path]:
    """Places2's own val_256/ is the paper's test set; `val` is carved from the training images."""
    train = lambda: list_images(_first_dir(root, ("data_256", "train"), "Places2 train"))  # noqa: E731
    if split == "all":
        return train() + _layout_places2(root, "test")
    if split == "test":
        return list_images(_first_dir(root, ("val_256", "val"), "Places2 test"))
    return _carve_val(train(), root, split)


# layout name -> (root, split) -> files
LAYOUTS: dict[str, Callable[[Path, str], list[Path]]] = {
    "folder": _layout_folder,
    "psv": _layout_psv,
    "celeba": _layout_celeba,
    "places2": _layout_places2,
}


# ----------------------------------------------------------------------------------------------
# Loading and resizing

def _square(im, size: int, mode: str, rng: np.random.Generator | None):
    from PIL import Image
    if mode == "resize":
        return im.resize((size, size), Image.BICUBIC)
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.BICUBIC)
    if mode == "center_crop":
        x, y = (nw - size) // 2, (nh - size) // 2
    else:
        x, y = int(rng.integers(0, nw - size + 1)), int(rng.integers(0, nh - size + 1))
    return im.crop((x, y, x + size, y + size))


# Pillow modes and how `open_image` turns them into 8-bit RGB / L (the way PIL users expect):
#   RGB, L, 1, P, PA, LA, RGBA, RGBa, RGBX, CMYK, YCbCr: Pillow's own convert(); alpha is dropped (the colour
#     channels are kept as stored, as `Image.open(f).convert("RGB")` and torchvision's loader do); palettes
#     are expanded through RGBA; CMYK uses Pillow's naive (no ICC profile) conversion.
#   I;16, I;16L, I;16B, I;16N (16-bit gray), and I read from a PNG (older Pillow's 16-bit gray): scaled to 8 bit
#     by round(v * 255 / 65535) (= v / 257), not clipped at 255 (which turns every pixel white).
#   48/64-bit RGB(A) PNGs: Pillow itself keeps the high byte, floor(v / 256), less than 1/255 from v / 257.
#   Anything else (32-bit integer I from other formats, float F, LAB, HSV, I;16S ...): DataError (range unknown).
EIGHT_BIT_MODES = ("RGB", "L", "1", "P", "PA", "LA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _gray16_to_8(im):
    """16-bit gray Pillow image -> 8-bit L, round(v * 255 / 65535) in exact integer arithmetic."""
    from PIL import Image
    a = np.asarray(im).astype(np.int64)
    if a.min() < 0 or a.max() > 65535:
        raise ValueError(f"values {a.min()}..{a.max()} outside 0..65535")
    return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8), mode="L")


def _to_8bit(im, target: str, path):
    """A loaded Pillow image in any supported mode -> 8-bit `target` ("RGB" or "L"); see the table above."""
    mode = im.mode
    if mode in SIXTEEN_BIT_MODES or (mode == "I" and im.format == "PNG"):
        im = _gray16_to_8(im)
    elif mode in ("P", "PA"):
        im = im.convert("RGBA")  # palette (and its transparency) expanded; alpha dropped below
    elif mode not in EIGHT_BIT_MODES:
        raise DataError(f"image {path} has Pillow mode {mode!r} ({im.format or 'unknown'} file), whose value range "
                        "strbench cannot map to 8-bit RGB; save it as an 8- or 16-bit PNG or a JPEG")
    return im.copy() if im.mode == target else im.convert(target)  # a copy: the file's image is closed


def open_image(path, mode: str = "RGB"):
    """Decode one image file into an 8-bit Pillow image in `mode` ("RGB" for images, "L" for masks), fully
    loaded (a truncated or corrupt file fails here, whatever ImageFile.LOAD_TRUNCATED_IMAGES says); the one
    decoder of dataset images, mask files and the pre-flight. DataError (one line naming the file) otherwise."""
    from PIL import Image, ImageFile, UnidentifiedImageError
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L'; got {mode!r}")
    lenient, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with Image.open(path) as im:
            im.load()
            return _to_8bit(im, mode, path)
    except DataError:
        raise
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"cannot read image {path} ({reason}); replace or remove the file") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient


def load_image(path: Path, size: int, mode: str = "resize", rng: np.random.Generator | None = None) -> torch.Tensor:
    """One image file -> float tensor (3, size, size) in [0, 1] RGB (decoded by `open_image`); DataError naming
    an unreadable file."""
    arr = np.asarray(_square(open_image(path, "RGB"), size, mode, rng))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


class ImageFolderDataset(Dataset):
    """Images of a user's folder in a named layout (see module docstring); items (3, size, size) in [0, 1]."""

    def __init__(self, root, size: int, split: str = "train", layout: str | None = None,
                 resize: str = "resize", *, limit: int | None = None, seed: int = 0,
                 test_fraction: float = 0.1, split_files: dict | None = None):
        layout = layout or "folder"
        if layout not in LAYOUTS:
            raise ConfigError(f"dataset layout {layout!r} is not one of {', '.join(LAYOUTS)}")
        if resize not in RESIZE_MODES:
            raise ConfigError(f"dataset.resize {resize!r} is not one of {', '.join(RESIZE_MODES)}")
        if not 0.0 < float(test_fraction) < 1.0:
            raise ConfigError(f"dataset.test_fraction must be in (0, 1); got {test_fraction}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"limit must be a positive integer or null; got {limit!r}")
        self.root, self.size, self.split = Path(root), _check_size(size), _check_split(split)
        self.layout, self.resize, self.seed, self.epoch = layout, resize, int(seed), 0
        if not self.root.is_dir():
            raise DataError(f"dataset folder {self.root} does not exist; set dataset.root to the dataset's folder")
        given = (split_files or {}).get(split)
        flist = self.root / given if given else _flist(self.root, split)  # `/` keeps an absolute path
        if given and not flist.is_file():
            raise DataError(f"file list {flist} for the {split} split does not exist; fix dataset.splits.{split}")
        if flist is not None:
            files = read_flist(flist, self.root)
        elif layout == "folder":
            files = _layout_folder(self.root, split, float(test_fraction))
        else:
            files = LAYOUTS[layout](self.root, split)
        if not files:
            raise DataError(f"the {split} split of {self.root} ({layout} layout) is empty; "
                            "check dataset.root and the split")
        self.files = files[:limit] if limit else files

    def set_epoch(self, epoch: int) -> None:
        """Random crops are drawn from (seed, epoch, index): call once per epoch for fresh crops."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, self.epoch, int(i)]) if self.resize == "random_crop" else None
        return load_image(self.files[i], self.size, self.resize, rng)

    def describe(self) -> dict:
        return {"type": self.layout, "root": str(self.root), "split": self.split, "size": self.size,
                "resize": self.resize, "n_images": len(self)}


# ----------------------------------------------------------------------------------------------
# Built-in photographs (shipped with scikit-image and matplotlib; no download)

def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load():
        import skimage.data
        img = getattr(skimage.data, name)()
        return img[0] if isinstance(img, tuple) else img  # stereo_motorcycle -> (left, right, disparity)
    return load


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook
    from PIL import Image
    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        return np.asarray(im.convert("RGB"))


# name -> loader of an RGB uint8 photo. Only photographs that ship inside the packages (loaded without
# pooch/network); skimage.data.cat is chelsea again and the right stereo_motorcycle view is the same
# scene, so neither is used.
BUILTIN_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),                       # 512x512, skimage
    "coffee": _skimage("coffee"),                             # 400x600, skimage
    "chelsea": _skimage("chelsea"),                           # 300x451, skimage (cat)
    "rocket": _skimage("rocket"),                             # 427x640, skimage
    "hubble_deep_field": _skimage("hubble_deep_field"),       # 872x1000, skimage
    "immunohistochemistry": _skimage("immunohistochemistry"), # 512x512, skimage
    "retina": _skimage("retina"),                             # 1411x1411, skimage
    "motorcycle": _skimage("stereo_motorcycle"),              # 500x741, skimage (left view)
    "grace_hopper": _grace_hopper,                            # 600x512, matplotlib sample data
}
BUILTIN_TEST_PHOTOS = ("astronaut", "coffee")
BUILTIN_VAL_PHOTOS = ("chelsea",)  # for tuning (strbench tune), so that it never sees a test photo
BUILTIN_MAX_SIDE = 512      # photos are first shrunk so the shorter side is at most this
BUILTIN_FLAT_STD = 0.02     # patches with pixel std below this are dropped


def _patches_of(photo: np.ndarray, size: int) -> list[np.ndarray]:
    """Patch pyramid of one photo: shorter side size * 2**k (k = 0, 1, ...), centred non-overlapping grid."""
    from PIL import Image
    im = Image.fromarray(photo)
    w, h = im.size
    out = []
    m = size
    while m <= min(h, w, BUILTIN_MAX_SIDE):
        nw, nh = (round(w * m / h), m) if h <= w else (m, round(h * m / w))
        a = np.asarray(im.resize((nw, nh), Image.LANCZOS))
        ny, nx = nh // size, nw // size
        oy, ox = (nh - ny * size) // 2, (nw - nx * size) // 2
        for i in range(ny):
            for j in range(nx):
                p = a[oy + i * size: oy + (i + 1) * size, ox + j * size: ox + (j + 1) * size]
                if (p.astype(np.float32) / 255.0).std() >= BUILTIN_FLAT_STD:
                    out.append(p)
        m *= 2
    return out


@functools.lru_cache(maxsize=8)
def _builtin_patches(size: int) -> tuple[torch.Tensor, tuple[str, ...]]:
    """All built-in patches at this size: uint8 (N, 3, size, size) and the source photo of each."""
    patches, sources = [], []
    for name, load in BUILTIN_PHOTOS.items():
        ps = _patches_of(load(), size)
        patches += ps
        sources += [name] * len(ps)
    if not patches:
        raise DataError(f"the built-in photos give no {size}x{size} patches; use dataset.size <= {BUILTIN_MAX_SIDE}")
    arr = np.stack(patches).transpose(0, 3, 1, 2)
    t = torch.from_numpy(np.ascontiguousarray(arr))
    return t, tuple(sources)


def _split_photos(split: str) -> tuple[str, ...]:
    held_out = BUILTIN_TEST_PHOTOS + BUILTIN_VAL_PHOTOS
    train = tuple(n for n in BUILTIN_PHOTOS if n not in held_out)
    return {"train": train, "test": BUILTIN_TEST_PHOTOS, "val": BUILTIN_VAL_PHOTOS,
            "all": tuple(BUILTIN_PHOTOS)}[split]


class PatchDataset(Dataset):
    """Built-in patches of one split; items float (3, size, size) in [0, 1]; ``sources[i]`` names the photo."""

    def __init__(self, patches: torch.Tensor, sources: Sequence[str], size: int, split: str):
        self.patches, self.sources, self.size, self.split = patches, tuple(sources), size, split

    def __len__(self) -> int:
        return self.patches.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.patches[i].float().div(255.0)

    def tensor(self) -> torch.Tensor:
        """All items as one float tensor (N, 3, size, size)."""
        return self.patches.float().div(255.0)

    def describe(self) -> dict:
        return {"type": "builtin", "split": self.split, "size": self.size, "n_images": len(self),
                "photos": sorted(set(self.sources))}


def builtin_dataset(size: int, split: str = "train", *, limit: int | None = None) -> PatchDataset:
    """Patches of the built-in photos, split by source photo (test: BUILTIN_TEST_PHOTOS, val: BUILTIN_VAL_PHOTOS)."""
    size, split = _check_size(size), _check_split(split)
    all_patches, all_sources = _builtin_patches(size)
    keep = set(_split_photos(split))
    idx = [i for i, s in enumerate(all_sources) if s in keep][:limit or None]
    if not idx:
        raise DataError(f"the built-in {split} split has no {size}x{size} patches; use a smaller dataset.size")
    return PatchDataset(all_patches[idx], [all_sources[i] for i in idx], size, split)


def builtin_info(size: int) -> dict:
    """Patch counts of the built-in dataset at this size, per photo and per split."""
    _, sources = _builtin_patches(_check_size(size))
    per_photo = {n: sources.count(n) for n in BUILTIN_PHOTOS}
    return {"size": size, "test_photos": list(BUILTIN_TEST_PHOTOS), "val_photos": list(BUILTIN_VAL_PHOTOS),
            "per_photo": per_photo,
            **{split: sum(per_photo[n] for n in _split_photos(split)) for split in ("train", "val", "test")}}


# ----------------------------------------------------------------------------------------------
# Factory

_FOLDER_KEYS = {"type", "root", "size", "split", "resize", "splits", "limit", "seed"}
_DATASET_KEYS: dict[str, set[str]] = {
    # builtin patches are already size x size: `resize` has nothing to do; root/splits must be empty
    "builtin": {"type", "size", "split", "limit", "resize", "root", "splits"},
    "folder": _FOLDER_KEYS | {"test_fraction"},
    "psv": _FOLDER_KEYS,
    "celeba": _FOLDER_KEYS,
    "places2": _FOLDER_KEYS,
}
DEFAULT_SIZE = 32


def _make_builtin(cfg: dict) -> Dataset:
    if cfg.get("root") or any((cfg.get("splits") or {}).values()):
        raise ConfigError("dataset.root and dataset.splits are for folder datasets; dataset.type 'builtin' uses the "
                          "photos shipped with strbench's dependencies: remove them or set dataset.type")
    return builtin_dataset(cfg.get("size", DEFAULT_SIZE), cfg.get("split", "train"), limit=cfg.get("limit"))


def _make_folder(cfg: dict) -> Dataset:
    if not cfg.get("root"):
        raise ConfigError(f"dataset.root is required for dataset.type {cfg['type']!r}: the dataset's top folder")
    extra = {"test_fraction": cfg["test_fraction"]} if "test_fraction" in cfg else {}
    splits = cfg.get("splits") or {}
    if not isinstance(splits, dict) or set(splits) - set(SPLITS):
        raise ConfigError(f"dataset.splits must map split names ({', '.join(SPLITS)}) to file lists; got {splits!r}")
    return ImageFolderDataset(cfg["root"], cfg.get("size", DEFAULT_SIZE), cfg.get("split", "train"),
                              layout=cfg["type"], resize=cfg.get("resize", "resize"),
                              limit=cfg.get("limit"), seed=cfg.get("seed", 0), split_files=splits, **extra)


# dataset type -> constructor from a config dict
DATASETS: dict[str, Callable[[dict], Dataset]] = {
    "builtin": _make_builtin,
    "folder": _make_folder,
    "psv": _make_folder,
    "celeba": _make_folder,
    "places2": _make_folder,
}


def make_dataset(cfg: dict, **overrides) -> Dataset:
    """Dataset from a config dict keyed by ``type`` (builtin, folder, psv, celeba, places2).

    Keys: ``size`` (default 32), ``split`` (train/val/test/all, default train), ``limit`` (first N);
    folder types also ``root`` (required), ``resize``, ``splits`` ({split: file list}), ``seed``;
    ``folder`` also ``test_fraction``. (config.DatasetCfg dumps ``resize`` and empty ``root``/``splits``
    for ``builtin`` too: accepted there, since its patches are already square.)
    ``overrides`` replace keys of cfg (e.g. ``split="test"``).
    """
    cfg = {**cfg, **overrides}
    kind = cfg.get("type")
    if kind not in DATASETS:
        raise ConfigError(f"dataset.type {kind!r} is not one of {', '.join(DATASETS)}")
    unknown = sorted(set(cfg) - _DATASET_KEYS[kind])
    if unknown:
        raise ConfigError(f"unknown key(s) dataset.{', dataset.'.join(unknown)} for dataset.type {kind!r}; "
                          f"allowed: {', '.join(sorted(_DATASET_KEYS[kind]))}")
    return DATASETS[kind](cfg)
