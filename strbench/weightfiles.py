"""A weights file read the safe way, shared by the FID (strbench.fid_weights) and LPIPS (strbench.lpips_weights)
backbones: its bytes read once and hashed, a torch.hub-style name ``<name>-<sha256 prefix>.pth`` checked against
that hash, and the bytes loaded with ``weights_only=True`` (no code in the file ever runs). Errors are one-line
WeightsErrors naming the file (`where`) and the fix."""
from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from pathlib import Path

import torch

from strbench.errors import WeightsError

HUB_HASH = re.compile(r"-([0-9a-f]{8,64})\.(?:pth|pt)$")  # torch.hub names: <name>-<sha256 prefix>.pth


def first_line(e: BaseException, limit: int = 120) -> str:
    return next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)[:limit]


def read_hashed(path: str | os.PathLike, where: str, fix: str, *, renamed: str = "") -> tuple[bytes, str]:
    """(the file's bytes, their sha256); a hub-style name whose prefix the hash does not start with is refused.
    `renamed`: what to say instead of `fix` for that case (default: `fix`)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise WeightsError(f"{where}: cannot be read ({e.strerror or e}); {fix}") from None
    sha = hashlib.sha256(data).hexdigest()
    m = HUB_HASH.search(p.name)
    if m and not sha.startswith(m.group(1)):
        raise WeightsError(f"{where}: sha256 {sha[:12]}... does not start with {m.group(1)} as its name says "
                           f"(a damaged or different file); {renamed or fix}")
    return data, sha


def load_tensors(data: bytes, where: str, fix: str, *, describe=None):
    """torch.load of the bytes with weights_only=True; any failure is this file's fault (`describe(e)`: the text
    saying why, default its first line)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Detected pickle protocol 4" notices
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure of a safe load is this file's fault
        why = describe(e) if describe is not None else f"not a torch.save file of tensors ({first_line(e)})"
        raise WeightsError(f"{where}: {why}; {fix}") from None
