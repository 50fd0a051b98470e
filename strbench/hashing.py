"""Content hashes of configs: sha256 of canonical JSON (sorted keys, no whitespace)."""
from __future__ import annotations

import hashlib
import json


def canonical_json(obj) -> str:
    """JSON with sorted keys and fixed separators; tuples become lists; non-JSON values raise TypeError."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def config_hash(obj) -> str:
    """sha256 hex digest of canonical_json(obj): equal configs (as JSON) hash equal, key order ignored."""
    return hashlib.sha256(canonical_json(obj).encode("ascii")).hexdigest()
