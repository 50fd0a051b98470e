"""Streaming training data: a torch DataLoader whose every sample is a pure function of (seed, step, slot).

One training step consumes a *global batch* of ``G = batch x world_size`` samples; slot ``j`` in
``0..G-1`` names one of them, and rank ``r`` of ``world_size`` takes slots ``r*batch .. (r+1)*batch-1``.
So one process at batch 2B and two processes at batch B see the same data, and a run resumed at step
``s`` sees the same samples as an uninterrupted one (nothing depends on the loader's past, nor on how
many worker processes compute it).

Sample ``(step, slot)``:
  1. its image index: global position ``p = step * G + slot``, epoch ``e, r = divmod(p, N)``, index
     ``= permutation(seed, e)[r]`` (every image once per epoch, a fresh order per epoch);
  2. one numpy Generator seeded by ``(seed, step, slot)`` draws, in this order, the random crop (only for
     a folder dataset with ``resize: random_crop``: ``data.load_image`` crops from the decoded file),
     the horizontal flip (p = 1/2), and the training mask (an index into a mask pool, or a fresh mask
     from ``masks.generate_mask`` with a :class:`MaskGenerator`);
  3. its structure maps (``structure.structure_states``: x_0 and mu_x = map * known, Sec. 3.4.1;
     memoised per worker for small in-memory sources, whose image depends on (index, flip) alone).
All of this runs in the loader's worker processes. Folder datasets are read file by file (memory does
not grow with the dataset); in-memory sources (a Tensor, the built-in ``PatchDataset``, any Dataset)
are indexed as they are.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from strbench.errors import DataError, StrbenchError

STREAM_TAG = 0x5354  # keeps the per-sample seeds apart from data.py's (seed, epoch, index) crops
PERM_TAG = 0x5045
MAX_AUTO_WORKERS = 8

# --------------------------------------------------------------------------------------------
# pure index and seed functions
# --------------------------------------------------------------------------------------------


def sample_seed(seed: int, step: int, slot: int) -> list[int]:
    """SeedSequence entropy of sample (step, slot): a numpy Generator from it draws crop, flip, mask."""
    return [int(seed), STREAM_TAG, int(step), int(slot)]


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The image order of one epoch: a permutation of range(n) drawn from (seed, epoch)."""
    return np.random.default_rng([int(seed), PERM_TAG, int(epoch)]).permutation(n)


class IndexOrder:
    """Image index of global position p (step * G + slot): epoch permutations, the latest one cached."""

    def __init__(self, seed: int, n: int):
        if n < 1:
            raise DataError("training dataset is empty")
        self.seed, self.n = int(seed), int(n)
        self._epoch, self._perm = -1, None

    def __call__(self, position: int) -> int:
        epoch, r = divmod(int(position), self.n)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, epoch_permutation(self.seed, epoch, self.n)
        return int(self._perm[r])


@dataclass(frozen=True)
class StreamSpec:
    """What fixes the stream: seed, per-rank batch, world size and rank, flips, structure maps."""

    seed: int
    batch: int  # per rank
    world_size: int = 1
    rank: int = 0
    flip: bool = True
    variant: Optional[str] = None  # structure variant whose (x_0, mu_x) each sample carries; None = none
    canny_sigma: float = 3.0

    @property
    def global_batch(self) -> int:
        return self.batch * self.world_size

    def slots(self) -> range:
        """This rank's slots of the global batch."""
        return range(self.rank * self.batch, (self.rank + 1) * self.batch)


def step_keys(spec: StreamSpec, order: IndexOrder, step: int) -> list[tuple[int, int, int]]:
    """(step, slot, image index) of this rank's samples of one step."""
    g = spec.global_batch
    return [(int(step), j, order(step * g + j)) for j in spec.slots()]


