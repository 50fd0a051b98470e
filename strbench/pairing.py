"""Evaluation pairs by file name (``masks.pairing: by_name``): each test image scored with its own masks.

Two layouts of the mask folder ``masks.path`` (README, Masks):

- **beside** (LaMa's evaluation sets, e.g. its thin / medium / thick ones): each test image ``name.png`` lies
  beside its masks ``name_mask000.png``, ``name_mask001.png``, ... in the same folder; the images come from
  that folder (the dataset's test split is not read).
- **named** (a mask folder whose files share the images' names): ``masks/foo.png`` (or ``masks/foo_mask000.png``,
  ...) is a mask of the test image ``foo.*`` of the dataset (``dataset.root``, its test split).

A file's name is its file name without the extension (in the *beside* layout: its path in the folder without
the extension, so subfolders pair within themselves); a mask's image name is its name less a trailing
``_mask<digits>``. LaMa's own sets (``bin/gen_mask_dataset.py``) name each crop ``name_crop000.png`` and its
mask ``name_crop000_mask000.png``. The folder is in the *beside* layout when some ``name_mask<digits>`` file
lies beside an image ``name`` (then every file not so named is an image); otherwise every file in it is a mask.
Every image needs a mask and every mask its image (a DataError naming the file otherwise). An image with k
masks gives k pairs, ordered by image (natural order) then by mask. Each pair's hole ratio comes from its own
mask at the run's size (read as `strbench.masks.read_mask` reads it), so a cell, one bin (lo, hi], scores the
pairs whose mask falls in that bin: the first ``per_bin`` of them in that order.
"""
from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from strbench.data import IMAGE_SUFFIXES, natural_key
from strbench.errors import DataError

MASK_NAME = re.compile(r"^(?P<image>.+)_mask\d+$")  # LaMa's name_mask000
BESIDE, NAMED = "beside", "named"
LAYOUT_TEXT = {BESIDE: "images beside their masks, LaMa's layout", NAMED: "masks named after the test images"}
FIX = ("put each image name.png beside its masks name_mask000.png, ... (LaMa's layout), or name each mask after "
       "its test image (masks/foo.png for foo.jpg)")


@dataclass(frozen=True)
class Pair:
    """One evaluation pair: an image file and one of its mask files, and how per_image.csv names them."""

    image: Path
    mask: Path
    image_id: str  # the image file, relative to its folder (masks.path, or the dataset's root)
    mask_id: str  # the mask file, relative to masks.path


@dataclass(frozen=True)
class Pairing:
    """Every pair of a mask folder, ordered by image then mask; ``layout`` is BESIDE or NAMED."""

    root: Path
    layout: str
    pairs: tuple

    @property
    def n_images(self) -> int:
        return len({p.image for p in self.pairs})


def image_name(mask_name: str) -> str:
    """The image a mask belongs to: 'foo_mask001' -> 'foo', 'foo' -> 'foo'."""
    m = MASK_NAME.match(mask_name)
    return m.group("image") if m else mask_name


def _rel(f: Path, root: Optional[Path]) -> str:
    try:
        return f.relative_to(root).as_posix() if root is not None else str(f)
    except ValueError:
        return str(f)


def list_folder(root) -> list[Path]:
    """The image files under the mask folder (any depth), natural order; DataError for a missing or empty one."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"masks.path: folder {root} does not exist; point masks.path at the folder of masks")
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"masks.path: folder {root} holds no images ({', '.join(IMAGE_SUFFIXES)}); {FIX}")
    return sorted(files, key=lambda p: natural_key(_rel(p, root)))


def _key(f: Path, root: Optional[Path]) -> str:
    """A file's name in the BESIDE layout: its path relative to the folder, without the extension (as LaMa's
    evaluation reader pairs them: a mask's image is its path up to the last _mask)."""
    return _rel(f.with_suffix(""), root)


