"""Plain helpers shared by several test modules (import them: ``from helpers import tiny``).

Fixtures live in ``conftest.py``; these are ordinary functions a test calls with its own arguments.
- ``tiny(tmp_path, **overrides)``: an experiment config that trains and samples in seconds.
- ``migrated_db(tmp_path)``: an empty, migrated MLflow sqlite DB at tmp_path/mlflow.db.
- ``runs(tmp_path)``: the MLflow runs of the tiny experiment tracked there.
- ``train_data(n, seed, size)``: smooth random images and two box masks for training tests.
- ``poison_losses(monkeypatch, role, from_step)``: a role's training loss turns NaN from a given step.
- ``write_png(path, arr, ...)``: a minimal PNG writer for bit depths Pillow cannot write.
- ``deterministic_fill(state_dict)``: the seeded weights of the authors' network fixtures.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from strbench import config as C
from strbench import roles


def tiny(tmp_path: Path, **extra) -> dict:
    """A config that trains and samples in seconds: 16 px, T = 5, 2-4 training steps."""
    d = {
        "name": "tiny",
        "dataset": {"type": "builtin", "size": 16, "train_limit": 32},
        "masks": {"bins": [[0.1, 0.3], [0.3, 0.5]], "per_bin": 2, "train": {"count": 8}},
        "schedule": {"texture": {"T": 5}},
        "methods": {"IR-SDE": {"method": "irsde"},
                    "RePaint*": {"method": "repaint", "jump_length": 2, "jump_n_sample": 2},
                    "StrDiffusion": {"method": "strdiffusion", "u_max": 2}},
        "nets": {"unet": {"nf": 8, "ch_mult": [1, 2]}, "roles": {"discriminator": {"nf": 8, "ch_mult": [1, 2]}}},
        "train": {"steps": 4, "batch": 2, "log_every": 1, "checkpoint_every": 1},
        "sample": {"batch": 2},
        "metrics": {"fid": False, "kid": False, "bootstrap": 20, "grid_images": 2, "strip_frames": 3},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "artifact_location": str(tmp_path / "mlartifacts")},
        "cache_dir": str(tmp_path / "cache"),
        "device": "cpu",
        "floors": False,  # no classical floor methods: these tests count cells of the three methods
    }
    for k, v in extra.items():
        C.set_path(d, k, v)
    return d


_TEMPLATE: dict = {}


def migrated_db(tmp_path: Path) -> None:
    """Put an empty, already migrated MLflow sqlite DB at tmp_path/mlflow.db (creating one runs
    MLflow's schema migrations, ~5 s; tests copy a template made once per session)."""
    import atexit
    import shutil
    import tempfile

    if "path" not in _TEMPLATE:
        from strbench import tracking

        d = Path(tempfile.mkdtemp(prefix="strbench-mlflow-template-"))
        atexit.register(shutil.rmtree, d, True)  # one per test process; left behind, 42 of them piled up in /tmp
        tracking.Tracker(f"sqlite:///{d}/mlflow.db", "template", str(d / "art"))
        _TEMPLATE["path"] = d / "mlflow.db"
    shutil.copy(_TEMPLATE["path"], tmp_path / "mlflow.db")


def runs(tmp_path: Path):
    """The MLflow runs of the tiny experiment tracked in tmp_path/mlflow.db (a pandas frame)."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    return mlflow.search_runs(experiment_names=["tiny"])


def train_data(n=4, seed=0, size=32):
    """Smooth random RGB images (upsampled 8x8 noise) and two box masks (known = 1, holes = 0)."""
    g = torch.Generator().manual_seed(seed)
    imgs = torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=size, mode="bilinear",
                                           align_corners=False)
    masks = torch.ones(2, 1, size, size)
    masks[0, :, 4:16, 8:20] = 0
    masks[1, :, 16:28, 12:30] = 0
    return imgs, masks


def poison_losses(monkeypatch, role: str, from_step: int) -> dict:
    """Make the `role` training step's loss NaN from its `from_step`-th call on; returns {"n": calls so far}."""
    calls = {"n": 0}
    declared = roles.get(role)
    orig = declared.objective

    def poisoned(tr, model, g, out=None):
        calls["n"] += 1
        loss = orig(tr, model, g, out)
        return loss * float("nan") if calls["n"] >= from_step else loss

    monkeypatch.setitem(roles.registry(), role, dataclasses.replace(declared, objective=poisoned))
    return calls


def write_png(path, arr, *, color_type, bit_depth, palette=None, trns=None):
    """Minimal PNG writer (Pillow cannot write 16-bit colour): big-endian samples, filter 0, no interlace."""
    a = np.asarray(arr)
    a = a[:, :, None] if a.ndim == 2 else a
    h = a.shape[0]
    raw = np.ascontiguousarray(a.astype(">u2" if bit_depth == 16 else np.uint8)).view(np.uint8).reshape(h, -1)
    body = b"".join(b"\x00" + row.tobytes() for row in raw)

    def chunk(tag, payload):
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", a.shape[1], h, bit_depth, color_type, 0, 0, 0))
    if palette is not None:
        out += chunk(b"PLTE", bytes(np.asarray(palette, np.uint8).ravel()))
    if trns is not None:
        out += chunk(b"tRNS", bytes(trns))
    path.write_bytes(out + chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b""))
    return path


def deterministic_fill(sd_like, seed: int = 1234) -> dict:
    """The fixtures' weights (their config["state_dict_fill"]): one seeded generator over the keys in order;
    u, v unit vectors, LayerNorm gains 1 + 0.1 r, biases 0.1 r, other tensors r / sqrt(fan_in)."""
    g = torch.Generator("cpu").manual_seed(seed)
    out = collections.OrderedDict()
    for k, v in sd_like.items():
        r = torch.randn(tuple(v.shape), generator=g, dtype=torch.float32)
        if k.endswith(("weight_u", "weight_v")):
            r = r / r.norm()
        elif k.endswith(".g"):
            r = 1 + 0.1 * r
        elif k.endswith("bias"):
            r = 0.1 * r
        else:
            r = r / math.sqrt(math.prod(v.shape[1:]))
        out[k] = r
    return out


def oracle(sde, x0):
    """The noise predictor that returns the exact noise implied by the true x_0 (every sampler then returns x_0)."""
    from strbench import sde as S

    def net(x_t, mu, t, cond=None):
        return S.true_noise(sde, x_t, x0, mu, t)
    return net


def dummy_net(x_t, mu, t, cond=None):
    """A deterministic stand-in noise net (depends on state, mean, time and, for the texture, cond)."""
    out = torch.tanh(3 * (x_t - mu)) + 0.01 * t.view(-1, 1, 1, 1).to(x_t.dtype)
    if cond is not None:
        out = out + 0.1 * cond
    return out


# a tiny base experiment for tune tests on the real runner (IR-SDE, T = 4, two bins of 2 images, 4 training steps)
TINY_TUNE_BASE = """\
name: tune-staged
dataset: {type: builtin, size: 16}
masks: {bins: [[0.1, 0.3], [0.3, 0.5]], per_bin: 2, train: {count: 8}}
methods: {IR-SDE: {method: irsde}}
schedule: {texture: {T: 4}}
nets: {preset: tiny, unet: {nf: 8, ch_mult: [1, 2]}}
train: {steps: 4, batch: 2, checkpoint_every: 100, log_every: 100}
sample: {batch: 2}
metrics: {fid: false, bootstrap: 0}
floors: false
device: cpu
"""