def default_workers(cpus: Optional[int] = None, local_world_size: Optional[int] = None) -> int:
    """Loader worker processes per rank: the rank's share of the CPUs minus one for the training loop,
    at most MAX_AUTO_WORKERS; 0 (load in the training process) where that leaves a single worker, which
    would only compete with the loop for the same cores (measured on 2 cores: 15-25 ms more per step)."""
    cpus = cpus if cpus is not None else len(os.sched_getaffinity(0))
    local = local_world_size if local_world_size is not None else int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    n = min(MAX_AUTO_WORKERS, cpus // max(local, 1) - 1)
    return n if n >= 2 else 0


# --------------------------------------------------------------------------------------------
# image sources: index (+ rng for random crops) -> float (3, H, W) in [0, 1]
# --------------------------------------------------------------------------------------------


class FileSource:
    """A folder dataset read file by file: ``data.load_image`` with the sample's own Generator."""

    def __init__(self, files: Sequence, size: int, resize: str):
        self.files, self.size, self.resize = list(files), int(size), resize
        self.hw = (self.size, self.size)

    def __len__(self) -> int:
        return len(self.files)

    def read(self, i: int, rng: np.random.Generator) -> Tensor:
        from strbench.data import load_image

        return load_image(self.files[i], self.size, self.resize, rng if self.resize == "random_crop" else None)


class MemorySource:
    """Images already in memory: uint8 (N, 3, H, W) (scaled by 1/255) or float (N, 3, H, W) in [0, 1]."""

    def __init__(self, images: Tensor):
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
            raise DataError(f"training images must be (N, 3, H, W) with N >= 1, got {tuple(images.shape)}")
        if images.dtype != torch.uint8:
            images = images.float()
            if images.min() < 0 or images.max() > 1:
                raise DataError("training images must lie in [0, 1]")
        self.images, self.hw = images, tuple(images.shape[-2:])

    def __len__(self) -> int:
        return self.images.shape[0]

    def read(self, i: int, rng: np.random.Generator) -> Tensor:
        im = self.images[i]
        return im.float().div(255.0) if im.dtype == torch.uint8 else im


class DatasetSource:
    """Any map-style Dataset of Tensor[3, H, W] (or (tensor, ...)) items, indexed as it is."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        first = self.read(0, None) if len(dataset) else None
        if first is None:
            raise DataError("training dataset is empty")
        if first.ndim != 3 or first.shape[0] != 3:
            raise DataError(f"training images must be (3, H, W) items, got {tuple(first.shape)}")
        self.hw = tuple(first.shape[-2:])

    def __len__(self) -> int:
        return len(self.dataset)

    def read(self, i: int, rng) -> Tensor:
        item = self.dataset[i]
        item = item[0] if isinstance(item, (tuple, list)) else item
        return torch.as_tensor(item).float()


def image_source(dataset):
    """The source of a training dataset: files for a folder dataset, memory for a Tensor or the built-in
    patches, item access for any other Dataset."""
    from strbench.data import ImageFolderDataset, PatchDataset

    if isinstance(dataset, Tensor):
        return MemorySource(dataset)
    if isinstance(dataset, PatchDataset):
        return MemorySource(dataset.patches)
    if isinstance(dataset, ImageFolderDataset):
        if len(dataset) == 0:
            raise DataError(f"training dataset {dataset.root} is empty")
        return FileSource(dataset.files, dataset.size, dataset.resize)
    return DatasetSource(dataset)


# --------------------------------------------------------------------------------------------
# mask sources: rng -> float (1, H, W) known mask
# --------------------------------------------------------------------------------------------


class MaskPool:
    """A fixed pool of known masks (M, 1, H, W); each sample draws one index."""

    def __init__(self, masks):
        m = torch.as_tensor(getattr(masks, "masks", masks))
        if m.ndim == 3:
            m = m[:, None]
        if m.ndim != 4 or m.shape[1] != 1 or m.shape[0] == 0:
            raise DataError(f"training masks must be (M, 1, H, W) known masks with M >= 1, got {tuple(m.shape)}")
        if not torch.all((m == 0) | (m == 1)):
            raise DataError("training masks must be binary known masks (1 = known, 0 = hole)")
        self.masks = m.to(torch.uint8).contiguous()  # a quarter of the float pool's memory
        self.hw = tuple(m.shape[-2:])

    def draw(self, rng: np.random.Generator) -> Tensor:
        return self.masks[int(rng.integers(self.masks.shape[0]))].float()


@dataclass(frozen=True)
class MaskGenerator:
    """A fresh irregular mask per sample (``masks.generate_mask``): family uniform over ``families``,
    hole ratio uniform in the half-open range ``ratio`` and hit exactly."""

    size: int
    ratio: tuple = (0.05, 0.6)
    families: tuple = ("thin", "medium", "thick")

    @property
    def hw(self) -> tuple[int, int]:
        return (int(self.size), int(self.size))

    def draw(self, rng: np.random.Generator) -> Tensor:
        from strbench.masks import generate_mask

        fam = self.families[int(rng.integers(len(self.families)))]
        return torch.from_numpy(generate_mask(self.size, rng, fam, tuple(self.ratio))[None].astype(np.float32))


def mask_source(masks):
    """A MaskGenerator as it is; a MaskSet, Tensor or array as a MaskPool."""
    return masks if isinstance(masks, MaskGenerator) else MaskPool(masks)


# --------------------------------------------------------------------------------------------
# one sample, the dataset and sampler the DataLoader runs
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def single_thread():
    """torch on one thread inside (restored after): a sample's small ops gain nothing from more, and in the
    training process (workers = 0) its OpenMP pool would spin; measured on 2 busy cores, one 256 px
    sample takes 17 ms on 1 thread and 79 ms on 2. Worker processes run on one thread anyway."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def structure_maps(image: Tensor, variant: str, canny_sigma: float) -> tuple[Tensor, Tensor]:
    """The unmasked maps (1, H, W) of a variant: x_0 and the map whose masking is mu_x (Sec. 3.4.1)."""
    from strbench.structure import structure_states

    x0, mu = structure_states(variant, image[None], torch.ones_like(image[None, :1]), canny_sigma=canny_sigma)
    return x0[0].float(), mu[0].float()


def make_sample(source, masks, spec: StreamSpec, key: tuple[int, int, int],
                cache: Optional[dict] = None) -> dict[str, Tensor]:
    """Sample (step, slot, index): image (crop, flip), known mask, and x0 / mu_x = map * known when
    spec.variant is set. `cache` ((index, flipped) -> maps) may memoise the maps of an in-memory source,
    whose image depends on nothing else; the result is the same with or without it."""
    step, slot, idx = key
    rng = np.random.default_rng(sample_seed(spec.seed, step, slot))
    image = source.read(idx, rng)
    flipped = bool(spec.flip and rng.random() < 0.5)
    if flipped:
        image = image.flip(-1)
    known = masks.draw(rng)
    if known.shape[-2:] != image.shape[-2:]:
        raise DataError(f"mask size {tuple(known.shape[-2:])} differs from image size {tuple(image.shape[-2:])}")
    out = {"image": image.contiguous(), "known": known, "key": torch.tensor(key, dtype=torch.long)}
    if spec.variant is not None:
        maps = cache.get((idx, flipped)) if cache is not None else None
        if maps is None:
            maps = structure_maps(image, spec.variant, spec.canny_sigma)
            if cache is not None:
                cache[(idx, flipped)] = maps
        out.update(x0=maps[0], mu_x=maps[1] * known)
    return out


MAP_CACHE_BYTES = 64 * 2**20  # per process: memoise the maps of in-memory sources that fit (built-in: ~26 MB)


def _map_cache(source, spec: StreamSpec) -> Optional[dict]:
    if spec.variant is None or not isinstance(source, MemorySource):
        return None
    h, w = source.hw
    return {} if len(source) * (2 if spec.flip else 1) * 2 * h * w * 4 <= MAP_CACHE_BYTES else None


class StreamDataset(Dataset):
    """Map-style dataset keyed by (step, slot, index) tuples (see make_sample); each worker process
    memoises the structure maps of a small in-memory source in its own copy."""

    def __init__(self, source, masks, spec: StreamSpec):
        self.source, self.masks, self.spec = source, masks, spec
        self.cache = _map_cache(source, spec)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key) -> dict[str, Tensor]:
        return make_sample(self.source, self.masks, self.spec, key, self.cache)

    def __getitems__(self, keys) -> list[dict[str, Tensor]]:
        """One batch (the DataLoader's batched fetch), on one torch thread (see single_thread)."""
        with single_thread():
            return [self[k] for k in keys]


