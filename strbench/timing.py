"""Timing helpers shared by the benchmarks (strbench/bench.py, strbench/bench_gpu.py)."""
from __future__ import annotations

import time
from typing import Callable

import torch


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _device_name(dev: torch.device) -> str:
    """The device as the bench tables print it: the GPU's name, or cpu with its thread count."""
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"


def _per_step(fn: Callable[[], object], dev: torch.device, k: int) -> float:
    """Wall seconds per call of fn over a block of k calls (synchronised at the block ends)."""
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(k):
        fn()
    _sync(dev)
    return (time.perf_counter() - t0) / k
