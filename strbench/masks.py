"""Inpainting masks: one convention, a seeded irregular-mask generator, hole-ratio bins, mask sets.

Convention (docs/SCIENCE.md#masks): in memory a mask is ``known`` = 1 on known pixels and 0 in holes (the
paper's M); ``hole_ratio = 1 - mean(known)``. On disk strbench writes masks as 8-bit grayscale PNGs
with **white (255) = hole, black (0) = known** (how EdgeConnect and many later papers read Liu et
al.'s NVIDIA irregular masks). A user's folder is read with an explicit ``polarity``
("white_is_hole" or "white_is_known"), never guessed. Reports on the NVIDIA sets disagree (the
12,000-mask testing set is read white-is-hole by EdgeConnect; its raw training masks and some
downloads show holes in black), so open one file and check: the holes are the irregular strokes,
and the testing set's hole ratios lie in (0, 0.6]; ratios mostly above 0.5 mean the polarity is flipped.

Bins of hole ratio are half-open ``(lo, hi]``: a mask with ratio exactly 0.1 is in "0-10%".

The generator draws free-form brush strokes (chains of thick line segments with round caps, after
LaMa's irregular masks) and boxes, in three families ``thin``/``medium``/``thick`` whose lengths and
widths are given at 256 px and scale with the mask size. With ``ratio_bin=(lo, hi)`` it draws a
target hole count uniformly among the counts inside the bin, lays boxes that fit under it, then
strokes until the count is reached exactly; the last segment is cut where the target is met. The
ratio therefore always lies inside the bin, for every seed.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from strbench.errors import DataError

# ----------------------------------------------------------------------------------------------
# Hole ratio and bins

DEFAULT_BINS: tuple[tuple[float, float], ...] = tuple(
    (round(0.1 * i, 10), round(0.1 * (i + 1), 10)) for i in range(6))  # (0, .1], ..., (.5, .6]


def hole_ratio(known: torch.Tensor) -> torch.Tensor:
    """Hole ratio per mask, Tensor[B] float64: 1 - mean(known) over (1, H, W) (docs/SCIENCE.md#masks).

    Computed as sum(1 - known) / (H W) so that a binary mask gives the correctly rounded holes / pixels
    (1 - 0.7 would be 0.30000000000000004 and land in the wrong half-open bin).
    """
    if known.dim() != 4 or known.shape[1] != 1:
        raise ValueError(f"known must be (B, 1, H, W); got {tuple(known.shape)}")
    flat = known.flatten(1).to(torch.float64)
    return (1.0 - flat).sum(dim=1) / flat.shape[1]


def in_bin(r, lo: float, hi: float):
    """Half-open bin membership lo < r <= hi (works on floats, numpy arrays and tensors)."""
    return (r > lo) & (r <= hi)


def bin_label(lo: float, hi: float) -> str:
    """Display label of the bin (lo, hi], e.g. (0.1, 0.2) -> "10-20%"."""
    return f"{lo * 100:g}-{hi * 100:g}%"


def make_bins(edges: Sequence[float]) -> tuple[tuple[float, float], ...]:
    """Consecutive half-open bins from increasing edges in [0, 1], e.g. [0, .1, .2] -> ((0, .1), (.1, .2))."""
    edges = [float(e) for e in edges]
    if len(edges) < 2 or any(not (0.0 <= e <= 1.0) for e in edges) \
            or any(a >= b for a, b in zip(edges, edges[1:])):
        raise ValueError(f"bin edges must increase within [0, 1]; got {edges}")
    return tuple(zip(edges[:-1], edges[1:]))


def _check_bins(bins: Iterable[Sequence[float]]) -> tuple[tuple[float, float], ...]:
    out = []
    for b in bins:
        if len(b) != 2 or not (0.0 <= float(b[0]) < float(b[1]) <= 1.0):
            raise ValueError(f"a hole-ratio bin must be (lo, hi) with 0 <= lo < hi <= 1; got {b}")
        out.append((float(b[0]), float(b[1])))
    if not out:
        raise ValueError("at least one hole-ratio bin is needed")
    return tuple(out)


def bin_of(r: float, bins: Sequence[tuple[float, float]] = DEFAULT_BINS) -> str | None:
    """Label of the first bin holding ratio r, or None when r is in none of them."""
    for lo, hi in bins:
        if in_bin(r, lo, hi):
            return bin_label(lo, hi)
    return None


def _count_range(lo: float, hi: float, n: int) -> tuple[int, int]:
    """Smallest and largest hole counts c with lo < c / n <= hi (exact float64 comparisons)."""
    c_lo = max(0, math.floor(lo * n))
    while c_lo / n <= lo:
        c_lo += 1
    while c_lo > 0 and (c_lo - 1) / n > lo:
        c_lo -= 1
    c_hi = min(n, math.floor(hi * n) + 1)
    while c_hi / n > hi:
        c_hi -= 1
    return c_lo, c_hi


# ----------------------------------------------------------------------------------------------
# Procedural generator (free-form strokes + boxes)

@dataclass(frozen=True)
class MaskFamily:
    """Stroke and box parameters at 256 px (scaled by size / 256); after LaMa's thin/medium/thick."""
    max_len: float       # segment length 10 + U[0, max_len)
    max_width: float     # brush width 5 + U[0, max_width)
    max_angle: float     # turn per segment in radians, U[0, max_angle)
    min_strokes: int     # strokes when no ratio bin is requested
    max_strokes: int
    box_proba: float     # chance of drawing boxes at all
    box_min: float       # box side U[box_min, box_max]
    box_max: float
    max_boxes: int


FAMILIES: dict[str, MaskFamily] = {
    "thin": MaskFamily(max_len=40, max_width=10, max_angle=4.0, min_strokes=4, max_strokes=50,
                       box_proba=0.0, box_min=10, box_max=30, max_boxes=0),
    "medium": MaskFamily(max_len=100, max_width=50, max_angle=4.0, min_strokes=2, max_strokes=5,
                         box_proba=0.3, box_min=10, box_max=50, max_boxes=3),
    "thick": MaskFamily(max_len=200, max_width=100, max_angle=4.0, min_strokes=1, max_strokes=5,
                        box_proba=0.5, box_min=30, box_max=150, max_boxes=3),
}
FAMILY_NAMES = tuple(FAMILIES)
_MAX_SEGMENTS = 200_000


def _hw(size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if int(h) < 4 or int(w) < 4:
        raise ValueError(f"mask size must be at least 4 px; got {size}")
    return int(h), int(w)


def mask_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed derived from (seed, keys) (numpy SeedSequence), stored in manifests."""
    return int(np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(1)[0])


class _Canvas:
    """Boolean hole map with a running count; strokes can stop at an exact target count."""

    def __init__(self, h: int, w: int, target: int | None):
        self.hole = np.zeros((h, w), dtype=bool)
        self.count = 0
        self.target = target  # None: no limit

    @property
    def need(self) -> float:
        return math.inf if self.target is None else self.target - self.count

    def box(self, y0: int, x0: int, bh: int, bw: int) -> None:
        win = self.hole[y0:y0 + bh, x0:x0 + bw]
        new = win.size - int(win.sum())
        if new <= self.need:  # a box that would overshoot the target is skipped
            win[...] = True
            self.count += new

    def segment(self, p0: np.ndarray, p1: np.ndarray, width: float) -> None:
        """Capsule of the given width from p0 to p1, cut short where the target count is reached."""
        h, w = self.hole.shape
        d = p1 - p0
        length = float(np.hypot(*d))
        d = d / length if length > 0 else np.array([1.0, 0.0])
        while True:
            r = max(width, 1.0) / 2.0
            ylo, yhi = max(0, math.floor(min(p0[0], p1[0]) - r)), min(h, math.ceil(max(p0[0], p1[0]) + r) + 1)
            xlo, xhi = max(0, math.floor(min(p0[1], p1[1]) - r)), min(w, math.ceil(max(p0[1], p1[1]) + r) + 1)
            vy = np.arange(ylo, yhi, dtype=np.float64)[:, None] - p0[0]
            vx = np.arange(xlo, xhi, dtype=np.float64)[None, :] - p0[1]
            s = vy * d[0] + vx * d[1]                        # position along the segment
            h2 = vy * vy + vx * vx - s * s                   # squared distance to its line
            reach = np.sqrt(np.clip(r * r - h2, 0.0, None))
            lstar = np.maximum(s - reach, 0.0)               # length at which the pixel is covered
            win = self.hole[ylo:yhi, xlo:xhi]
            ok = (h2 <= r * r) & (s >= -reach) & (lstar <= length) & ~win
            n_new = int(ok.sum())
            if n_new <= self.need:
                win |= ok
                self.count += n_new
                return
            n_cap = int((ok & (lstar == 0.0)).sum())         # the round start cap alone
            if n_cap <= self.need or width <= 1.0:
                break
            width = max(1.0, width * 0.5)                    # a narrower brush for this last segment
        idx = np.flatnonzero(ok)
        idx = idx[np.argsort(lstar.ravel()[idx], kind="stable")[:int(self.need)]]
        win[np.unravel_index(idx, win.shape)] = True
        self.count += len(idx)


def _draw_boxes(canvas: _Canvas, fam: MaskFamily, scale: float, rng: np.random.Generator) -> None:
    h, w = canvas.hole.shape
    if fam.max_boxes <= 0 or rng.random() >= fam.box_proba:
        return
    for _ in range(int(rng.integers(1, fam.max_boxes + 1))):
        bh, bw = (max(1, min(dim - 1, int(round(rng.uniform(fam.box_min, fam.box_max) * scale))))
                  for dim in (h, w))
        canvas.box(int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1)), bh, bw)


def _draw_stroke(canvas: _Canvas, fam: MaskFamily, scale: float, rng: np.random.Generator) -> int:
    """One LaMa-style stroke: 1-5 segments turning by up to max_angle; returns segments drawn."""
    h, w = canvas.hole.shape
    p = np.array([rng.uniform(0, h - 1), rng.uniform(0, w - 1)])
    n_seg = 1 + int(rng.integers(0, 5))
    for j in range(n_seg):
        angle = rng.uniform(0, fam.max_angle)
        if j % 2 == 0:
            angle = 2 * math.pi - angle
        length = (10 + rng.uniform(0, fam.max_len)) * scale
        width = (5 + rng.uniform(0, fam.max_width)) * scale
        q = np.clip(p + length * np.array([math.cos(angle), math.sin(angle)]), 0, [h - 1, w - 1])
        canvas.segment(p, q, width)
        p = q
        if canvas.need <= 0:
            return j + 1
    return n_seg


def generate_mask(size, seed=0, family: str = "medium", ratio_bin: Sequence[float] | None = None) -> np.ndarray:
    """One irregular mask, np.uint8 (H, W), known = 1 / hole = 0.

    ``seed`` is an int or a numpy Generator. With ``ratio_bin=(lo, hi)`` the hole ratio is drawn
    uniformly inside the half-open bin and hit exactly; without, strokes and boxes follow the
    family's counts (LaMa-style) and the ratio is whatever they cover.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown mask family {family!r}; valid: {', '.join(FAMILY_NAMES)}")
    fam = FAMILIES[family]
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(int(seed))
    h, w = _hw(size)
    scale = min(h, w) / 256.0
    if ratio_bin is None:
        canvas = _Canvas(h, w, None)
        _draw_boxes(canvas, fam, scale, rng)
        for _ in range(int(rng.integers(fam.min_strokes, fam.max_strokes + 1))):
            _draw_stroke(canvas, fam, scale, rng)
        return (~canvas.hole).astype(np.uint8)
    (lo, hi), = _check_bins([ratio_bin])
    c_lo, c_hi = _count_range(lo, hi, h * w)
    if c_lo > c_hi:
        raise ValueError(f"no {h}x{w} mask has a hole ratio in ({lo}, {hi}]: widen the bin or enlarge the mask")
    canvas = _Canvas(h, w, int(rng.integers(c_lo, c_hi + 1)))
    _draw_boxes(canvas, fam, scale, rng)
    segments = 0
    while canvas.need > 0:
        segments += _draw_stroke(canvas, fam, scale, rng)
        if segments > _MAX_SEGMENTS:  # a safety net: targets up to 100% take well under 10^4 segments
            raise RuntimeError(f"mask generator did not reach {canvas.target} hole pixels")
    return (~canvas.hole).astype(np.uint8)


def random_masks(n: int, size, seed: int = 0, ratio_range: Sequence[float] = (0.05, 0.6),
                 families: Sequence[str] = FAMILY_NAMES) -> torch.Tensor:
    """A deterministic pool of n training masks (n, 1, H, W) float32 known; ratio uniform in (lo, hi]."""
    for f in families:
        if f not in FAMILIES:
            raise ValueError(f"unknown mask family {f!r}; valid: {', '.join(FAMILY_NAMES)}")
    out = np.empty((n, 1, *_hw(size)), dtype=np.float32)
    for i in range(n):
        rng = np.random.default_rng(mask_seed(seed, i))
        fam = families[int(rng.integers(0, len(families)))]
        out[i, 0] = generate_mask(size, rng, fam, ratio_range)
    return torch.from_numpy(out)


# ----------------------------------------------------------------------------------------------
# Polarity (disk <-> memory)

POLARITIES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    # white (pixel > 127) -> known {0, 1}
    "white_is_hole": lambda white: ~white,
    "white_is_known": lambda white: white,
}
BINARY_THRESHOLD = 127  # a pixel is white when its 8-bit gray value is > 127


def _check_polarity(polarity: str) -> None:
    if polarity not in POLARITIES:
        raise DataError(f"mask polarity {polarity!r} is not one of {', '.join(POLARITIES)}: say which "
                        "colour marks the hole in your mask files (strbench writes white_is_hole)")


def known_from_pixels(pixels: np.ndarray, polarity: str) -> np.ndarray:
    """8-bit gray mask image -> known uint8 {0, 1} (binarised at > 127)."""
    _check_polarity(polarity)
    return POLARITIES[polarity](np.asarray(pixels) > BINARY_THRESHOLD).astype(np.uint8)


def pixels_from_known(known: np.ndarray, polarity: str) -> np.ndarray:
    """known {0, 1} -> 8-bit gray mask image (0 / 255) in the given polarity."""
    _check_polarity(polarity)
    known = np.asarray(known).astype(bool)
    white = known if polarity == "white_is_known" else ~known
    return white.astype(np.uint8) * 255


# ----------------------------------------------------------------------------------------------
# Mask sets

def content_hash(masks: torch.Tensor) -> str:
    """sha256 over the binary known maps (N, 1, H, W), in order, with their shape."""
    arr = (masks.detach().cpu() > 0.5).to(torch.uint8).numpy()
    h = hashlib.sha256(f"strbench-masks-v1:{'x'.join(map(str, arr.shape))}\n".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class MaskSet:
    """Masks (N, 1, H, W) float32 known, their hole ratios (float64), bin labels and content hash."""
    masks: torch.Tensor
    ratios: torch.Tensor
    bin_of: tuple
    hash: str
    files: tuple = ()
    families: tuple = ()
    source: str = ""

    def __post_init__(self):
        n = self.masks.shape[0]
        if self.masks.dim() != 4 or self.masks.shape[1] != 1:
            raise ValueError(f"MaskSet.masks must be (N, 1, H, W); got {tuple(self.masks.shape)}")
        if len(self.ratios) != n or len(self.bin_of) != n:
            raise ValueError("MaskSet: masks, ratios and bin_of must have the same length")

    def __len__(self) -> int:
        return self.masks.shape[0]

    def select(self, lo: float, hi: float) -> "MaskSet":
        """The masks whose hole ratio lies in (lo, hi] (from the pixels, not the stored labels)."""
        idx = torch.nonzero(in_bin(self.ratios, lo, hi)).flatten().tolist()
        masks = self.masks[idx]
        pick = lambda seq: tuple(seq[i] for i in idx) if seq else ()
        return MaskSet(masks, self.ratios[idx], pick(self.bin_of), content_hash(masks),
                       pick(self.files), pick(self.families), self.source)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image
    Image.fromarray(pixels, mode="L").save(path, format="PNG")


def build_mask_set(out_dir, size, bins=DEFAULT_BINS, per_bin: int = 100, seed: int = 0,
                   families: Sequence[str] = FAMILY_NAMES) -> MaskSet:
    """Generate ``per_bin`` masks for each bin (families in turn), save PNGs + manifest.json atomically.

    Files are ``bin{k:02d}_{i:05d}_{family}.png``, white = hole. The manifest holds each mask's file,
    hole ratio, bin label, family and seed, and the content hash of the whole set. Re-running with the
    same arguments on a finished folder returns the same set without rewriting it; a non-empty folder
    holding a different set is an error.
    """
    bins = _check_bins(bins)
    families = tuple(families)
    if not families or any(f not in FAMILIES for f in families):
        raise ValueError(f"families must be a non-empty subset of {', '.join(FAMILY_NAMES)}; got {families}")
    if int(per_bin) < 1:
        raise ValueError(f"per_bin must be >= 1; got {per_bin}")
    h, w = _hw(size)
    entries, arrays = [], []
    for k, (lo, hi) in enumerate(bins):
        for i in range(int(per_bin)):
            fam = families[i % len(families)]
            s = mask_seed(seed, k, i)
            arrays.append(generate_mask((h, w), s, fam, (lo, hi)))
            entries.append({"file": f"bin{k:02d}_{i:05d}_{fam}.png", "bin": bin_label(lo, hi),
                            "family": fam, "seed": s})
    masks = torch.from_numpy(np.stack(arrays)[:, None].astype(np.float32))
    ratios = hole_ratio(masks)
    for e, r in zip(entries, ratios.tolist()):
        e["ratio"] = r
    mset = MaskSet(masks, ratios, tuple(e["bin"] for e in entries), content_hash(masks),
                   tuple(e["file"] for e in entries), tuple(e["family"] for e in entries), str(out_dir))
    manifest = {
        "format": "strbench-mask-set/1",
        "convention": "PNG white (255) = hole, black (0) = known; in memory known = 1",
        "size": [h, w], "seed": int(seed), "per_bin": int(per_bin), "families": list(families),
        "bins": [[lo, hi] for lo, hi in bins], "bin_labels": [bin_label(lo, hi) for lo, hi in bins],
        "hash": mset.hash, "masks": entries,
    }
    out = Path(out_dir)
    if _existing_set_matches(out, mset.hash):
        return mset
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for e, arr in zip(entries, arrays):
            _write_png(tmp / e["file"], pixels_from_known(arr, "white_is_hole"))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        try:
            os.replace(tmp, out)  # atomic; replaces an empty directory only
        except OSError:
            if not _existing_set_matches(out, mset.hash):
                raise DataError(f"mask set folder {out} exists and holds other files; "
                                "delete it or choose another out_dir") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return mset


def _existing_set_matches(out: Path, digest: str) -> bool:
    if not out.exists():
        return False
    if not out.is_dir():
        raise DataError(f"mask set path {out} exists and is not a folder; choose another out_dir")
    manifest = out / "manifest.json"
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text()).get("hash")
        except (OSError, ValueError, AttributeError):
            old = None
        if old == digest:
            return True
        raise DataError(f"mask set folder {out} holds a different mask set (hash {old}, wanted {digest}); "
                        "delete it or choose another out_dir")
    if any(out.iterdir()):
        raise DataError(f"mask set folder {out} exists and holds other files; delete it or choose another out_dir")
    return False


MASK_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


ASPECT_TOLERANCE = 0.01  # |w/h - W/H| above this: the mask would be distorted by the resize, refused


def read_mask(f: Path, h: int, w: int, polarity: str) -> np.ndarray:
    """One mask file -> known uint8 {0, 1} (h, w). Decoded to 8-bit gray by `data.open_image` (16-bit scaled,
    palette expanded to its colours, alpha dropped: the displayed gray decides), resized with nearest,
    binarised at > 127; another aspect ratio is refused (a DataError naming the file)."""
    from PIL import Image

    from strbench.data import open_image
    try:
        im = open_image(f, "L")
    except DataError as e:
        raise DataError(str(e).replace("cannot read image", "cannot read mask image", 1)) from None
    if abs(im.width / im.height - w / h) > ASPECT_TOLERANCE:
        raise DataError(f"mask {f} is {im.width}x{im.height}, which cannot be resized to {w}x{h} "
                        "without distortion; crop the masks to that aspect ratio")
    if im.size != (w, h):
        im = im.resize((w, h), resample=Image.NEAREST)
    return known_from_pixels(np.asarray(im), polarity)


@dataclass(frozen=True)
class MaskScan:
    """What `scan_mask_folder` read: the kept masks (known uint8 arrays), their labels and relative files, the
    number of files decoded, the files with 0% / 100% holes among them, and the kept count per bin label."""
    root: Path
    arrays: tuple
    labels: tuple
    files: tuple
    n_read: int
    n_files: int
    zero_hole: tuple
    full_hole: tuple
    per_bin: dict


def scan_mask_folder(path, size, polarity: str, bins=None, per_bin: int | None = None) -> MaskScan:
    """The reading loop of `load_mask_folder` (and of the pre-flight, so both decode the same files): masks in
    sorted order, each decoded, resized and binned; with ``per_bin`` it stops once every bin holds that many.
    Raises DataError for a missing/empty folder and an unreadable or wrongly shaped mask; keeps no mask
    outside the bins when ``bins`` is given."""
    _check_polarity(polarity)
    h, w = _hw(size)
    if per_bin is not None and (bins is None or int(per_bin) < 1):
        raise ValueError(f"per_bin={per_bin} needs bins and must be >= 1")
    use_bins = DEFAULT_BINS if bins is None else _check_bins(bins)
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"mask folder {root} does not exist; point masks.path at a folder of mask images")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MASK_SUFFIXES)
    if not files:
        raise DataError(f"mask folder {root} holds no mask images ({', '.join(MASK_SUFFIXES)}); "
                        "point masks.path at a folder of mask images")
    arrays, labels, rel, zero, full = [], [], [], [], []
    filled = {bin_label(*b): 0 for b in use_bins}
    n_read = 0
    for f in files:
        known = read_mask(f, h, w, polarity)
        n_read += 1
        holes = known.size - int(known.sum())
        if holes in (0, known.size):
            (zero if holes == 0 else full).append(str(f.relative_to(root)))
        label = bin_of(holes / known.size, use_bins)
        if bins is not None and (label is None or (per_bin is not None and filled[label] >= per_bin)):
            continue
        if label is not None:
            filled[label] += 1
        arrays.append(known)
        labels.append(label)
        rel.append(str(f.relative_to(root)))
        if per_bin is not None and all(n >= per_bin for n in filled.values()):
            break
    return MaskScan(root, tuple(arrays), tuple(labels), tuple(rel), n_read, len(files), tuple(zero), tuple(full),
                    filled)


