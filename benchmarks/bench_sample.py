"""Sampler overhead benchmark: wall time / (evaluations x bare network forward time), same batch size.

For every sampler (IR-SDE, RePaint*, StrDiffusion C and D) the expected time is
sum over networks of (calls of that network) x (its bare forward time at the same batch size), with
the calls read from ``SampleResult.info["nfe_by_net"]``; the ratio wall / expected is the sampler's own
overhead (noise draws, the SDE arithmetic, compositing, resampling bookkeeping). Aim: <= 1.10.

Run: ``python benchmarks/bench_sample.py [--device cpu] [--size 64] [--batch 4] [--preset tiny]``
(or ``bench_sample(...)`` from Python; it returns the rows it prints).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from strbench.sample import Models, sample
from strbench.sde import make_sde_pair


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timeit(fn: Callable[[], object], dev: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of fn() over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    _sync(dev)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _nets(preset: str, dev: torch.device) -> tuple[Models, str]:
    """Real nets from strbench.nets.build_net when available, else conv stand-ins of the same interface."""
    try:
        from strbench.nets import build_net

        m = Models(texture=build_net("texture", preset), structure=build_net("structure", preset),
                   discriminator=build_net("discriminator", preset), irsde=build_net("irsde", preset))
        kind = f"strbench.nets {preset}"
    except ImportError:
        m = Models(texture=_Standin(3, cond=True), structure=_Standin(1), discriminator=_StandinD(),
                   irsde=_Standin(3))
        kind = "conv stand-in"
    for k in ("texture", "structure", "discriminator", "irsde"):
        getattr(m, k).to(dev).eval()
    return m, kind


class _Standin(torch.nn.Module):
    def __init__(self, ch: int, cond: bool = False, width: int = 32):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(2 * ch + int(cond), width, 3, padding=1), torch.nn.SiLU(),
                                       torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.SiLU(),
                                       torch.nn.Conv2d(width, ch, 3, padding=1))

    def forward(self, x_t, mu, t, cond=None):
        h = [x_t - mu, mu] + ([cond] if cond is not None else [])
        return self.net(torch.cat(h, 1))


class _StandinD(torch.nn.Module):
    def __init__(self, width: int = 32):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(4, width, 3, stride=2, padding=1), torch.nn.SiLU(),
                                       torch.nn.Conv2d(width, 1, 3, stride=2, padding=1))

    def forward(self, y, x, t):
        return self.net(torch.cat([y, x], 1)).mean(dim=(1, 2, 3))


def bench_sample(device: str = "auto", size: int | None = None, batch: int | None = None,
                 preset: str = "tiny", repeats: int | None = None, T: int = 20,
                 threads: int | None = None) -> list[dict]:
    """Print and return one row per sampler: wall s, nfe by net, expected s, overhead ratio.

    `threads` sets torch's CPU threads (on a shared, oversubscribed CPU 1 thread gives steadier timings)."""
    dev = _device(device)
    if threads:
        torch.set_num_threads(threads)
    size = size or 64
    batch = batch or 4
    repeats = repeats or 3
    torch.manual_seed(0)
    models, kind = _nets(preset, dev)
    g = torch.Generator(device=dev).manual_seed(0)
    img = torch.rand(batch, 3, size, size, generator=g, device=dev)
    known = torch.ones(batch, 1, size, size, device=dev)
    known[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 0
    x0 = img.mean(1, keepdim=True)
    mu_x = x0 * known
    sdes = make_sde_pair({"T": T})
    tt = torch.full((batch,), T // 2, dtype=torch.long, device=dev)

    bare_calls = {
        "irsde": lambda: models.irsde(img, img, tt),
        "texture": lambda: models.texture(img, img, tt, cond=x0),
        "structure": lambda: models.structure(x0, mu_x, tt),
        "discriminator": lambda: models.discriminator(img, x0, tt),
    }
    cases = [
        ("IR-SDE", "irsde", {}),
        ("RePaint*", "repaint", {"jump_length": max(1, T // 10), "jump_n_sample": 10}),
        ("StrDiffusion C", "strdiffusion", {"ablation": "C", "x0": x0, "mu_x": mu_x}),
        ("StrDiffusion D", "strdiffusion", {"ablation": "D", "x0": x0, "mu_x": mu_x, "u_max": 5,
                                            "accept": "higher"}),
        ("StrDiffusion D official", "strdiffusion", {"ablation": "D", "mode": "official", "x0": x0,
                                                     "mu_x": mu_x, "u_max": 5, "u_min": 2}),
    ]
    # The machine may be shared: each repeat times the bare forwards right before the sampler, and the
    # ratio is taken per repeat (median reported), so that load changes between the two cancel out.
    rows = []
    for name, method, kw in cases:
        res = {}

        def run():
            res["r"] = sample(method, models, img, known, sdes=sdes,
                              generator=torch.Generator(device=dev).manual_seed(1), **kw)

        run()  # warm-up, and the call counts (fixed by the seed)
        by_net = {k: v for k, v in res["r"].info["nfe_by_net"].items() if v}
        ratios, walls, expects = [], [], []
        for _ in range(repeats):
            with torch.no_grad():
                bare = {k: _timeit(bare_calls[k], dev, 5, warmup=1) for k in by_net}
            expected = sum(n * bare[k] for k, n in by_net.items())
            wall = _timeit(run, dev, 1, warmup=0)
            ratios.append(wall / expected)
            walls.append(wall)
            expects.append(expected)
        rows.append({"sampler": name, "nfe": res["r"].nfe, "nfe_by_net": by_net,
                     "wall_s": statistics.median(walls), "expected_s": statistics.median(expects),
                     "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                     "bare_ms": {k: v * 1e3 for k, v in bare.items()}})
    print(f"sampler overhead: device={dev} nets={kind} size={size} batch={batch} T={T} repeats={repeats} "
          f"cpu threads={torch.get_num_threads()}")
    print(f"{'sampler':24s} {'nfe':>5s} {'wall s':>7s} {'expect s':>8s} {'ratio':>6s} {'(min-max)':>13s}  nfe by net")
    for r in rows:
        print(f"{r['sampler']:24s} {r['nfe']:5d} {r['wall_s']:7.3f} {r['expected_s']:8.3f} {r['ratio']:6.3f} "
              f"({r['ratio_min']:.3f}-{r['ratio_max']:.3f})  {r['nfe_by_net']}")
    print("bare forward ms (last repeat): " + ", ".join(
        f"{k} {v:.2f}" for k, v in {k: v for r in rows for k, v in r['bare_ms'].items()}.items()))
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--T", type=int, default=20)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    a = p.parse_args(argv)
    bench_sample(a.device, a.size, a.batch, a.preset, a.repeats, T=a.T, threads=a.threads)


if __name__ == "__main__":
    main()
