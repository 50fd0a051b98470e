"""Training checkpoints: atomic writes, safe loads (weights_only=True), config-hash checks.

A checkpoint is a dict of tensors and primitives only (so ``torch.load(weights_only=True)`` reads it):
``format, strbench_version, role, config`` (JSON string of the resolved TrainConfig), ``config_hash``,
``step``, ``model``, ``ema`` (state dict or None), ``optimizer``, ``rng`` (dict of ByteTensors).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from strbench.atomic import atomic_open
from strbench.errors import CheckpointError

FORMAT = 1
REQUIRED_KEYS = ("format", "strbench_version", "role", "config", "config_hash", "step", "model", "ema",
                 "optimizer", "rng")


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write `state` atomically: a temp file in the same folder, fsync, then os.replace onto `path`."""
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks keys {missing}")
    with atomic_open(path) as f:
        torch.save(state, f)


def load_checkpoint(path: str | os.PathLike, expected_hash: str | None = None,
                    map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with weights_only=True; refuse one whose config hash differs from `expected_hash`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt file, foreign pickle, ...
        raise CheckpointError(f"checkpoint {path} cannot be read safely ({type(e).__name__}: {e}); "
                              f"delete it to train from scratch") from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        raise CheckpointError(f"checkpoint {path} is not a strbench training checkpoint (missing keys); "
                              f"delete it to train from scratch")
    if state["format"] != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {state['format']}, this strbench reads {FORMAT}")
    if expected_hash is not None and state["config_hash"] != expected_hash:
        raise CheckpointError(
            f"checkpoint {path} was trained with config hash {state['config_hash']} but the requested config "
            f"hashes to {expected_hash}; use the matching config, or delete/move the checkpoint to retrain")
    return state
