"""The training schema (strbench.trainset): one declaration, an opt-out model identity, old hashes kept.

Every field of TrainConfig either enters some role's model identity (so a cached model trained with another
value is never reused) or is declared otherwise where it is defined (strbench.trainset.Identity). The stored
hashes below were computed with the code before the schema was unified (strbench.train.TrainConfig with its
opt-in ROLE_FIELDS list, the _HASH_UNLESS default of disc_time, the global batch and the resolved net): the
models cached by that code keep their folders.
"""
from __future__ import annotations

import pytest

from strbench import roles
from strbench.errors import ConfigError
from strbench.trainset import BOOKKEEPING, TrainConfig, TrainSettings, identity_of

BUILTIN = tuple(r.name for r in roles.BUILTIN)

# config -> role -> first 16 hex digits of the model hash, as the code before the unified schema computed them
OLD_HASHES = {
    "defaults": (
        {}, {"irsde": "6f97d6907a21960f", "structure": "5208d731d4cb4e35", "texture": "866f6a097a07d10c",
        "discriminator": "cde0bfbf660dd5e8"}),
    "disc_t": (
        {"disc_time": "t"}, {"irsde": "6f97d6907a21960f", "structure": "5208d731d4cb4e35", "texture":
        "866f6a097a07d10c", "discriminator": "5efd056169be5c45"}),
    "global_batch": (
        {"batch": 2, "world_size": 2}, {"irsde": "e039faeb1d1a36d2", "structure": "54cf1a9d91077d53", "texture":
        "514fe2809ed0ecc9", "discriminator": "bd23979bac5e4573"}),
    "batch4": (
        {"batch": 4}, {"irsde": "e039faeb1d1a36d2", "structure": "54cf1a9d91077d53", "texture": "514fe2809ed0ecc9",
        "discriminator": "bd23979bac5e4573"}),
    "bookkeeping": (
        {"workers": 3, "checkpoint_every": 7, "log_every": 3, "images_every": 2}, {"irsde": "6f97d6907a21960f",
        "structure": "5208d731d4cb4e35", "texture": "866f6a097a07d10c", "discriminator": "cde0bfbf660dd5e8"}),
    "net_overrides": (
        {"net": {"nf": 8, "ch_mult": [1, 2]}, "preset": "small"}, {"irsde": "630ba081a523741f", "structure":
        "531888fcb6362069", "texture": "390c67774651acd2", "discriminator": "c1f2563009d297b1"}),
    "authors": (
        {"net": {"arch": "authors"}, "preset": "paper"}, {"irsde": "b5306b97c58d6b37", "structure":
        "b3a0309496e3c635", "texture": "2d7687f0696c834c", "discriminator": "9933d9044c9364df"}),
    "sde_struct": (
        {"sde": {"T": 50, "kind": "linear"}, "sde_structure": {"T": 50, "kind": "cosine", "lam": 0.2}}, {"irsde":
        "1bf6dfb958282bb6", "structure": "bbe26d0f998c8b1b", "texture": "d9824917a21c9e7a", "discriminator":
        "39414f501049938f"}),
    "texture_knobs": (
        {"target": "official_code", "weighting": "official", "guidance": "net"}, {"irsde": "6f97d6907a21960f",
        "structure": "5208d731d4cb4e35", "texture": "9eca64d01e578839", "discriminator": "d7c664a895e33c0a"}),
    "disc_knobs": (
        {"lambda_tri": 0.5, "margin": 2.0, "disc_time": "t"}, {"irsde": "6f97d6907a21960f", "structure":
        "5208d731d4cb4e35", "texture": "866f6a097a07d10c", "discriminator": "216d40126e42bff2"}),
    "lr_sched": (
        {"lr_schedule": "multistep", "lr_milestones": [10, 20], "lr_gamma": 0.1, "warmup": 5, "lr_min": 0.0, "lr":
        0.001, "grad_clip": 0.0, "ema": 0.999, "amp": True, "flip": False}, {"irsde": "65016f15148f0d46",
        "structure": "b97ee0b12ed44ca8", "texture": "99f81f16087aed0c", "discriminator": "4cdf8fd06ff45bbf"}),
    "struct_knobs": (
        {"variant": "edge2edge", "canny_sigma": 2.0, "seed": 3, "data_id": "abc", "steps": 10}, {"irsde":
        "b6f8256384217a59", "structure": "54abf9117d79864d", "texture": "c79ea28233c89d2b", "discriminator":
        "e52d4d9046f84a02"}),
    "int_floats": (
        {"lr": 1, "lambda_tri": 2, "canny_sigma": 2}, {"irsde": "2281715cf5a03625", "structure": "04ae1026682807ce",
        "texture": "dfcc88ee6fd6cbce", "discriminator": "13c621b697beced5"}),
}

