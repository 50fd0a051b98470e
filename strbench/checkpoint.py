"""Training checkpoints: atomic writes, safe loads (weights_only=True), config-hash checks, recovery.

A checkpoint is a dict of tensors and primitives only (so ``torch.load(weights_only=True)`` reads it):
``format, strbench_version, role, config`` (JSON string of the resolved TrainConfig), ``config_hash``,
``step``, ``model``, ``ema`` (state dict or None), ``optimizer``, ``rng`` (dict of ByteTensors).

Recovery: ``save_checkpoint(path, state, keep_previous=True)`` first hard-links the current file to
``<stem>.prev<suffix>`` (e.g. ``model.prev.pt``, replaced atomically), then replaces ``path`` atomically, so
a good checkpoint exists at every instant. ``load_resumable(path)`` tries ``path`` then the previous one; a
file that does not load (truncated, corrupt, not a checkpoint) is renamed to ``<name>.corrupt`` with one
``logging`` warning line (logger ``strbench.checkpoint``) and the next is tried; None means "start again".
A checkpoint of another config or format is not corrupt: it still raises CheckpointError and is left alone.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from strbench.atomic import atomic_open
from strbench.errors import CheckpointError

FORMAT = 1
REQUIRED_KEYS = ("format", "strbench_version", "role", "config", "config_hash", "step", "model", "ema",
                 "optimizer", "rng")
PREVIOUS_TAG = ".prev"
CORRUPT_SUFFIX = ".corrupt"
log = logging.getLogger("strbench.checkpoint")


class CheckpointUnreadable(CheckpointError):
    """The file is not a loadable strbench checkpoint (truncated, corrupt, foreign): `load_resumable` quarantines it."""


def previous_path(path: str | os.PathLike) -> Path:
    """`model.pt` -> `model.prev.pt`: where `save_checkpoint(..., keep_previous=True)` keeps the last one."""
    path = Path(path)
    return path.with_name(f"{path.stem}{PREVIOUS_TAG}{path.suffix}")


def corrupt_path(path: str | os.PathLike) -> Path:
    """`model.pt` -> `model.pt.corrupt`: where an unloadable checkpoint is moved aside."""
    path = Path(path)
    return path.with_name(path.name + CORRUPT_SUFFIX)


def _keep_previous(path: Path) -> None:
    """Make `previous_path(path)` the current `path` (hard link + atomic rename; a copy where links fail)."""
    prev = previous_path(path)
    tmp = prev.with_name(f".{prev.name}.{os.getpid()}.tmp")
    try:
        if tmp.exists():
            tmp.unlink()
        try:
            os.link(path, tmp)
        except OSError:  # a filesystem without hard links
            with open(path, "rb") as src, atomic_open(tmp) as dst:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    dst.write(chunk)
        os.replace(tmp, prev)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(path: str | os.PathLike, state: dict, *, keep_previous: bool = False) -> None:
    """Write `state` atomically: a temp file in the same folder, fsync, then os.replace onto `path`.
    With keep_previous, the checkpoint `path` held until now becomes `previous_path(path)` first."""
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks keys {missing}")
    path = Path(path)
    try:
        if keep_previous and path.is_file():
            _keep_previous(path)
        with atomic_open(path) as f:
            torch.save(state, f)
    except (OSError, RuntimeError) as e:  # disk full, read-only, permissions; torch's writer says neither the path
        raise CheckpointError(f"cannot write checkpoint {path} ({_reason(e)}); free space on that disk or point "
                              "cache_dir elsewhere") from None


def _reason(e: Exception) -> str:
    first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    first = first if len(first) <= 120 else first[:117] + "..."
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def load_checkpoint(path: str | os.PathLike, expected_hash: str | None = None,
                    map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with weights_only=True; refuse one whose config hash differs from `expected_hash`.
    An unloadable file raises CheckpointUnreadable (a CheckpointError)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt file, foreign pickle, ...
        raise CheckpointUnreadable(f"checkpoint {path} cannot be read safely ({_reason(e)}); "
                                   f"delete it to train from scratch") from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        raise CheckpointUnreadable(f"checkpoint {path} is not a strbench training checkpoint (missing keys); "
                                   f"delete it to train from scratch")
    if state["format"] != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {state['format']}, this strbench reads {FORMAT}")
    if expected_hash is not None and state["config_hash"] != expected_hash:
        raise CheckpointError(
            f"checkpoint {path} was trained with config hash {state['config_hash']} but the requested config "
            f"hashes to {expected_hash}; use the matching config, or delete/move the checkpoint to retrain")
    return state


def quarantine(path: str | os.PathLike) -> Path:
    """Rename an unloadable checkpoint to `corrupt_path(path)` (replacing an older one); returns the new path."""
    dest = corrupt_path(path)
    os.replace(path, dest)
    return dest


def load_resumable(path: str | os.PathLike, expected_hash: str | None = None,
                   map_location: str | torch.device = "cpu") -> dict | None:
    """The newest loadable checkpoint of `path`: `path` itself, else `previous_path(path)`; None when neither
    exists or loads (then train from scratch). Each unloadable file is quarantined (`quarantine`) with one
    warning line saying what happens instead; a checkpoint of another config hash or format raises
    CheckpointError and stays where it is."""
    bad: list[tuple[str, Path]] = []

    def warn(outcome: str) -> None:
        for reason, dest in bad:
            log.warning("%s; moved aside to %s, %s", reason, dest.name, outcome)

    for candidate in (Path(path), previous_path(path)):
        if not candidate.is_file():
            continue
        try:
            state = load_checkpoint(candidate, expected_hash, map_location)
        except CheckpointUnreadable as e:
            reason = str(e).replace("; delete it to train from scratch", "")
            bad.append((reason, quarantine(candidate)))
            continue
        except CheckpointError:
            warn(f"and {candidate.name} is refused")
            raise
        warn(f"resuming from {candidate.name} (step {state['step']})")
        return state
    warn("training starts again")
    return None