def load_mask_folder(path, size, polarity: str, bins=None, per_bin: int | None = None) -> MaskSet:
    """Read the mask images under ``path`` (sorted), binarise (> 127 is white), resize with nearest.

    ``polarity`` is required: "white_is_hole" (strbench's own sets) or "white_is_known"; see the module
    docstring for the NVIDIA masks. Masks must have the aspect ratio of ``size``. Hole ratios and bin
    labels are computed from the resized pixels. With ``bins`` given, masks outside every bin are left
    out; with ``per_bin`` too, only the first ``per_bin`` masks (in file order) of each bin are kept and
    reading stops once every bin is full (`scan_mask_folder`).
    """
    scan = scan_mask_folder(path, size, polarity, bins, per_bin)
    if not scan.arrays:
        use_bins = DEFAULT_BINS if bins is None else _check_bins(bins)
        raise DataError(f"no mask in {scan.root} has a hole ratio inside the bins "
                        f"{[bin_label(*b) for b in use_bins]}; check the polarity ({polarity})")
    masks = torch.from_numpy(np.stack(scan.arrays)[:, None]).to(torch.float32)
    return MaskSet(masks, hole_ratio(masks), scan.labels, content_hash(masks), scan.files,
                   (None,) * len(scan.files), str(scan.root))
