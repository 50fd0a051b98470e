"""Pre-flight checks of what a run will read, before any tracking store, run or cache entry exists.

``expand`` plans the cells (:func:`strbench.experiment.plan.expand`, pure) with what planning needs from
this machine: the launch's world size (torchrun's WORLD_SIZE) and the sha256 of pretrained weights files,
read here. ``check_resources`` (settings and folders: cheap) and ``preflight`` (it and the contents: the
images the cells will sample, the mask folder as the run bins it, the FID weights file, pretrained weights
files, the tracking store) both raise one line naming the file, the key and the fix, and create nothing.
``strbench run``, ``--dry-run`` and ``validate`` run ``preflight``.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Optional

from strbench import dist
from strbench.config import Experiment
from strbench.errors import ConfigError, DataError, StrbenchError, WeightsError
from strbench.experiment import claims, plan
from strbench.experiment.plan import Cell, unique_models

TRAIN_SAMPLE = 64  # training images decoded by the pre-flight (evenly spaced); the loader names any other bad file


def expand(exp: Experiment, *, world_size: Optional[int] = None) -> list[Cell]:
    """The experiment's cells (plan.expand) for this launch: world_size defaults to torchrun's WORLD_SIZE (1
    without torchrun), and pretrained weights files enter their model's hash by their sha256 (weights_digest)."""
    ws = dist.world_size() if world_size is None else world_size
    return plan.expand(exp, world_size=ws, digest=content_digest)


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    from strbench.fid_weights import file_sha256

    return file_sha256(path)