def _split(files: Sequence[Path], root: Path) -> tuple[list[Path], list[Path]]:
    """(images, masks) of a folder in the BESIDE layout (some name_mask<digits> file lies beside an image `name`),
    else ([], every file)."""
    lama = [f for f in files if MASK_NAME.match(f.stem)]
    plain = [f for f in files if not MASK_NAME.match(f.stem)]
    names = {_key(f, root) for f in plain}
    if any(image_name(_key(m, root)) in names for m in lama):
        return plain, lama
    return [], list(files)


def layout_of(root) -> str:
    """BESIDE when some mask name_mask<digits> lies beside its image `name`, else NAMED (file names only)."""
    root = Path(root).expanduser()
    return BESIDE if _split(list_folder(root), root)[0] else NAMED


def _unique_names(images: Sequence[Path], name: Callable[[Path], str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in images:
        if name(f) in out:
            raise DataError(f"masks.path: two images share the name {name(f)!r} ({out[name(f)]} and {f}), so a mask "
                            "named after it has two images; pairing by name needs unique image names: rename one")
        out[name(f)] = f
    return out


def pair_by_name(root, images: Optional[Sequence] = None, image_root=None) -> Pairing:
    """Pair the mask folder's masks with their images by name (file names only, nothing decoded).

    ``images`` (and ``image_root``, for the ids): the dataset's test image files, used in the NAMED layout; None
    where the dataset has no files (the built-in photos). DataError (one line, naming the file and the fix) for a
    mask with no image, an image with no mask, or a folder in neither layout."""
    root = Path(root).expanduser()
    files = list_folder(root)
    imgs, masks = _split(files, root)
    if imgs:
        layout, image_root, name = BESIDE, root, (lambda f: _key(f, root))
        where = f"beside it in {root}"
    else:
        layout, name = NAMED, (lambda f: f.stem)
        if images is None:
            raise DataError(f"masks.path: {root} holds masks only ({len(files)} files, no image beside its masks) "
                            "and the dataset has no image files to pair them with (dataset.type builtin); "
                            f"{FIX}, with dataset.type folder and dataset.root at those images")
        image_root = Path(image_root) if image_root is not None else None
        imgs = sorted((Path(f) for f in images), key=lambda p: natural_key(_rel(p, image_root)))
        where = f"among the dataset's {len(imgs)} test images ({image_root or 'dataset.root'})"
    by_name = _unique_names(imgs, name)
    masks_of: dict[str, list[Path]] = {}
    orphans = []
    for m in masks:
        (masks_of.setdefault(image_name(name(m)), []) if image_name(name(m)) in by_name else orphans).append(m)
    if layout == NAMED and not masks_of:
        raise DataError(f"masks.path: none of the {len(masks)} masks in {root} (e.g. {masks[0].name}) shares a name "
                        f"with the dataset's {len(imgs)} test images (e.g. {imgs[0].name if imgs else 'none'}); "
                        f"{FIX}")
    if orphans:
        m = orphans[0]
        more = f" ({len(orphans)} such masks)" if len(orphans) > 1 else ""
        raise DataError(f"masks.path: mask {m} has no image named {image_name(m.stem)!r} {where}{more}; add the "
                        "image or remove the mask")
    lonely = [f for key, f in by_name.items() if key not in masks_of]
    if lonely:
        f = lonely[0]
        more = f" ({len(lonely)} such images)" if len(lonely) > 1 else ""
        want = f"{f.stem}_mask000.png beside it" if layout == BESIDE else f"{f.stem}.png (or {f.stem}_mask000.png)"
        drop = "remove the image" if layout == BESIDE else "leave it out of the test split (dataset.splits.test)"
        raise DataError(f"masks.path: image {f} has no mask in {root}{more}; add its mask ({want}) or {drop}")
    pairs = tuple(Pair(by_name[key], m, _rel(by_name[key], image_root), _rel(m, root))
                  for key in by_name for m in sorted(masks_of[key], key=lambda p: natural_key(_rel(p, root))))
    return Pairing(root=root, layout=layout, pairs=pairs)


@functools.lru_cache(maxsize=8)
def pair_ratios(pairing: Pairing, size: int, polarity: str) -> tuple:
    """Hole ratio of each pair's mask at size x size (holes / pixels, as `masks.hole_ratio`), memoised."""
    from strbench.masks import read_mask

    out = []
    for p in pairing.pairs:
        known = read_mask(p.mask, size, size, polarity)
        out.append((known.size - int(known.sum())) / known.size)
    return tuple(out)


def in_bin_indices(ratios: Sequence[float], lo: float, hi: float, n: Optional[int] = None) -> list[int]:
    """Positions of the pairs whose ratio lies in (lo, hi], the first n of them (all when n is None)."""
    from strbench.masks import in_bin

    idx = [i for i, r in enumerate(ratios) if in_bin(r, lo, hi)]
    return idx if n is None else idx[:n]


def eval_resize(resize: str) -> str:
    """Evaluation never random-crops (as the dataset's test split): random_crop -> center_crop."""
    return "center_crop" if resize == "random_crop" else resize


@dataclass(frozen=True)
class PairedBin:
    """The pairs of one bin, loaded: images (n, 3, H, W) in [0, 1], known masks (n, 1, H, W), their ids."""

    images: object
    known: object
    image_ids: list
    mask_ids: list
    ratios: list


def paired_bin(path, polarity: str, lo: float, hi: float, per_bin: int, size: int, *, resize: str = "resize",
               dataset: Optional[Callable[[], object]] = None, label: str = "") -> PairedBin:
    """The first per_bin pairs of the mask folder whose mask's hole ratio lies in (lo, hi], loaded at size.
    ``dataset()``: the dataset's test split (an object with ``.files`` and ``.root``), asked for only in the NAMED
    layout; None or an object without files (the built-in photos) where there is none."""
    import numpy as np
    import torch

    from strbench.data import load_image
    from strbench.masks import read_mask

    images = image_root = None
    if layout_of(path) == NAMED and dataset is not None:
        ds = dataset()
        images, image_root = getattr(ds, "files", None), getattr(ds, "root", None)
    pairing = pair_by_name(path, images, image_root)
    ratios = pair_ratios(pairing, int(size), polarity)
    idx = in_bin_indices(ratios, lo, hi, int(per_bin))
    if not idx:
        raise DataError(f"masks.path: no mask of the {len(ratios)} image-mask pairs in {path} has a hole ratio in "
                        f"{label or f'({lo}, {hi}]'}; change masks.bins (e.g. [[0, 1]]: one cell over the whole set) "
                        f"or check masks.polarity ({polarity})")
    pairs = [pairing.pairs[i] for i in idx]
    imgs = torch.stack([load_image(p.image, int(size), eval_resize(resize)) for p in pairs]).float()
    known = torch.from_numpy(np.stack([read_mask(p.mask, int(size), int(size), polarity) for p in pairs])[:, None])
    return PairedBin(images=imgs, known=known.float(), image_ids=[p.image_id for p in pairs],
                     mask_ids=[p.mask_id for p in pairs], ratios=[ratios[i] for i in idx])


_DIGESTS: dict = {}


def folder_digest(path) -> str:
    """sha256 of the mask folder's content: every image file's relative path and bytes (memoised per path, size
    and mtime of each file), so a cell's identity changes when a mask or an image beside it does."""
    root = Path(path).expanduser()
    files = list_folder(root)
    stats = tuple((_rel(f, root), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    key = (str(root.resolve()), stats)
    if key not in _DIGESTS:
        h = hashlib.sha256(b"strbench-mask-folder-v1\n")
        for (rel, _, _), f in zip(stats, files):
            with open(f, "rb") as fh:
                h.update(f"{rel}\0{hashlib.file_digest(fh, 'sha256').hexdigest()}\n".encode())
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]
