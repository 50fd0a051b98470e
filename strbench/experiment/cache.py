"""Datasets, mask sets and trained models of one process, memoised; models are cached on disk.

Cache layout (``cache_dir``): ``models/<model hash>/{config.json, model.pt, complete.json, train.lock,
diverged.json}`` (a model with ``complete.json`` is finished; ``model.pt`` alone is a partial checkpoint that
training resumes; ``diverged.json`` says its training hit a NaN/Inf loss: training is deterministic, so no
process trains it again until the file is removed; ``train.lock`` is held while a process trains it, so processes and machines sharing the cache
train each model once: the others wait, then load it), ``masks/<spec hash>/`` generated evaluation mask
sets, ``claims/<store key>/`` which process runs which cell (strbench.experiment.claims).
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from strbench import atomic
from strbench.checkpoint import CheckpointUnreadable
from strbench.errors import DataError, StrbenchError, TrainingDiverged
from strbench.experiment.plan import EvalMasks, ModelSpec, TrainMasks, random_seed_of
from strbench.experiment.progress import SILENT, Progress
from strbench.hashing import config_hash


DIVERGED = "diverged.json"  # in a model's cache folder: its training hit a NaN/Inf loss


def dataset_config(ds, split: str, *, limit: Optional[int] = None) -> dict:
    """strbench.data.make_dataset's config for the `split` of a cell's EvalDataset or a model's TrainDataset
    (evaluation never random-crops)."""
    resize = ds.resize if split == "train" or ds.resize != "random_crop" else "center_crop"
    cfg: dict[str, Any] = {"type": ds.type, "size": ds.size, "split": split}
    if ds.type != "builtin":
        splits = {k: v for k, v in (ds.splits.model_dump() if hasattr(ds, "splits") else {}).items() if v}
        if getattr(ds, "split_file", None):
            splits["train"] = ds.split_file
        cfg.update(root=ds.root, resize=resize, splits=splits)
        if ds.type == "folder" and ds.test_fraction is not None:
            cfg["test_fraction"] = ds.test_fraction
    if limit:
        cfg["limit"] = limit
    return cfg


class Resources:
    """Datasets, mask sets and models of one process, memoised; models are cached on disk.
    `progress` receives a ``waiting`` event when another process is training a model this one needs."""

    def __init__(self, cache_dir: str | os.PathLike, device: str = "auto", progress: Progress = SILENT):
        from strbench.dist import resolve_device

        self.root = Path(cache_dir)
        self.device = resolve_device(device)
        self.progress = progress
        self._datasets: dict = {}
        self._masks: dict = {}
        self._models: dict = {}
        self._steps: dict[str, int] = {}  # model hash -> training steps of the network model() last returned
        self.failed: dict[str, str] = {}  # model hash -> error (do not retrain a diverged model twice)

    # ---------------------------------------------------------------- data
    def dataset(self, ds, split: str, *, limit: Optional[int] = None):
        """The `split` images of a cell's EvalDataset or a model's TrainDataset."""
        from strbench.data import make_dataset

        cfg = dataset_config(ds, split, limit=limit)
        key = json.dumps(cfg, sort_keys=True)
        if key not in self._datasets:
            self._datasets[key] = make_dataset(cfg)
        return self._datasets[key]

    def train_masks(self, spec: TrainMasks):
        from strbench.masks import random_masks

        key = json.dumps(spec.model_dump(), sort_keys=True)
        if key not in self._masks:
            self._masks[key] = random_masks(spec.count, spec.size, seed=spec.seed, ratio_range=tuple(spec.ratio),
                                            families=tuple(spec.families))
        return self._masks[key]

    def eval_masks(self, mask: EvalMasks, size: int, split: str):
        """Known masks (n, 1, H, W) of one bin for the test or val split, and their file names."""
        from strbench import masks as masks_mod

        lo, hi, n = mask.lo, mask.hi, mask.per_bin
        if mask.source == "generator":
            seed = mask.seed if split == "test" else mask.val_seed
            spec = {"size": size, "bins": mask.bins, "per_bin": n, "seed": seed, "families": mask.families}
            key = json.dumps(spec, sort_keys=True)
            if key not in self._masks:
                out = self.root / "masks" / config_hash(spec)[:16]
                self._masks[key] = masks_mod.build_mask_set(out, size, bins=[tuple(b) for b in mask.bins],
                                                            per_bin=n, seed=seed, families=mask.families)
            sel = self._masks[key].select(lo, hi)
        else:
            key = json.dumps([mask.path, size, mask.polarity, lo, hi, 2 * n])
            if key not in self._masks:  # test: the first n masks of the bin; val: the next n
                self._masks[key] = masks_mod.load_mask_folder(mask.path, size, mask.polarity,
                                                              bins=[(lo, hi)], per_bin=2 * n)
            full = self._masks[key].select(lo, hi)
            if len(full) == 0:
                raise DataError(f"masks.path: no mask in {mask.path} has a hole ratio in {mask.label} "
                                f"({lo}, {hi}]; change masks.bins or the mask folder")
            start = 0 if split == "test" or len(full) < 2 * n else n  # val: the next masks when there are enough
            idx = list(range(start, min(start + n, len(full))))
            sel = masks_mod.MaskSet(full.masks[idx], full.ratios[idx], tuple(full.bin_of[i] for i in idx),
                                    masks_mod.content_hash(full.masks[idx]),
                                    tuple(full.files[i] for i in idx) if full.files else ())
        if len(sel) == 0:
            raise DataError(f"no {split} mask in bin {mask.label}")
        return sel

    # ---------------------------------------------------------------- models
    def model_dir(self, spec: ModelSpec) -> Path:
        return self.root / "models" / spec.hash

    def model_status(self, spec: ModelSpec) -> str:
        """cached | partial | missing"""
        return model_status(self.root, spec)

    def model(self, spec: ModelSpec, others: Mapping[str, ModelSpec] = {}, *,
              on_train: Optional[Callable[[ModelSpec], Any]] = None,
              callback: Optional[Callable[[dict], Any]] = None, until: Optional[int] = None):
        """The trained network of `spec`: memoised, else loaded from the cache, else trained (resuming a
        partial checkpoint; `others` maps hash -> spec of the models it needs). Training holds
        ``models/<hash>/train.lock``; a process finding it held waits, then loads what the holder trained.
        `on_train(spec)` is called before training starts.

        until: a model not yet complete is trained only to step `until` (a resumable checkpoint there, no
        complete.json, not memoised: a later call resumes it; strbench tune's intermediate values) and
        returned as trained so far; a complete model is returned as it is. Its dependencies (`spec.needs`)
        are trained fully first: a model trained on another net's outputs must see the final net.
        :meth:`trained_steps` tells how far the returned network was trained."""
        stop_at = int(until) if until is not None and until < spec.train.steps else None
        if spec.hash in self._models:
            return self._models[spec.hash]
        if spec.pretrained:
            net = self._pretrained(spec).eval()
            self._models[spec.hash] = net
            return net
        if spec.hash in self.failed:
            raise StrbenchError(f"model {spec.role} {spec.short} failed earlier in this run: {self.failed[spec.hash]}")
        net = None
        if self._rank0_says(lambda: self.model_status(spec)) == "cached":
            net = self._load_cached(spec)
        if net is None:  # its dependencies first (each under its own lock): no lock is held while waiting for one
            deps = {others[h].role: self.model(others[h], others, on_train=on_train, callback=callback)
                    for h in spec.needs}
            with self._train_lock(spec) as status:
                if status == "cached":  # trained by the process we waited for
                    net = self._load_cached(spec)
                if net is None:
                    self._refuse_diverged(spec)
                    net = self._train(spec, deps, on_train=on_train, callback=callback, stop_at=stop_at)
                    if stop_at is not None:  # part-way: not complete, not memoised; a later call resumes it
                        self._steps[spec.hash] = _checkpoint_step(self.model_dir(spec) / "model.pt")
                        return net.eval()
        net.eval()
        self._models[spec.hash] = net
        self._steps[spec.hash] = spec.train.steps
        return net

    def models(self, specs: Mapping[str, ModelSpec], *, on_train: Optional[Callable[[ModelSpec], Any]] = None,
               callback: Optional[Callable[[dict], Any]] = None) -> dict:
        """The networks of `specs` (role -> spec; a cell's models), as :meth:`model` gives each, fetched in the
        order that keeps this process busy: next, a model nobody else is training right now (nor a model it
        needs), so that while another process trains one of the cell's models this one trains the next instead
        of waiting on its lock; only when every model left is being trained elsewhere does it wait. Under
        torchrun rank 0 picks, for every rank."""
        others = {s.hash: s for s in specs.values()}
        left, out = dict(specs), {}

        def blocked(spec: ModelSpec) -> bool:
            return self.model_busy(spec) or any(self.model_busy(others[h]) for h in spec.needs if h in others)

        while left:
            role = self._rank0_says(lambda: next((r for r, s in left.items() if not blocked(s)), next(iter(left))))
            out[role] = self.model(left.pop(role), others, on_train=on_train, callback=callback)
        return {r: out[r] for r in specs}

    def trained_steps(self, spec: ModelSpec) -> Optional[int]:
        """Training steps of the network :meth:`model` last returned for `spec` (None: not asked for yet,
        or pretrained)."""
        return None if spec.pretrained else self._steps.get(spec.hash)

    def model_ready(self, spec: ModelSpec) -> bool:
        """Loaded here, pretrained, or trained in the cache: using it trains nothing."""
        return spec.hash in self._models or self.model_status(spec) in ("cached", "pretrained")

    def model_busy(self, spec: ModelSpec) -> bool:
        """Another process is training `spec` right now (its train lock is held); False when it is
        cached, pretrained or loaded here."""
        from filelock import FileLock, Timeout

        path = self.model_dir(spec) / "train.lock"
        if spec.pretrained or spec.hash in self._models or not path.is_file() or self.model_status(spec) == "cached":
            return False
        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return True
        lock.release()
        return False

    @contextlib.contextmanager
    def _train_lock(self, spec: ModelSpec):
        """Hold ``models/<hash>/train.lock`` and yield the model's status as seen under it ("cached" when
        the process waited for trained it). filelock: an OS lock, released by the OS if its holder dies,
        so a killed trainer never blocks the cache. A ``waiting`` event when another process holds it.
        Under torchrun rank 0 alone takes the lock and decides for every rank; the ranks wait with it in
        one short broadcast per second, so a long wait never trips a collective's timeout."""
        from filelock import FileLock, Timeout

        from strbench.dist import dist_env

        path = self.model_dir(spec) / "train.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path))
        why = f"another process is training it ({path} is locked)"
        if dist_env().world_size == 1:
            try:
                lock.acquire(timeout=0)
            except Timeout:
                self.progress.event("waiting", what="model", spec=spec, why=why)
                lock.acquire()
            try:
                yield self.model_status(spec)
            finally:
                lock.release()
            return
        import torch.distributed as dist

        from strbench.dist import init_distributed

        info, _ = init_distributed(self.device)
        got, told = [False], False
        while not got[0]:
            if info.is_main:
                try:
                    lock.acquire(timeout=1.0)
                    got = [True]
                except Timeout:
                    if not told:
                        self.progress.event("waiting", what="model", spec=spec, why=why)
                        told = True
            dist.broadcast_object_list(got, src=0)
        try:
            yield self._rank0_says(lambda: self.model_status(spec))
        finally:
            if info.is_main:
                lock.release()

    def _rank0_says(self, fn: Callable[[], Any]) -> Any:
        """fn() here; under torchrun rank 0's fn(), the same on every rank (one view of the cache decides)."""
        from strbench.dist import dist_env

        if dist_env().world_size == 1:
            return fn()
        import torch.distributed as dist

        from strbench.dist import init_distributed

        info, _ = init_distributed(self.device)
        out = [fn() if info.is_main else None]
        dist.broadcast_object_list(out, src=0)
        return out[0]

    def _load_cached(self, spec: ModelSpec):
        """A finished model's network, or None when its file no longer loads (complete.json is removed: training
        moves the file aside and resumes from model.prev.pt, or restarts)."""
        from strbench.train import load_model

        d = self.model_dir(spec)
        try:
            return load_model(d / "model.pt", expected_hash=spec.hash, device=self.device)
        except CheckpointUnreadable:
            (d / "complete.json").unlink(missing_ok=True)
            return None

    def _train(self, spec: ModelSpec, deps: dict, *, on_train, callback, stop_at: Optional[int] = None):
        """Train `spec` (resuming its partial checkpoint) and mark it complete; called under its lock.
        stop_at (model(until=...)): train only to that step, and mark nothing complete before the end."""
        from strbench.roles import GUIDE
        from strbench.train import train_model

        d = self.model_dir(spec)
        main = _is_main_rank()
        if main:
            atomic.write_text(d / "config.json", json.dumps({"role": spec.role, "hash": spec.hash,
                                                             "train": spec.train.to_dict(),
                                                             "data": spec.data.identity()}, indent=1, sort_keys=True))
        if on_train is not None:
            on_train(spec)
        ds = self.dataset(spec.data.dataset, "train", limit=spec.data.dataset.limit)
        masks = self.train_masks(spec.data.masks)
        t0 = time.time()
        try:
            net = train_model(spec.role, spec.train, ds, masks, ckpt_path=d / "model.pt", callback=callback,
                              device=self.device, structure_net=deps.get(GUIDE), stop_at=stop_at)
        except StrbenchError as e:
            self.failed[spec.hash] = str(e)
            if isinstance(e, TrainingDiverged) and main:  # deterministic: every process would diverge the same way
                atomic.write_text(d / DIVERGED, json.dumps({"role": spec.role, "hash": spec.hash, "error": str(e),
                                                            "time": time.time()}, indent=1))
            raise
        if stop_at is not None:
            return net
        if main:  # under torchrun rank 0 alone marks the model finished (train_model wrote the checkpoint)
            atomic.write_text(d / "complete.json", json.dumps({"role": spec.role, "hash": spec.hash,
                                                               "steps": spec.train.steps,
                                                               "train_seconds": time.time() - t0}))
        return net

    def _refuse_diverged(self, spec: ModelSpec) -> None:
        """TrainingDiverged when an earlier training of `spec` (any process sharing the cache) diverged."""
        path = self.model_dir(spec) / DIVERGED
        if not path.is_file():
            return
        try:
            why = json.loads(path.read_text()).get("error", "")
        except (OSError, ValueError):
            why = ""
        raise TrainingDiverged(f"model {spec.role} {spec.short} diverged when it was trained before"
                               + (f" ({why})" if why else "") + f"; change its training settings (e.g. train.lr), "
                               f"or delete {path} to train it again")

    def _pretrained(self, spec: ModelSpec):
        """A pretrained model: its network (the `nets` architecture) with the file's weights, loaded strictly;
        "random:SEED" weights are written once to <cache>/pretrained/ and then loaded the same way."""
        import io

        import torch

        from strbench.errors import CheckpointError
        from strbench.roles import build_net
        from strbench.nets.pretrained import load_pretrained

        seed = random_seed_of(spec.source)
        path = Path(spec.source).expanduser()
        if seed is not None:
            path = self.root / "pretrained" / f"{spec.role}-{spec.hash[:16]}.pth"
            if not path.is_file():
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    net = build_net(spec.role, spec.train.preset, **spec.train.net)
                buf = io.BytesIO()
                torch.save(net.state_dict(), buf)
                atomic.write_bytes(path, buf.getvalue())
        net = build_net(spec.role, spec.train.preset, **spec.train.net)
        digest = load_pretrained(net, path, role=spec.role)
        if spec.sha256 is not None and digest != spec.sha256:
            raise CheckpointError(f"models.{spec.role}: {path} changed since the cells were planned (sha256 "
                                  f"{digest[:12]}, planned {spec.sha256[:12]}); run the command again")
        return net.to(self.device)


def _checkpoint_step(path: Path) -> int:
    """The step of a checkpoint file, without reading its tensors (memory-mapped, weights_only)."""
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["step"])


def _is_main_rank() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def model_status(cache_dir: str | os.PathLike, spec: ModelSpec) -> str:
    """cached | partial | missing | pretrained | diverged: what the cache holds for `spec` (reads file names
    only)."""
    if spec.pretrained:
        return "pretrained"
    d = Path(cache_dir) / "models" / spec.hash
    if (d / "complete.json").is_file():
        return "cached"
    if (d / DIVERGED).is_file():
        return "diverged"
    if (d / "model.pt").is_file():
        return "partial"
    return "missing"
