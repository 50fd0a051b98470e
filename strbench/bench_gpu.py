"""``strbench bench gpu``: the prepared check any CUDA machine can run in a few minutes.

Per network (strbench's ``paper`` preset and the authors' released ``arch: authors`` sizes) at 256 px:
training-step images/s (forward + L1 + backward + Adam) and sampling-forward images/s (no grad; the texture,
structure and discriminator calls one StrDiffusion step makes), each with bf16 autocast on/off and
channels_last on/off; then one tiny ``train_model`` under ``torchrun --nproc_per_node=1`` (the DDP launch
path). On a CPU it runs too (``--size 32``, one repeat) so the code path is tested; its figures then mean
little. Everything is measured in one run and returned as rows; `on_row(row)` (the CLI prints it) sees each
row as soon as it is measured. ``python -m strbench.bench_gpu --ddp-child`` is the script torchrun runs.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from typing import Callable, Optional

import torch

from strbench.timing import _device_name, _sync


def sampling_roles() -> tuple[str, ...]:
    """The networks one StrDiffusion step calls (its default settings: ablation D)."""
    from strbench import methods

    m = methods.get("strdiffusion")
    return tuple(m.roles(m.make()))


def _inputs(role: str, batch: int, size: int, dev, channels_last: bool):
    """net -> the role's call on fixed random inputs (strbench.roles.Role.example)."""
    from strbench import roles

    args, kw = roles.get(role).example(batch, size, dev, torch.Generator(device="cpu").manual_seed(0))
    if channels_last:
        cl = (lambda v: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v)
        args, kw = tuple(cl(v) for v in args), {k: cl(v) for k, v in kw.items()}
    return lambda net: net(*args, **kw)


def _rate(fn, dev, batch: int, repeats: int) -> float:
    fn()  # warm-up (cudnn autotune, allocator)
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(dev)
    return batch * repeats / (time.perf_counter() - t0)


def bench_gpu(device: str = "auto", size: Optional[int] = None, batch: Optional[int] = None,
              preset: str = "paper", repeats: Optional[int] = None, *, torchrun: bool = True,
              on_row: Optional[Callable[[dict], None]] = None) -> list[dict]:
    from strbench.nets import count_params
    from strbench.roles import build_net
    from strbench.dist import resolve_device

    dev = resolve_device(device)
    size = size or (256 if dev.type == "cuda" else 32)
    batch = batch or (4 if dev.type == "cuda" else 1)
    repeats = repeats or (10 if dev.type == "cuda" else 1)
    p = "paper" if dev.type == "cuda" else "tiny"
    rows: list[dict] = []
    emit = on_row or (lambda row: None)
    for arch in ("strbench", "authors"):
        for role in sampling_roles():
            net = build_net(role, p, arch=arch).to(dev)
            call = None
            for amp in (False, True):
                if amp and dev.type != "cuda":
                    continue
                for cl in (False, True):
                    net = net.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
                    call = _inputs(role, batch, size, dev, cl)
                    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else contextlib.nullcontext
                    opt = torch.optim.Adam(net.parameters(), lr=1e-5)

                    def train_step():
                        opt.zero_grad(set_to_none=True)
                        with ctx():
                            out = call(net)
                        out.float().abs().mean().backward()
                        opt.step()

                    def forward():
                        with torch.no_grad(), ctx():
                            call(net)

                    row = {"arch": arch, "preset": p, "role": role, "params_M": round(count_params(net) / 1e6, 2),
                           "size": size, "batch": batch, "bf16": amp, "channels_last": cl,
                           "train_img_s": round(_rate(train_step, dev, batch, repeats), 2),
                           "sample_img_s": round(_rate(forward, dev, batch, repeats), 2),
                           "device": _device_name(dev)}
                    if dev.type == "cuda":
                        row["peak_mem_GiB"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
                        torch.cuda.reset_peak_memory_stats(dev)
                    rows.append(row)
                    emit(row)
            del net, call
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    if torchrun:
        rows.append(_torchrun_check())
        emit(rows[-1])
    return rows


def _torchrun_check() -> dict:
    """One tiny train_model under `torchrun --nproc_per_node=1` (the DDP launch path): ok and seconds."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m",
           "strbench.bench_gpu", "--ddp-child"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    row = {"check": "torchrun --nproc_per_node=1 train_model", "ok": r.returncode == 0 and "ddp ok" in r.stdout,
           "seconds": round(time.perf_counter() - t0, 1)}
    if not row["ok"]:
        row["stderr"] = r.stderr.strip().splitlines()[-1:] if r.stderr else []
    return row


def _ddp_child() -> None:
    import tempfile

    from strbench.data import builtin_dataset
    from strbench.masks import random_masks
    from strbench.dist import current_dist
    from strbench.train import TrainConfig, train_model

    cfg = TrainConfig(steps=3, batch=2, net={"nf": 8, "ch_mult": [1, 2]}, sde={"T": 4}, checkpoint_every=3,
                      log_every=1, world_size=int(os.environ.get("WORLD_SIZE", "1")), workers=0)
    with tempfile.TemporaryDirectory() as d:
        train_model("irsde", cfg, builtin_dataset(16, "train", limit=8), random_masks(4, 16, seed=0),
                    ckpt_path=f"{d}/m.pt", device="auto")
    print(f"ddp ok world_size={current_dist().world_size}")


if __name__ == "__main__":
    if "--ddp-child" in sys.argv:
        _ddp_child()
