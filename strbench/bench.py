"""Overhead benchmarks behind ``strbench bench``: a registry of named benchmarks.

``train``: per role, the time of one full training step (``Trainer.step``: lr, batch/mask/level/noise
sampling, structure guidance, target computation, forward, backward, grad clipping, Adam, EMA, loss
bookkeeping) against the bare forward + backward + Adam step of the same network on fixed tensors;
the ratio is the training loop's own overhead (aim <= 1.15). Also the parameter count of every
preset and role. Everything is one library call (``bench_train``) that returns its rows; the CLI
(strbench/cli/bench.py) prints them.

``data``: the streaming loader's images/s at 256 px (generated PNGs in a temp folder) beside a
paper-preset training step's images/s, and their ratio (``bench_data``).

Each benchmark returns its figures with the settings they were measured under; nothing here prints.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from strbench.errors import ConfigError
from strbench.timing import _device_name, _per_step


def _synthetic(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random images (upsampled noise) and random box masks; no files, no downloads."""
    g = torch.Generator().manual_seed(seed)
    low = max(size // 4, 2)
    imgs = torch.nn.functional.interpolate(torch.rand(n, 3, low, low, generator=g), size=size, mode="bilinear",
                                           align_corners=False).clamp(0, 1)
    masks = torch.ones(n, 1, size, size)
    for i in range(n):
        h, w = (int(v) for v in torch.randint(size // 4, size // 2 + 1, (2,), generator=g))
        y, x = (int(v) for v in torch.randint(0, size - max(h, w) + 1, (2,), generator=g))
        masks[i, :, y:y + h, x:x + w] = 0
    return imgs, masks


def _bare_step(tr) -> Callable[[], None]:
    """Forward + L1 + backward + Adam on one fixed batch of the trainer's own tensors (no sampling)."""
    out: dict = {}
    g = torch.Generator(device=tr.device)
    g.manual_seed(1)
    with torch.no_grad():
        tr.objective(tr, tr.net, g, out)
    net, opt = tr.net, tr.opt
    if "real" in out:  # a discriminator's objective: real and fake under the structure cond
        real, fake, x = out["real"], out["fake"], out["cond"]
        t = torch.randint(0, tr.T, (real.shape[0],), generator=g, device=tr.device)

        def loss_fn():
            return net(real, x, t).mean() - net(fake, x, t).mean() + net(real, x, t).mean()
    else:
        x_t, target = out["x_t"], out["target"]
        mu = torch.zeros_like(x_t)
        cond = out.get("cond")  # a guided noise net's structure state
        t = torch.randint(1, tr.T + 1, (x_t.shape[0],), generator=g, device=tr.device)

        def loss_fn():
            eps = net(x_t, mu, t) if cond is None else net(x_t, mu, t, cond=cond)
            return (eps.float() - target).abs().mean()

    def step():
        with tr.autocast():
            loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench_train(device: str = "auto", size: Optional[int] = None, batch: Optional[int] = None,
                preset: str = "tiny", repeats: Optional[int] = None, roles: Optional[Sequence[str]] = None,
                block: int = 10, amp: bool = False) -> dict:
    """Full training step vs bare forward+backward+step per role (default: every registered role), and
    parameter counts per preset: ``{"overhead": rows, "params": rows, "setup": the settings used}``."""
    from strbench import roles as role_registry
    from strbench.dist import resolve_device
    from strbench.nets import PRESETS, count_params
    from strbench.roles import build_net
    from strbench.train import TrainConfig, Trainer

    ROLES = role_registry.names()
    roles = ROLES if roles is None else tuple(roles)
    if preset not in PRESETS:
        raise ConfigError(f"bench --preset: unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    dev = resolve_device(device)
    size = size or PRESETS[preset]["size"]
    batch = batch or 8
    repeats = repeats or 7
    imgs, masks = _synthetic(max(2 * batch, 16), size)
    rows = []
    for role in roles:
        cfg = TrainConfig(preset=preset, batch=batch, steps=10 ** 9, lr=1e-4, amp=amp)
        tr = Trainer(role, cfg, imgs, masks, device=dev)
        bare = _bare_step(tr)
        for _ in range(2):  # warm-up (allocator, cudnn autotune)
            tr.step()
            bare()
        full_t, bare_t = [], []
        for _ in range(repeats):  # interleaved blocks: drift and contention hit both alike
            full_t.append(_per_step(tr.step, dev, block))
            bare_t.append(_per_step(bare, dev, block))
        f, b = statistics.median(full_t), statistics.median(bare_t)
        rows.append({"role": role, "params": count_params(tr.net), "full_ms": 1e3 * f, "bare_ms": 1e3 * b,
                     "ratio": f / b})
        tr.close()
    params = [{"preset": p, **{r: count_params(build_net(r, p)) for r in ROLES}} for p in PRESETS]
    setup = {"preset": preset, "size": size, "batch": batch, "device": _device_name(dev), "amp": amp,
             "repeats": repeats, "block": block}
    return {"overhead": rows, "params": params, "setup": setup}


def bench_sample(device: str = "auto", size: Optional[int] = None, batch: Optional[int] = None,
                 preset: str = "tiny", repeats: Optional[int] = None, T: int = 20,
                 threads: Optional[int] = None, only: Optional[Sequence[str]] = None) -> list[dict]:
    """Sampler overhead: wall time / sum over networks of (calls x bare forward time), same batch size.

    For IR-SDE, RePaint*, StrDiffusion C and D (paper and official modes), and the fast solvers (posterior, mr
    order 2 ODE and SDE at T // 4 steps) for IR-SDE and StrDiffusion C and D official, with real nets of `preset`, the
    calls come from ``SampleResult.info["nfe_by_net"]``; each repeat times the bare forwards right before
    the sampler and the ratio is taken per repeat (median reported), so load changes on a shared machine
    hit both alike. `threads` sets torch's CPU threads (1 gives steadier timings on an oversubscribed CPU).
    Aim: ratio <= 1.10. One row per sampler, each with the settings used (preset, size, batch, T, device,
    repeats); `only` keeps the samplers of those names.
    """
    from strbench import methods
    from strbench import roles as role_registry
    from strbench.nets import PRESETS
    from strbench.roles import build_net
    from strbench.sample import Models, sample
    from strbench.sde import make_sde_pair
    from strbench.dist import resolve_device

    if preset not in PRESETS:
        raise ConfigError(f"bench --preset: unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    size = size or PRESETS[preset]["size"]
    batch = batch or 4
    repeats = repeats or 5
    torch.manual_seed(0)
    imgs, masks = _synthetic(batch, size)
    img, known = imgs.to(dev), masks.to(dev)
    x0 = img.mean(1, keepdim=True)
    mu_x = x0 * known
    sdes = make_sde_pair({"T": T})
    strd = {"x0": x0, "mu_x": mu_x}
    cases = [
        ("IR-SDE", "irsde", {}),
        ("RePaint*", "repaint", {"jump_length": max(1, T // 10), "jump_n_sample": 10}),
        ("StrDiffusion C", "strdiffusion", {"ablation": "C", **strd}),
        ("StrDiffusion D", "strdiffusion", {"ablation": "D", "u_max": 5, "accept": "higher", **strd}),
        ("StrDiffusion D official", "strdiffusion", {"ablation": "D", "mode": "official", "u_max": 5, "u_min": 2,
                                                     **strd}),
    ]
    n = max(1, T // 4)  # the fast solvers (docs/SCIENCE.md#solvers) at a quarter of the levels
    for label, sol in ((f"posterior {n}", {"solver": "posterior"}),
                       (f"mr2 ode {n}", {"solver": "mr", "order": 2, "solver_type": "ode"}),
                       (f"mr2 sde {n}", {"solver": "mr", "order": 2, "solver_type": "sde"})):
        cases += [(f"IR-SDE {label}", "irsde", {**sol, "steps": n}),
                  (f"StrDiffusion C {label}", "strdiffusion", {"ablation": "C", **sol, "steps": n, **strd})]
    cases.append((f"StrDiffusion D official mr2 ode {n}", "strdiffusion",
                  {"ablation": "D", "mode": "official", "u_max": 5, "u_min": 2, "solver": "mr", "steps": n, **strd}))
    if only is not None:  # a subset of the samplers, by name
        cases = [c for c in cases if c[0] in set(only)]
    needed = dict.fromkeys(r for _, m, kw in cases for r in methods.get(m).roles(methods.get(m).make(
        **{k: v for k, v in kw.items() if k not in strd})))
    models = Models(**{r: build_net(r, preset).to(dev).eval() for r in needed})
    g = torch.Generator().manual_seed(0)
    bare_calls = {}
    for r in needed:  # each network on random inputs of the batch's shape (strbench.roles.Role.example)
        args, kw = role_registry.get(r).example(batch, size, dev, g)
        bare_calls[r] = (lambda net, a, k: (lambda: net(*a, **k)))(models[r], args, kw)
    rows = []
    setup = {"preset": preset, "size": size, "batch": batch, "T": T, "device": _device_name(dev), "repeats": repeats}
    with torch.no_grad():
        for name, method, kw in cases:
            res: dict = {}

            def run():
                res["r"] = sample(method, models, img, known, sdes=sdes,
                                  generator=torch.Generator(device=dev).manual_seed(1), **kw)

            run()  # warm-up; the call counts are fixed by the seed
            by_net = {k: v for k, v in res["r"].info["nfe_by_net"].items() if v}
            for k in by_net:
                _per_step(bare_calls[k], dev, 2)  # warm-up
            ratios, walls, expects = [], [], []
            for _ in range(repeats):
                bare = {k: _per_step(bare_calls[k], dev, 5) for k in by_net}
                expected = sum(n * bare[k] for k, n in by_net.items())
                wall = _per_step(run, dev, 1)
                ratios.append(wall / expected)
                walls.append(wall)
                expects.append(expected)
            rows.append({"sampler": name, "nfe": res["r"].nfe, "nfe_by_net": by_net,
                         "wall_s": statistics.median(walls), "expected_s": statistics.median(expects),
                         "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                         **setup})
    return rows


def write_bench_images(folder: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    """n PNGs (size x 1.25 size, landscape): smooth colour fields with a few hard-edged shapes, so that
    random crops move and Canny finds edges."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size * 5 // 4, size
    files = []
    for i in range(n):
        low = Image.fromarray(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        draw = ImageDraw.Draw(low)
        for _ in range(4):
            x0, y0 = int(rng.integers(0, w * 3 // 4)), int(rng.integers(0, h * 3 // 4))
            x1, y1 = x0 + int(rng.integers(2, 2 + w // 3)), y0 + int(rng.integers(2, 2 + h // 3))
            draw.rectangle((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        files.append(folder / f"{i:05d}.png")
        low.save(files[-1])
    return files


def bench_data(device: str = "auto", size: Optional[int] = None, batch: Optional[int] = None,
               preset: Optional[str] = None, repeats: Optional[int] = None, images: int = 300,
               workers: Optional[int] = None) -> dict:
    """Streaming loader images/s vs a training step's images/s, measured in one run, as a ratio.

    The loader (strbench.stream, `workers` processes, default from the CPU count) reads `images`
    generated PNGs from a temp folder with resize random_crop at `size` px (256), flips, draws a fresh
    mask per sample and computes the texture role's structure maps (gray2edge, Canny sigma 3). The
    step is ``Trainer.step(batch)`` of the texture role on a batch already on the device (no loading),
    preset `preset`: ``paper`` unless --preset names another (the CLI's default ``tiny`` counts as
    unset). ratio = loader / step: >= 1 means the loader keeps up with training.
    """
    import tempfile

    from strbench import stream
    from strbench.data import ImageFolderDataset
    from strbench.nets import PRESETS
    from strbench.dist import resolve_device
    from strbench.train import TrainConfig, Trainer

    preset = preset or "paper"
    if preset not in PRESETS:
        raise ConfigError(f"bench --preset: unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    dev = resolve_device(device)
    size = size or 256
    batch = batch or (8 if dev.type == "cuda" else 1)  # a paper step on a CPU takes tens of seconds per image
    repeats = repeats or (5 if dev.type == "cuda" else 2)
    workers = stream.default_workers() if workers is None else workers
    with tempfile.TemporaryDirectory(prefix="strbench-bench-data-") as tmp:
        write_bench_images(Path(tmp), images, size)
        ds = ImageFolderDataset(tmp, size, split="all", resize="random_crop")
        masks = stream.MaskGenerator(size)
        cfg = TrainConfig(preset=preset, batch=batch, steps=10 ** 9, workers=workers)  # default variant and sigma
        tr = Trainer("texture", cfg, ds, masks, device=dev)
        spec = tr.spec
        n_batches = max(4, 64 // batch)
        it = iter(stream.make_loader(tr.source, masks, spec, workers=workers, pin_memory=dev.type == "cuda"))
        for _ in range(2):  # warm-up: worker start, first files
            next(it)
        load_t = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(n_batches):
                next(it)
            load_t.append((time.perf_counter() - t0) / (n_batches * batch))
        del it
        fixed = tr.data_batch()
        for _ in range(2 if dev.type == "cuda" else 1):  # warm-up (allocator, cudnn autotune)
            tr.step(fixed)
        block = 5 if dev.type == "cuda" else 1
        step_t = [_per_step(lambda: tr.step(fixed), dev, block) / batch for _ in range(repeats)]
        tr.close()
    loader, step = 1.0 / statistics.median(load_t), 1.0 / statistics.median(step_t)
    row = {"size": size, "batch": batch, "images": images, "workers": workers, "preset": preset,
           "device": _device_name(dev), "repeats": repeats, "loader_img_s": loader, "step_img_s": step,
           "ratio": loader / step}
    return row


# name -> fn(device, size, batch, preset, repeats) -> what it measured (strbench/cli/bench.py prints it)
def _bench_gpu(**kw):
    from strbench.bench_gpu import bench_gpu

    return bench_gpu(**kw)


BENCHES: dict[str, Callable[..., object]] = {
    "train": bench_train,
    "sample": bench_sample,
    "data": bench_data,
    "gpu": _bench_gpu,  # the prepared CUDA check (strbench/bench_gpu.py); runs at 32 px on a CPU
}

