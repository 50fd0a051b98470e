"""Processes: devices, ranks and the world size, in one place.

    dev = resolve_device("auto")              # cpu | cuda[:N], checked
    info = dist_env()                         # torchrun's WORLD_SIZE / RANK / LOCAL_RANK (one process without)
    info, dev = init_distributed("auto")      # under torchrun: join the process group once, this rank's device
    info = current_dist()                     # the initialised group's world size and rank, else one process
    parts = gather(records)                   # every rank's records (all_gather_object), rank order
    x = broadcast(x)                          # rank 0's value on every rank

Only this module reads torchrun's environment and calls ``torch.distributed``'s group functions; training
(DDP), the runner (cells dealt to ranks) and the evaluation (a cell's batches dealt to ranks) use it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from strbench.errors import ConfigError

__all__ = ["DistInfo", "barrier", "broadcast", "current_dist", "dist_env", "gather", "init_distributed",
           "resolve_device", "world_size"]


def resolve_device(device="auto"):
    """`auto` (CUDA when available, else the CPU), `cpu` or `cuda[:N]` as a torch.device; an unknown name or
    CUDA asked for without it is one ConfigError line."""
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"device: {e}; use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {device!r} requested but CUDA is not available; use auto or cpu")
    return dev


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torchrun launch (world_size 1, rank 0 without one)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_env(env: Optional[Mapping[str, str]] = None) -> DistInfo:
    """DistInfo from torchrun's variables WORLD_SIZE, RANK, LOCAL_RANK (absent: one process)."""
    env = os.environ if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1") or 1)
        rank, local = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", env.get("RANK", "0")))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE/RANK/LOCAL_RANK must be integers, got {env.get('WORLD_SIZE')!r}/"
                          f"{env.get('RANK')!r}/{env.get('LOCAL_RANK')!r}; launch with torchrun") from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK {rank} is not in [0, WORLD_SIZE {world}); launch with torchrun")
    return DistInfo(world, rank, local)


def world_size(env: Optional[Mapping[str, str]] = None) -> int:
    """Ranks of this launch (torchrun's WORLD_SIZE; 1 without one). The planner takes it as an argument:
    train.batch is per rank, and the global batch (batch x world_size) is part of a model's hash."""
    return dist_env(env).world_size


def _group():
    """torch.distributed when a process group is initialised, else None."""
    import torch.distributed as tdist

    return tdist if tdist.is_available() and tdist.is_initialized() else None


def current_dist() -> DistInfo:
    """The initialised process group's world size and rank, else a single process."""
    g = _group()
    if g is not None:
        return DistInfo(g.get_world_size(), g.get_rank(), dist_env().local_rank)
    return DistInfo()


def init_distributed(device="auto") -> tuple[DistInfo, Any]:
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on CUDA, gloo on CPU) once, and
    give this rank its device (cuda:LOCAL_RANK). Otherwise (world 1, resolved device)."""
    import torch
    import torch.distributed as tdist

    info = dist_env()
    dev = resolve_device(device)
    if info.world_size == 1:
        return DistInfo(), dev
    if dev.type == "cuda":
        dev = torch.device("cuda", info.local_rank if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return current_dist(), dev


def barrier(info: DistInfo) -> None:
    """Wait for every rank (a no-op in one process)."""
    if info.world_size > 1:
        import torch.distributed as tdist

        tdist.barrier()


def gather(obj: Any) -> list:
    """Every rank's `obj` (picklable), in rank order; [obj] in one process."""
    g = _group()
    if g is None:
        return [obj]
    parts: list = [None] * g.get_world_size()
    g.all_gather_object(parts, obj)
    return parts


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (picklable); `obj` itself in one process."""
    g = _group()
    if g is None:
        return obj
    box = [obj]
    g.broadcast_object_list(box, src=0)
    return box[0]