# a checkpoint's stored config (TrainConfig.to_dict() of the old dataclass, defaults): still loads
OLD_CHECKPOINT_CONFIG = {"steps": 2000, "batch": 8, "lr": 0.0001, "lr_schedule": "cosine", "lr_milestones": [],
                         "lr_gamma": 0.5, "lr_min": 0.0, "warmup": 0, "grad_clip": 1.0,
                         "ema": 0.0, "seed": 0, "preset": "tiny", "net": {}, "sde": {},
                         "sde_structure": None, "variant": "gray2edge", "canny_sigma": 3.0,
                         "target": "paper_eq11", "weighting": "uniform", "guidance":
                         "optimal", "lambda_tri": 1.0, "margin": 1.0, "disc_time": "t-1",
                         "amp": False, "data_id": "", "flip": True, "world_size": 1,
                         "workers": -1, "checkpoint_every": 500, "log_every": 50,
                         "images_every": 0}


@pytest.mark.parametrize("name", sorted(OLD_HASHES))
def test_model_hashes_are_the_old_code_s(name):
    values, want = OLD_HASHES[name]
    cfg = TrainConfig.from_dict(values)
    assert {r: cfg.hash(r)[:16] for r in BUILTIN} == want


def test_an_old_checkpoint_config_loads_and_round_trips():
    cfg = TrainConfig.from_dict(dict(OLD_CHECKPOINT_CONFIG))
    assert cfg.to_dict() == OLD_CHECKPOINT_CONFIG
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def _other(name: str, value):
    """A valid value of field `name` different from `value` (the default)."""
    special = {"net": {"nf": 8}, "sde": {"T": 7}, "sde_structure": {"T": 100, "kind": "linear"}, "lr_milestones": [5],
               "lr_min": 1e-5, "world_size": 2, "data_id": "other"}
    if name in special:
        return special[name]
    field = TrainConfig.model_fields[name]
    choices = getattr(field.annotation, "__args__", ())
    if choices and all(isinstance(c, str) for c in choices):  # a Literal
        return next(c for c in choices if c != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 2
    if isinstance(value, float):
        return value / 2 if value else 0.5
    raise AssertionError(f"train field {name!r}: add a second value here to test its identity")


@pytest.mark.parametrize("name", list(TrainConfig.model_fields))
def test_every_field_is_hashed_or_declared_otherwise(name):
    """Changing a field changes the hash of exactly the roles whose identity holds it; a field no role hashes
    must be declared bookkeeping (or enter through another field) where it is defined."""
    base = TrainConfig()
    changed = base.replace(**{name: _other(name, getattr(base, name))})
    rule = identity_of(TrainConfig.model_fields[name])
    moved = {r for r in BUILTIN if changed.hash(r) != base.hash(r)}
    if rule.bookkeeping:
        assert moved == set(), f"{name} is declared bookkeeping but changes the hash of {moved}"
        return
    if rule.via:  # e.g. world_size: the global batch batch x world_size
        assert all(name not in base.identity(r)["config"] for r in BUILTIN) and moved == set(BUILTIN)
        return
    readers = {r.name for r in roles.BUILTIN if rule.group is None or rule.group in r.settings}
    assert readers, f"train field {name!r}: no role reads its group {rule.group!r}: it is never hashed"
    assert moved == readers, f"{name}: changes the hash of {moved}, expected {readers}"
    assert all(name in changed.identity(r)["config"] for r in readers)


def test_identity_is_opt_out():
    """A field added without a declaration is part of every role's identity."""

    class WithNewField(TrainConfig):
        new_knob: float = 0.25

    a, b = WithNewField(), WithNewField(new_knob=0.5)
    for r in BUILTIN:
        assert a.identity(r)["config"]["new_knob"] == 0.25 and a.hash(r) != b.hash(r)


def test_bookkeeping_is_declared_where_the_field_is():
    marked = {k for k, f in TrainConfig.model_fields.items() if identity_of(f) == BOOKKEEPING}
    assert marked == {"workers", "checkpoint_every", "log_every", "images_every"}
    assert set(TrainSettings.model_fields) < set(TrainConfig.model_fields)


def test_bad_values_are_one_line_naming_the_key():
    with pytest.raises(ConfigError, match=r"^train\.ema: "):
        TrainConfig(ema=1.0)
    with pytest.raises(ConfigError, match=r"^model\.steps: expected integer"):
        TrainConfig.from_dict({"steps": 1.5}, path="model")
    with pytest.raises(ConfigError, match=r"^train\.lr_milestones\.0: "):
        TrainConfig(lr_milestones=[0])
    with pytest.raises(ConfigError, match="unknown key"):
        TrainConfig.from_dict({"stepz": 1})