def weights_digest(path: str, key: str) -> str:
    """sha256 of a weights file (memoised per path, size and mtime); a missing file is one ConfigError line."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{key}: file {p} not found; give the path of the released checkpoint (a state_dict "
                          "file), or random:SEED for random weights")
    st = p.stat()
    return _file_digest(str(p.resolve()), st.st_size, st.st_mtime_ns)


def content_digest(path: str, key: str) -> str:
    """plan.expand's digest: a weights file's sha256, or for masks.path (masks.pairing: by_name) the mask folder's
    (strbench.pairing.folder_digest); a missing file or folder is one error line naming the key."""
    if key.endswith("masks.path"):
        from strbench.pairing import folder_digest

        try:
            return folder_digest(Path(path).expanduser())
        except StrbenchError as e:
            raise _prefixed(key.removesuffix("masks.path").removesuffix(": "), e) from None
    return weights_digest(path, key)


def check_resources(exp: Experiment, cells: list[Cell]) -> None:
    """Dataset and mask folders, split lists, weights files and the device: raise one line naming
    the key and the fix."""
    src = exp.source
    try:  # the claims' timing from the YAML and the environment together
        claims.settings(exp.claims.grace_s, exp.claims.heartbeat_s)
    except ConfigError as e:
        raise _prefixed(src, e) from None
    m = exp.masks  # pairing by file name and a set's own folder read a mask folder
    paths = [k for k, s in m.sets.items() if s.path is not None]
    if m.source != "folder" and (m.pairing == "by_name" or paths):
        raise ConfigError(f"{src}: masks.sets.{paths[0]}.path: a set's folder is read with masks.source: folder; set "
                          "it, or remove the path" if paths else f"{src}: masks.pairing: by_name pairs the files of "
                          "a mask folder with their images; set masks.source: folder and masks.path, or leave "
                          "masks.pairing at seeded")
    seen: set = set()
    for c in cells:
        ds, mk = c.config.dataset, c.config.mask
        splits = ds.splits.model_dump()
        key = (ds.type, ds.root, tuple(sorted(splits.items())), mk.source, mk.path)
        if key in seen:
            continue
        seen.add(key)
        if ds.type == "builtin":
            if ds.root or any(splits.values()):
                raise ConfigError(f"{src}: dataset.root/splits are for folder datasets; dataset.type 'builtin' "
                                  "uses the photos shipped with strbench's dependencies: remove them or set dataset.type")
        else:
            if not ds.root:
                raise ConfigError(f"{src}: dataset.root: required for dataset.type {ds.type!r}; set it in the "
                                  f"YAML or with --set dataset.root=/path/to/{ds.type}")
            root = Path(ds.root).expanduser()
            if not root.is_dir():
                raise DataError(f"{src}: dataset.root: folder {root} does not exist; point dataset.root at the "
                                f"{ds.type} dataset (--set dataset.root=/path)")
            for split, f in splits.items():
                if f and not (Path(f).expanduser().is_file() or (root / f).is_file()):
                    raise DataError(f"{src}: dataset.splits.{split}: file list {f} not found (absolute or "
                                    f"relative to dataset.root {root})")
        if mk.source == "folder":
            if not mk.path:
                raise ConfigError(f"{src}: masks.path: required when masks.source is 'folder'; set it to a folder "
                                  "of mask PNGs (e.g. --set masks.path=/data/irregular_mask/test)")
            if mk.polarity is None:
                raise ConfigError(f"{src}: masks.polarity: required when masks.source is 'folder'; open one mask "
                                  "and set white_is_hole or white_is_known (e.g. --set masks.polarity=white_is_hole)")
            p = Path(mk.path).expanduser()
            if not p.is_dir():
                raise DataError(f"{src}: masks.path: folder {p} does not exist; point it at a folder of mask "
                                "PNGs (e.g. the NVIDIA irregular mask test set)")
    check_net_sizes(exp, cells)
    for m in unique_models(cells):
        if m.source == "":
            raise ConfigError(f"{src}: models.{m.role}: not set; give the released {m.role} checkpoint "
                              f"(--set models.{m.role}=/path/to/{m.role}.pth), or random:SEED for random weights")
    w = exp.metrics.fid_weights
    if (exp.metrics.fid or exp.metrics.kid) and w and not Path(w).expanduser().is_file():
        raise WeightsError(f"{src}: metrics.fid_weights: file {w} not found; give the path of the Inception "
                           "weights file or remove the key to use the built-in converted weights")
    w = exp.metrics.lpips_weights
    if exp.metrics.lpips and w and not Path(w).expanduser().is_file():
        raise WeightsError(f"{src}: metrics.lpips_weights: file {w} not found; give the path of torchvision's "
                           f"{'alexnet' if exp.metrics.lpips_net == 'alex' else 'vgg16'} weights file or remove the "
                           "key to use torch.hub's cache")
    if exp.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{src}: device: 'cuda' requested but CUDA is not available; use auto or cpu")


def check_net_sizes(exp: Experiment, cells: list[Cell]) -> None:
    """strbench's U-Nets take images whose side is a multiple of 2^(len(ch_mult)-1): check the training and
    evaluation sizes before anything runs (the net itself would only say so inside the first training step)."""
    from strbench.roles import net_kwargs

    seen: set = set()
    for c in cells:
        for m in c.models:
            if m.role == "discriminator" or (m.hash, c.config.dataset.size) in seen:
                continue
            seen.add((m.hash, c.config.dataset.size))
            kw = net_kwargs(m.role, m.train.preset, **m.train.net)
            if kw.get("arch", "strbench") != "strbench" or "ch_mult" not in kw:
                continue  # the authors' U-Nets pad any size
            k = 2 ** (len(kw["ch_mult"]) - 1)
            for size in sorted({c.config.dataset.size, m.data.dataset.size}):
                if size % k:
                    where = f"nets.roles.{m.role}" if m.role in exp.nets.roles else "nets.unet"
                    raise ConfigError(f"{exp.source}: dataset.size: {size} is not a multiple of {k} = 2^(len(ch_mult)-1)"
                                      f" for the {m.role} net's ch_mult {list(kw['ch_mult'])} ({where} / nets.preset "
                                      f"{m.train.preset}); use a size that is a multiple of {k} or a shorter ch_mult")


def _prefixed(src: str, e: StrbenchError) -> StrbenchError:
    msg = str(e)
    return type(e)(msg if msg.startswith(src) else f"{src}: {msg}")


def _images(ds_spec, split: str, *, limit=None):
    from strbench.data import make_dataset
    from strbench.experiment.cache import dataset_config

    return make_dataset(dataset_config(ds_spec, split, limit=limit))


def preflight(exp: Experiment, cells: list[Cell], *, tracking: bool = True, splits: tuple = ("test",)) -> list:
    """check_resources, then read what the run will read (the evaluation images of `splits`: test for a run,
    val for tuning): returns the passed checks (strbench.preflight.Checked)."""
    from strbench import preflight as pf
    from strbench.experiment.evaluate import pick_indices

    check_resources(exp, cells)
    src = exp.source
    done: list = []
    try:
        # evaluation images the cells sample (test, and val for tuning), and training images (a sample)
        seen: dict = {}
        for c in cells:
            ds = c.config.dataset
            if c.config.mask.pairing == "by_name":  # its images: check_by_name below
                if set(splits) - {"test"}:
                    raise ConfigError("masks.pairing: by_name pairs the test images with their masks, and tuning "
                                      "scores the val split; tune with masks.pairing: seeded")
                continue
            if ds.type == "builtin":
                continue
            for split in splits:
                key = (ds.model_dump_json(), split)
                if key not in seen:
                    seen[key] = (_images(ds, split), set())
                seen[key][1].update(pick_indices(len(seen[key][0]), c.config.mask.per_bin))
        for (_, split), (data, idx) in seen.items():
            files = [data.files[i] for i in sorted(idx)]
            done.append(pf.check_images(files, key=f"dataset.root ({split} images)"))
        for m in unique_models(cells):
            d = m.data.dataset
            if m.pretrained or d.type == "builtin":
                continue
            key = (d.model_dump_json(), "train")
            if key not in seen:
                seen[key] = (_images(d, "train", limit=d.limit), set())
                done.append(pf.check_images(seen[key][0].files, key="dataset.root (train images)", sample=TRAIN_SAMPLE))
        # mask folders, binned as the run bins them (test: the first per_bin masks of a bin, val: the next)
        done += check_by_name(cells)
        masks_seen = set()
        for c in cells:
            mk, size = c.config.mask, c.config.dataset.size
            if mk.source != "folder" or mk.pairing == "by_name" or (mk.path, mk.lo, mk.hi) in masks_seen:
                continue
            masks_seen.add((mk.path, mk.lo, mk.hi))
            done.append(pf.check_mask_folder(mk.path, size, mk.polarity, [(mk.lo, mk.hi)], 2 * mk.per_bin,
                                             key="masks.path", need=1))
        if exp.metrics.fid or exp.metrics.kid:
            done.append(pf.check_fid_weights(exp.metrics.fid_weights))
        if exp.metrics.lpips:
            done.append(pf.check_lpips_weights(exp.metrics.lpips_net, exp.metrics.lpips_weights))
        done += [check_pretrained(m) for m in unique_models(cells) if m.pretrained and m.sha256]
        if tracking:
            done.append(pf.check_tracking(exp.tracking.uri))
            done.append(pf.check_artifacts(exp.tracking.artifact_location, exp.tracking.uri))
    except StrbenchError as e:
        raise _prefixed(src, e) from None
    return done


def check_by_name(cells: list[Cell]) -> list:
    """strbench.preflight.check_pairs once per mask folder (and dataset) of the masks.pairing by_name cells, with
    every bin they score; the dataset's test files are listed only where the masks are named after them."""
    from strbench import pairing as P
    from strbench import preflight as pf

    groups: dict = {}
    for c in cells:
        mk, ds = c.config.mask, c.config.dataset
        if mk.pairing == "by_name":
            key = (mk.path, mk.polarity, ds.size, ds.model_dump_json())
            bins = groups.setdefault(key, (ds, {}))[1]
            bins[(mk.lo, mk.hi)] = max(mk.per_bin, bins.get((mk.lo, mk.hi), 0))
    out = []
    for (path, polarity, size, _), (ds, bins) in groups.items():
        images = image_root = None
        if ds.type != "builtin" and P.layout_of(path) == P.NAMED:
            data = _images(ds, "test")
            images, image_root = data.files, data.root
        out.append(pf.check_pairs(path, size, polarity, [(lo, hi, n) for (lo, hi), n in bins.items()],
                                  images=images, image_root=image_root))
    return out


def check_pretrained(spec):
    """A pretrained weights file matches its network key for key (built on the meta device: no weights)."""
    import torch

    from strbench.roles import build_net
    from strbench.nets.pretrained import load_pretrained
    from strbench.preflight import Checked

    with torch.device("meta"):
        net = build_net(spec.role, spec.train.preset, **spec.train.net)
    try:
        load_pretrained(net, spec.source, role=spec.role)
    except StrbenchError as e:  # name the key the file came from
        key, msg = f"models.{spec.role}", re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # torch's messages hold ANSI bold
        raise type(e)(msg if key in msg else f"{key}: {msg}") from None
    return Checked(f"models.{spec.role}", f"{spec.source} (sha256 {spec.sha256[:12]}...) matches the {spec.role} net")
