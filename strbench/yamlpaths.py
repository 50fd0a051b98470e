"""YAML files and dotted key paths: reading a YAML mapping (unique keys, one-line errors), ``--set a.b=v``
overrides, overlays and profiles merged as dotted key paths, and YAML text of plain data.

Nothing here knows the experiment schema (:mod:`strbench.config`) beyond which mappings a ``null`` empties.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from strbench.errors import ConfigError

DELETABLE = ("methods", "masks.sets")  # in a profile/overlay, `case: null` under these removes the entry


def split_path(path: str) -> list[str | int]:
    """'a.b.0.c' -> ['a', 'b', 0, 'c']; under sweep/profiles the remainder after one key is one key."""
    if not path or path.startswith(".") or path.endswith(".") or ".." in path:
        raise ConfigError(f"bad key path {path!r}: use dotted keys like 'schedule.texture.T'")
    parts = path.split(".")
    if parts[0] == "sweep" and len(parts) > 1:
        return ["sweep", ".".join(parts[1:])]
    if parts[0] == "profiles" and len(parts) > 2:
        return ["profiles", parts[1], ".".join(parts[2:])]
    return [int(p) if p.isdigit() else p for p in parts]


def set_path(d: dict, path: str, value: Any, *, source: str = "--set") -> None:
    """Set `value` at dotted `path` inside `d` (creating mappings on the way; ints index lists)."""
    keys = split_path(path)
    cur: Any = d
    for i, k in enumerate(keys[:-1]):
        if isinstance(cur, list):
            if not isinstance(k, int) or not 0 <= k < len(cur):
                raise ConfigError(f"{source}: {'.'.join(map(str, keys[:i + 1]))}: no list item {k} "
                                  f"(the list has {len(cur)} items)")
            cur = cur[k]
            continue
        if not isinstance(cur, dict):
            raise ConfigError(f"{source}: {'.'.join(map(str, keys[:i]))} is not a mapping; cannot set {path}")
        nxt = cur.get(k)
        if nxt is None:
            nxt = cur[k] = {}
        cur = nxt
    last = keys[-1]
    if isinstance(cur, list):
        if not isinstance(last, int) or not 0 <= last < len(cur):
            raise ConfigError(f"{source}: {path}: no list item {last} (the list has {len(cur)} items)")
        cur[last] = value
    elif isinstance(cur, dict):
        if value is None and ".".join(map(str, keys[:-1])) in DELETABLE:
            cur.pop(last, None)  # `--set methods.RePaint*=null` removes that case
        else:
            cur[last] = value
    else:
        raise ConfigError(f"{source}: {'.'.join(map(str, keys[:-1]))} is not a mapping; cannot set {path}")


def get_path(d: Mapping, path: str, default: Any = None) -> Any:
    cur: Any = d
    for k in split_path(path):
        if isinstance(cur, (list, tuple)) and isinstance(k, int) and 0 <= k < len(cur):
            cur = cur[k]
        elif isinstance(cur, Mapping) and k in cur:
            cur = cur[k]
        else:
            return default
    return cur


def parse_override(text: str) -> tuple[str, Any]:
    """'a.b=v' -> ('a.b', yaml value of v)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set schedule.texture.T=50")
    key, _, raw = text.partition("=")
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({one_line(e)})") from None
    try:
        split_path(key)
    except ConfigError as e:
        raise ConfigError(f"--set {text!r}: {e}") from None
    return key, value


def deep_merge(base: dict, overlay: Mapping, *, source: str) -> list[str]:
    """Merge `overlay` into `base` in place: mappings merge, anything else replaces; dotted keys are
    paths. Returns the dotted paths that were set (for error provenance)."""
    touched: list[str] = []

    def merge(dst: dict, src: Mapping, prefix: str):
        for k, v in src.items():
            if not isinstance(k, str):
                raise ConfigError(f"{source}: key {k!r} under {prefix or 'the top level'} must be a string")
            path = f"{prefix}{k}"
            if v is None and prefix.rstrip(".") in DELETABLE:
                dst.pop(k, None)
                touched.append(path)
            elif "." in k and prefix != "sweep." and not prefix.startswith("profiles."):
                set_path(base, path, copy.deepcopy(v), source=source)
                touched.append(path)
            elif isinstance(v, Mapping) and isinstance(dst.get(k), dict) and path != "profiles":
                merge(dst[k], v, path + ".")
            else:
                if path in DELETABLE and isinstance(v, Mapping):
                    v = {kk: vv for kk, vv in v.items() if vv is not None}
                dst[k] = copy.deepcopy(v)
                touched.append(path)

    merge(base, overlay, "")
    return touched


def one_line(x: Any) -> str:
    return " ".join(str(x).split())


# kind of YAML file -> (an example path, the keys its top level holds), for read_yaml's messages
YAML_KINDS = {"experiment": ("experiments/quickstart.yaml", "name:, dataset:, ..."),
              "tune config": ("experiments/tune_schedules.yaml", "base:, study:, space:, ..."),
              "overlay": ("best.yaml from strbench tune --export", "dotted key paths -> values")}


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error (safe_load keeps the last
    one silently: a second `sample:` line in a profile would drop the first)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (the first value would "
                                                        "be lost); keep one", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | os.PathLike, *, what: str = "experiment") -> dict:
    """A YAML mapping (safe loader); a missing file, bad syntax or a non-mapping is a one-line ConfigError."""
    example, keys = YAML_KINDS[what]
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such {what} file; give the path of a YAML file (e.g. {example})")
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}:{where}: not valid YAML ({one_line(getattr(e, 'problem', e))}); "
                          "fix the syntax there") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a UTF-8 text file") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level of this {what} file must be a mapping of keys ({keys}), "
                          f"got {type(data).__name__}")
    return data


def dump_yaml(data: Any, header: Sequence[str] = ()) -> str:
    """YAML text of plain data, optionally under `# ` comment lines."""
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
    return "".join(f"# {line}\n" for line in header) + text


__all__ = ["DELETABLE", "YAML_KINDS", "deep_merge", "dump_yaml", "get_path", "one_line", "parse_override", "read_yaml",
           "set_path", "split_path"]
