"""Strict loading of released weights into a network (e.g. the authors' checkpoints into ``arch: authors`` nets).

``load_pretrained(net, path, *, role)`` reads the file with ``torch.load(weights_only=True)``, accepts a raw
state_dict or one wrapped as ``{"state_dict": ...}`` / ``{"params": ...}``, strips one leading ``module.``
(DataParallel) from each key like the authors' loader, and then, unlike the authors' loader (which ignores
missing and unexpected keys), refuses any difference in one line naming the role, the file and the keys.
Returns the file's sha256 (for the cell hash and tracking).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from strbench.errors import CheckpointError
from strbench.fid_weights import file_sha256

WRAPPER_KEYS = ("state_dict", "params")  # {"state_dict": sd} (Lightning-style), {"params": sd} (BasicSR-style)
PREFIX = "module."
SHOW = 4  # keys named per category in an error


def _first_line(e: BaseException, limit: int = 160) -> str:
    text = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def _fail(role: str, path: Path, problem: str, fix: str) -> CheckpointError:
    return CheckpointError(f"pretrained {role} weights {path}: {problem}; {fix}")


def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def unwrap_state_dict(obj, role: str, path: Path) -> Mapping[str, Tensor]:
    """A raw state_dict, or the one under ``state_dict`` / ``params``; anything else -> CheckpointError."""
    if _is_state_dict(obj) and obj:
        return obj
    if isinstance(obj, Mapping):
        for k in WRAPPER_KEYS:
            if k in obj and _is_state_dict(obj[k]) and obj[k]:
                return obj[k]
        keys = list(obj)
        shown = [str(k) for k in keys[:SHOW]] + ([f"... +{len(keys) - SHOW} more"] if len(keys) > SHOW else [])
        hint = ("it is a strbench training checkpoint: strbench loads those itself (train.load_model)"
                if "config_hash" in obj and "model" in obj else
                f"expected a state_dict (key -> tensor) or a dict with one of {list(WRAPPER_KEYS)}")
        raise _fail(role, path, f"not a state_dict (top-level keys {shown})", hint)
    raise _fail(role, path, f"holds a {type(obj).__name__}, not a state_dict",
                "save the network's state_dict() (torch.save(net.state_dict(), path))")


def strip_prefix(sd: Mapping[str, Tensor], prefix: str = PREFIX) -> "OrderedDict[str, Tensor]":
    """Remove ONE leading `prefix` from each key (the authors' loader does the same); metadata follows the keys."""
    out = OrderedDict((k[len(prefix):] if k.startswith(prefix) else k, v) for k, v in sd.items())
    meta = getattr(sd, "_metadata", None)
    if meta is not None:
        out._metadata = type(meta)((k[len(prefix):] if k.startswith(prefix) else ("" if k == prefix[:-1] else k), v)
                                   for k, v in meta.items())
    return out


def _named(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOW])
    return f"{len(keys)} [{shown}{', ...' if len(keys) > SHOW else ''}]"


def _shape(s) -> str:
    return "x".join(str(d) for d in s) or "scalar"


def compare_state_dict(expected: Mapping[str, Tensor], got: Mapping[str, Tensor]):
    """(missing keys, unexpected keys, [(key, file shape, net shape)]) in the net's / the file's key order."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    mismatched = [(k, tuple(got[k].shape), tuple(v.shape)) for k, v in expected.items()
                  if k in got and tuple(got[k].shape) != tuple(v.shape)]
    return missing, unexpected, mismatched


def load_pretrained(net: nn.Module, path: str | os.PathLike, *, role: str, strict: bool = True) -> str:
    """Load released weights into `net` in place; return the file's sha256.

    strict (default): any missing or unexpected key is a CheckpointError (one line: role, file, counts and the
    first keys). strict=False ignores missing/unexpected keys as the authors' loader does; size mismatches raise
    either way. The file is read with ``weights_only=True`` on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise _fail(role, path, "no such file" if not path.exists() else "not a file",
                    f"download the released {role} checkpoint or fix the path under models.{role}")
    digest = file_sha256(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated, or a pickle weights_only refuses
        raise _fail(role, path, f"cannot be read with torch.load(weights_only=True) ({_first_line(e)})",
                    "use a torch state_dict file (.pth/.pt) of plain tensors") from None
    sd = strip_prefix(unwrap_state_dict(obj, role, path))
    missing, unexpected, mismatched = compare_state_dict(net.state_dict(), sd)
    parts = []
    if strict and missing:
        parts.append(f"missing {_named(missing)}")
    if strict and unexpected:
        parts.append(f"unexpected {_named(unexpected)}")
    if mismatched:
        shown = ", ".join(f"{k} file {_shape(a)} vs net {_shape(b)}" for k, a, b in mismatched[:SHOW])
        parts.append(f"size mismatch {len(mismatched)} [{shown}{', ...' if len(mismatched) > SHOW else ''}]")
    if parts:
        n_net = len(net.state_dict())
        raise _fail(role, path, f"does not match the {role} network {type(net).__name__} "
                                f"({len(sd)} keys in the file, {n_net} in the net): " + "; ".join(parts),
                    f"check that the file is the {role} checkpoint and that the net sizes (nets preset/overrides) "
                    f"are the release's")
    net.load_state_dict(sd, strict=strict)
    return digest