class StepSampler(Sampler):
    """Yields, for step = start, start + 1, ... (up to stop, or for ever), this rank's keys of the step."""

    def __init__(self, spec: StreamSpec, n: int, start: int = 0, stop: Optional[int] = None):
        self.spec, self.order, self.start, self.stop = spec, IndexOrder(spec.seed, n), int(start), stop

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        step = self.start
        while self.stop is None or step < self.stop:
            yield step_keys(self.spec, self.order, step)
            step += 1

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("an unbounded StepSampler has no length")
        return max(0, self.stop - self.start)


def collate(samples: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def make_batch(source, masks, spec: StreamSpec, step: int) -> dict[str, Tensor]:
    """This rank's batch of one step, computed in the calling process (previews, tests)."""
    keys = step_keys(spec, IndexOrder(spec.seed, len(source)), step)
    return collate(StreamDataset(source, masks, spec).__getitems__(keys))


def make_loader(source, masks, spec: StreamSpec, *, start: int = 0, stop: Optional[int] = None,
                workers: int = 0, pin_memory: bool = False, prefetch: int = 2) -> DataLoader:
    """A DataLoader yielding this rank's batches of steps start, start + 1, ...; each a dict of stacked
    image (B, 3, H, W), known (B, 1, H, W), key (B, 3) = (step, slot, index), and x0, mu_x (B, 1, H, W)."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    extra = {"persistent_workers": True, "prefetch_factor": prefetch} if workers > 0 else {}
    return DataLoader(StreamDataset(source, masks, spec), batch_sampler=StepSampler(spec, len(source), start, stop),
                      num_workers=workers, collate_fn=collate, pin_memory=pin_memory, **extra)


def next_batch(it: Iterator) -> dict[str, Tensor]:
    """next(it), with a strbench error raised in a worker turned back into its own one-line message."""
    try:
        return next(it)
    except StrbenchError as e:
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        last = lines[-1] if lines else str(e)
        prefix = f"{type(e).__module__}.{type(e).__name__}: "
        if len(lines) > 1 and last.startswith(prefix):
            raise type(e)(last[len(prefix):]) from None
        raise
