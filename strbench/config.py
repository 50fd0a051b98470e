"""The experiment schema: strict, typed, with every default in one place (this file).

An experiment YAML is read (:func:`strbench.yamlpaths.read_yaml`), a profile (``profiles:``), an overlay file
(``--set-from``) and ``--set a.b=v`` overrides are applied in that order as dotted key paths
(:mod:`strbench.yamlpaths`), and the result is validated by the pydantic models below (``extra="forbid"``,
strict types). Any problem is raised as one :class:`~strbench.errors.ConfigError` line naming the YAML file,
the dotted key path and the fix. Nothing here touches MLflow, datasets or networks. Names declared elsewhere are derived here: the
roles (:mod:`strbench.roles`), the structure variants (:mod:`strbench.structure`), the schedule kinds
(:mod:`strbench.sde`), the presets and archs (:mod:`strbench.nets`) and the training settings
(:mod:`strbench.trainset`).
"""
from __future__ import annotations

import copy
import difflib
import os
import re
from typing import Annotated, Any, Iterable, Literal, Mapping, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from strbench import methods as methods_registry
from strbench import roles as roles_registry
from strbench.contract import DEFAULT_URI
from strbench.errors import ConfigError
from strbench.metrics_config import MetricsCfg  # the `metrics:` section (re-exported here)
from strbench.methods.base import MethodSettings
from strbench.nets import ARCHS, DEFAULT_PRESET, PRESETS
from strbench.sde import SCHEDULES
from strbench.structure import DEFAULT_CANNY_SIGMA, DEFAULT_VARIANT, VARIANTS
from strbench.trainset import TrainSettings, optional_fields
from strbench.yamlpaths import (deep_merge, dump_yaml, get_path, one_line, parse_override, read_yaml, set_path,
                                split_path)

ROLES = roles_registry.names()  # the registered roles: strbench's and those of registered methods
SCHEDULE_KINDS = tuple(SCHEDULES)
DATASET_TYPES = ("builtin", "folder", "psv", "celeba", "places2")
UNSWEEPABLE = ("methods", "masks.bins", "masks.sets", "sweep", "profiles", "name", "default_profile", "tracking",
               "cache_dir", "device", "description")

Role = Literal[ROLES]
Variant = Literal[VARIANTS]
ScheduleKind = Literal[SCHEDULE_KINDS]


class Strict(BaseModel):
    """Base: unknown keys and wrong types are errors; instances are immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# ------------------------------------------------------------------------------------------------
# data and masks
# ------------------------------------------------------------------------------------------------


class SplitsCfg(Strict):
    """Optional file lists (one relative image path per line) for each split of a folder dataset."""

    train: Optional[str] = None
    val: Optional[str] = None
    test: Optional[str] = None


class DatasetCfg(Strict):
    type: Literal[DATASET_TYPES] = "builtin"
    root: Optional[str] = None  # required for every type but builtin (checked before a run starts)
    size: int = Field(32, ge=8, le=1024)
    resize: Literal["resize", "center_crop", "random_crop"] = "resize"  # training images (test: no random crop)
    splits: SplitsCfg = SplitsCfg()
    train_limit: Optional[int] = Field(None, ge=1)  # use the first N training images (None: all; streamed from disk)
    test_fraction: Optional[float] = Field(None, gt=0.0, lt=1.0)  # type folder without split folders/lists


def _check_bin(v: list[float]) -> list[float]:
    if len(v) != 2:
        raise ValueError(f"a mask bin is [lo, hi], got {v}")
    lo, hi = v
    if not (0.0 <= lo <= 1.0 and 0.0 <= hi <= 1.0):
        raise ValueError(f"mask bin {v} is outside [0, 1]; hole ratios are fractions, e.g. [0.1, 0.2] for 10-20%")
    if lo > hi:
        raise ValueError(f"mask bin {v} has lo {lo} > hi {hi}; write it as [{hi}, {lo}] (hole-ratio bins are "
                         "half-open (lo, hi])")
    if lo == hi:
        raise ValueError(f"mask bin {v} is empty (lo == hi; bins are half-open (lo, hi]); widen it, e.g. "
                         f"[{lo}, {min(1.0, round(lo + 0.1, 6))}]")
    return [float(lo), float(hi)]


Bin = Annotated[list[float], Field(min_length=2, max_length=2), AfterValidator(_check_bin)]


class MaskSetCfg(Strict):
    """A named set of evaluation masks (e.g. `hard` / `easy`; the paper does not define these)."""

    bins: list[Bin] = Field(min_length=1)
    families: Optional[list[Literal["thin", "medium", "thick"]]] = None  # None -> masks.families
    per_bin: Optional[int] = Field(None, ge=1)  # None -> masks.per_bin
    path: Optional[str] = None  # masks.source folder: this set's folder (None -> masks.path), e.g. LaMa's thin set


class TrainMasksCfg(Strict):
    """Masks drawn while training (random, any ratio in `ratio`)."""

    families: list[Literal["thin", "medium", "thick"]] = ["thin", "medium", "thick"]
    ratio: Bin = [0.05, 0.6]
    count: int = Field(512, ge=1)  # size of the pre-generated training mask pool


class MasksCfg(Strict):
    source: Literal["generator", "folder"] = "generator"
    path: Optional[str] = None  # folder of mask PNGs (e.g. NVIDIA irregular masks) when source=folder
    # Required with source=folder: which colour marks holes in the PNGs. strbench never guesses it (public
    # copies of the NVIDIA irregular masks disagree); open one file and check.
    polarity: Optional[Literal["white_is_hole", "white_is_known"]] = None
    # "seeded": a bin's i-th mask with the i-th picked test image; "by_name" (source folder): each test image with
    # its own masks (LaMa's name.png + name_mask000.png, or masks named after the images; strbench.pairing)
    pairing: Literal["seeded", "by_name"] = "seeded"
    name: str = "irregular"  # name of the default mask set (tag strbench.mask_set)
    bins: list[Bin] = [[0.1, 0.2], [0.2, 0.3], [0.3, 0.4], [0.4, 0.5]]
    sets: dict[str, MaskSetCfg] = {}  # named sets; when given they replace (name, bins)
    per_bin: int = Field(16, ge=1)  # test images (one mask each) per bin
    seed: int = 0  # test mask seed
    val_seed: int = 1  # validation mask seed (strbench tune never sees the test masks)
    families: list[Literal["thin", "medium", "thick"]] = ["thin", "medium", "thick"]
    train: TrainMasksCfg = TrainMasksCfg()


# ------------------------------------------------------------------------------------------------
# methods
# ------------------------------------------------------------------------------------------------


def _method_union():
    """The `methods.<case>` schema: the union of every registered method's settings model, keyed by
    `method:` (each method's module is the one place of its defaults; see strbench.methods)."""
    models = tuple(m.settings for m in methods_registry.registry().values())
    return Annotated[Union[models], Field(discriminator="method")] if len(models) > 1 else models[0]


MethodCfg = _method_union()
METHOD_NAMES = methods_registry.names()
METHOD_MODELS = {name: m.settings for name, m in methods_registry.registry().items()}


def models_for(method: MethodSettings) -> tuple[str, ...]:
    """Roles of the trained models a method needs (asks the method's registry entry)."""
    return tuple(methods_registry.get(method.method).roles(method))


def uses_structure(method: MethodSettings) -> bool:
    """Whether a case's cells depend on the structure variant (a network it runs is trained on structure maps)."""
    return roles_registry.structure_guided(methods_registry.get(method.method), method)


# ------------------------------------------------------------------------------------------------
# schedules, nets, training, sampling, metrics, tracking
# ------------------------------------------------------------------------------------------------


class SDECfg(Strict):
    """One mean-reverting SDE: T levels, theta schedule `kind` with `params`, lambda, eps."""

    T: int = Field(100, ge=1, le=10000)
    kind: ScheduleKind = "cosine"
    lam: float = Field(30 / 255, gt=0.0)
    eps: float = Field(0.005, gt=0.0, lt=1.0)
    params: dict[str, float] = {}


class StructureSDECfg(Strict):
    """The structure SDE (delta); every unset field is the texture SDE's (delta == theta by default)."""

    T: Optional[int] = None
    kind: Optional[ScheduleKind] = None
    lam: Optional[float] = Field(None, gt=0.0)
    eps: Optional[float] = Field(None, gt=0.0, lt=1.0)
    params: Optional[dict[str, float]] = None


class ScheduleCfg(Strict):
    texture: SDECfg = SDECfg()
    structure: StructureSDECfg = StructureSDECfg()

    @model_validator(mode="after")
    def _same_T(self):
        if self.structure.T is not None and self.structure.T != self.texture.T:
            raise ValueError(f"structure T ({self.structure.T}) must equal texture T ({self.texture.T}); "
                             "the two reverse processes step together")
        return self


class StructureCfg(Strict):
    canny_sigma: float = Field(DEFAULT_CANNY_SIGMA, gt=0.0)  # authors' training code
    test_canny_sigma: Optional[float] = Field(None, gt=0.0)  # None -> canny_sigma (authors' test code: 2.0)


class NetsCfg(Strict):
    """Networks: an architecture, a preset of its presets (strbench.nets) plus build_net overrides."""

    arch: Literal[ARCHS] = "strbench"  # authors: the released networks (state_dict-compatible)
    preset: Literal[tuple(PRESETS)] = DEFAULT_PRESET
    unet: dict[str, Any] = {}  # overrides of the three U-Nets (irsde, structure, texture): nf, ch_mult, ...
    roles: dict[Role, dict[str, Any]] = {}  # per-role overrides (discriminator: nf, ch_mult)


TrainRoleCfg = optional_fields(("steps", "batch", "lr"), "TrainRoleCfg",
                               "Per-role training overrides (e.g. fewer discriminator steps); None = train's value.")


class TrainCfg(TrainSettings):
    """The ``train:`` section: the training settings of strbench.trainset (the runner fills seed, net, SDEs,
    variant and data identity from the other sections), plus per-role overrides."""

    roles: dict[Role, TrainRoleCfg] = {}


class SampleCfg(Strict):
    batch: int = Field(16, ge=1)


class TrackingCfg(Strict):
    uri: str = DEFAULT_URI
    # where a new MLflow experiment keeps its artifacts: a folder (with a server: one every machine sees at that
    # path) or a URI; None: ./mlartifacts beside a local store, the server's own default for a server or database
    artifact_location: Optional[str] = None
    experiment: Optional[str] = None  # MLflow experiment name; None -> the experiment's `name`
    # how long every MLflow call waits out a store that does not answer (strbench.tracking.patience)
    outage_s: float = Field(300.0, gt=0)


class ClaimsCfg(Strict):
    """Several processes on one experiment (strbench.experiment.claims): a cell claim whose heartbeat is older
    than `grace_s` belongs to a process that stopped, and is taken over. null: the environment
    (STRBENCH_CLAIM_GRACE / STRBENCH_HEARTBEAT), else 60 s and min(5 s, grace / 4)."""

    grace_s: Optional[float] = Field(None, gt=0)
    heartbeat_s: Optional[float] = Field(None, gt=0)
    # the MLflow experiment records the claims folder (cache_dir) its processes share and refuses another one;
    # true: this cache_dir's folder takes the experiment over (the old folder is gone for good)
    take_over: bool = False

    @model_validator(mode="after")
    def _beat_within_grace(self):
        if self.grace_s is not None and self.heartbeat_s is not None and self.heartbeat_s > self.grace_s / 3:
            raise ValueError(f"heartbeat_s {self.heartbeat_s:g} must be at most a third of grace_s {self.grace_s:g} "
                             "(one late beat must never lose a claim); lower heartbeat_s or raise grace_s")
        return self


def _default_methods() -> dict[str, Any]:
    return methods_registry.default_cases()


class Experiment(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    default_profile: Optional[str] = None
    profiles: dict[str, dict[str, Any]] = {}
    dataset: DatasetCfg = DatasetCfg()
    masks: MasksCfg = MasksCfg()
    methods: dict[str, MethodCfg] = Field(default_factory=_default_methods, min_length=1)  # case -> method
    variant: Variant = DEFAULT_VARIANT
    structure: StructureCfg = StructureCfg()
    schedule: ScheduleCfg = ScheduleCfg()
    nets: NetsCfg = NetsCfg()
    # Pretrained weights per role, loaded (strictly) instead of trained: a state_dict file (e.g. the authors'
    # texture.pth) for the `nets` architecture, or "random:SEED" (random weights written to the cache: smoke tests)
    models: dict[Role, Optional[str]] = {}  # a role set to null must be given (e.g. --set models.texture=PATH)
    train: TrainCfg = TrainCfg()
    sample: SampleCfg = SampleCfg()
    metrics: MetricsCfg = MetricsCfg()
    seed: int = 0
    # training seeds as replicates (docs/SCIENCE.md#replicates): N runs the seeds seed, seed+1, ..., seed+N-1,
    # each training its own models and sampling its own cells; reports give the mean, seed SD and an interval
    # over seeds. 1: one seed (as before). The same as sweep.seed: [seed, ..., seed+N-1]; give one of the two.
    replicates: int = Field(1, ge=1)
    sweep: dict[str, list[Any]] = {}  # dotted key -> values (axes besides methods and mask bins)
    tracking: TrackingCfg = TrackingCfg()
    floors: bool = True  # add the registered no-learning reference methods (e.g. biharmonic) as cases
    cache_dir: str = ".strbench"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    claims: ClaimsCfg = ClaimsCfg()

    _source: str = PrivateAttr(default="<dict>")
    _profile: Optional[str] = PrivateAttr(default=None)
    _raw: dict = PrivateAttr(default_factory=dict)

    @field_validator("sweep")
    @classmethod
    def _sweep_axes(cls, v):
        for key, values in v.items():
            if not values:
                raise ValueError(f"sweep axis {key!r} has no values; give a non-empty list")
            if key == "replicates":
                raise ValueError("sweep axis 'replicates' cannot be swept; set `replicates: N` (the seeds "
                                 "seed..seed+N-1) or sweep `seed`")
            if key in UNSWEEPABLE or key.split(".")[0] in UNSWEEPABLE:
                raise ValueError(f"sweep axis {key!r} cannot be swept (methods and mask bins are axes "
                                 f"already; {', '.join(UNSWEEPABLE[2:])} do not change results)")
        return v

    @model_validator(mode="after")
    def _replicates_or_seed_sweep(self):
        if self.replicates > 1 and "seed" in self.sweep:
            raise ValueError(f"replicates {self.replicates} and sweep.seed both set the training seeds; keep "
                             "one (replicates: N runs seeds seed..seed+N-1)")
        return self

    @property
    def source(self) -> str:
        return self._source

    @property
    def profile(self) -> Optional[str]:
        return self._profile

    @property
    def raw(self) -> dict:
        """The merged (profile, overlay, overrides) mapping before defaults were filled in."""
        return copy.deepcopy(self._raw)

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name

    def resolved(self) -> dict:
        """Every key with its value (defaults filled in), as plain Python data."""
        return self.model_dump(mode="python")

    def rerunnable(self) -> dict:
        """The experiment as it ran (profile, --set overrides and overlay applied; no profiles left): a config
        that `strbench validate` and `strbench run` accept as is and that expands to the same cells (hashes)."""
        return {k: v for k, v in self.resolved().items() if k not in ("profiles", "default_profile")}

    def cases(self) -> dict[str, MethodSettings]:
        """case -> method settings: `methods`, plus each registered floor method not already run (when
        `floors` is on; case name = the method's name)."""
        out = dict(self.methods)
        if self.floors:
            have = {m.method for m in out.values()}
            out.update({c: m for c, m in methods_registry.floors().items() if m.method not in have and c not in out})
        return out

    def sde(self, which: str) -> dict:
        """make_sde(**...) arguments of the texture or the structure SDE."""
        return sde_dict({"schedule": self.schedule.model_dump()}, which)

    def mask_sets(self) -> dict[str, dict]:
        """Name -> {bins, families, per_bin, path} with defaults filled in (the default set is masks.name)."""
        m = self.masks
        sets = m.sets or {m.name: MaskSetCfg(bins=m.bins)}
        return {k: {"bins": [list(b) for b in s.bins], "families": list(s.families or m.families),
                    "per_bin": s.per_bin or m.per_bin, "path": s.path or m.path} for k, s in sets.items()}


def _loc_str(loc: Iterable) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _clean_loc(loc: tuple) -> tuple:
    """Drop pydantic's discriminator tags (methods.<case>.strdiffusion.x -> methods.<case>.x)."""
    out = list(loc)
    if len(out) >= 3 and out[0] == "methods" and out[2] in METHOD_NAMES:
        del out[2]
    return tuple(p for p in out if not (isinstance(p, str) and p.startswith("function-")))


def _allowed_keys(loc: tuple, data: Mapping | None) -> list[str]:
    """Keys the schema allows at the mapping that holds `loc`'s last element."""
    model: Any = Experiment
    for i, part in enumerate(loc[:-1]):
        if isinstance(part, int) or model is None:
            return []
        if model is Experiment and part == "methods":
            name = get_path(data or {}, f"methods.{loc[i + 1]}.method") if i + 1 < len(loc) else None
            model = METHOD_MODELS.get(name) if isinstance(name, str) else None
            if model is None:
                return []
            continue
        if model in METHOD_MODELS.values() and i >= 1 and loc[i - 1] == "methods":
            continue  # the case name
        fields = getattr(model, "model_fields", None)
        f = fields.get(part) if fields else None
        if f is None:
            return []
        model = _model_in(f.annotation)
    return list(getattr(model, "model_fields", {})) if model is not None else []


def _model_in(ann: Any):
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for a in getattr(ann, "__args__", ()) or ():
        m = _model_in(a)
        if m is not None:
            return m
    return None


_YAML_EXP_STRING = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _decimal(text: str) -> str:
    """'1e-3' -> '0.001' (how to write a number YAML reads as one)."""
    return format(float(text), "f").rstrip("0").rstrip(".") if abs(float(text)) >= 1e-6 else repr(float(text))


def _describe(v: Any) -> str:
    s = repr(v)
    return (s[:40] + "...") if len(s) > 43 else s


def format_validation_error(err: ValidationError, source: str, provenance: Mapping[str, str] | None = None,
                            data: Mapping | None = None) -> str:
    """One line: '<file>: <key.path>: <problem>; <fix>' (+ how many more problems there are)."""
    errors = sorted(err.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    e = errors[0]
    loc = _clean_loc(tuple(e["loc"]))
    key = _loc_str(loc)
    typ, msg, val = e["type"], e["msg"], e.get("input")
    if typ == "extra_forbidden":
        allowed = _allowed_keys(loc, data)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        text = f"{key}: unknown key; {hint}allowed here: {', '.join(allowed) or '(see docs)'}"
    elif typ == "missing":
        text = f"{key}: required key is missing; add it to the YAML"
    elif typ in ("literal_error", "enum"):
        text = f"{key}: got {_describe(val)}; choose one of {msg.removeprefix('Input should be ')}"
    elif typ == "union_tag_invalid":
        text = (f"{key}.method: unknown method {_describe(get_path(data or {}, key.replace('[', '.').rstrip(']') + '.method'))}; "
                f"choose one of {', '.join(METHOD_NAMES)}")
    elif typ == "union_tag_not_found":
        text = f"{key}: each method needs `method:` (one of {', '.join(METHOD_NAMES)})"
    elif typ.endswith("_type"):
        expected = msg.replace("Input should be a valid ", "expected ").replace("Input should be ", "expected ")
        if isinstance(val, str) and _YAML_EXP_STRING.match(val.strip()):  # YAML 1.1 reads 1e-3 as text
            fix = f"YAML reads {val} as text: write {_decimal(val)} (or with a dot and a signed exponent: 1.0e-3)"
        else:
            fix = "fix the value's type"
        text = f"{key}: {expected}, got {_describe(val)} ({type(val).__name__}); {fix}"
    elif typ == "value_error":
        text = f"{key}: {msg.removeprefix('Value error, ')}"
    else:
        text = f"{key}: {msg[0].lower() + msg[1:]}, got {_describe(val)}"
    if provenance:  # the most specific layer that set this key (a profile's `train:` vs --set train.steps=...)
        hits = [p for p in provenance if key == p or key.startswith(p + ".") or key.startswith(p + "[")]
        if hits:
            text += f" (set by {provenance[max(hits, key=len)]})"
    more = f" (+{len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{source}: {text}{more}"


def validate_dict(data: Mapping, *, source: str = "<dict>", provenance: Mapping[str, str] | None = None
                  ) -> Experiment:
    """Validate a merged mapping into an Experiment, or raise one ConfigError line."""
    if isinstance(data, Mapping) and "shard" in data:
        raise ConfigError(f"{source}: shard: retired; remove it and start the same `strbench run` in another "
                          "process or on another machine (one tracking store, one cache_dir): the claims split "
                          "the cells")
    try:
        exp = Experiment.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source, provenance, data)) from None
    _check_cross(exp, source)
    return exp


def _check_cross(exp: Experiment, source: str) -> None:
    """Checks that span several keys (and need the SDE code: a schedule's parameters are built once)."""
    from strbench import sde as sde_mod

    for name, cfg in (("texture", sde_dict(exp.resolved(), "texture")), ("structure", sde_dict(exp.resolved(), "structure"))):
        try:
            sde_mod.make_sde(**cfg)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{source}: schedule.{name}: {one_line(e)}; fix schedule.{name}.params") from None
    from strbench.metrics import PROTOCOLS

    if exp.metrics.protocol not in PROTOCOLS:
        raise ConfigError(f"{source}: metrics.protocol: unknown protocol {exp.metrics.protocol!r}; "
                          f"choose one of {sorted(PROTOCOLS)}")
    if exp.default_profile is not None and exp.default_profile not in exp.profiles:
        raise ConfigError(f"{source}: default_profile: no profile {exp.default_profile!r}; "
                          f"profiles are {sorted(exp.profiles) or '(none)'}")


def sde_dict(resolved: Mapping, which: str) -> dict:
    """make_sde(**...) arguments of the texture or the structure SDE (structure inherits unset fields)."""
    tex = dict(resolved["schedule"]["texture"])
    if which == "texture":
        s = tex
    else:
        s = dict(tex)
        for k, v in resolved["schedule"]["structure"].items():
            if v is not None:
                s[k] = v
    params = dict(s.get("params") or {})
    return {"T": s["T"], "kind": s["kind"], "lam": s["lam"], "eps": s["eps"], **params}


def merge_layers(base: dict, *, source: str, profile: str | None = None,
                 overlay: str | os.PathLike | Mapping | None = None, overlay_name: str | None = None,
                 overrides: Iterable[str] = ()) -> tuple[dict, dict[str, str], str | None]:
    """base YAML -> profile -> overlay (a file, or a mapping of dotted keys named `overlay_name` in
    messages) -> --set overrides. Returns (merged, provenance, profile)."""
    data = copy.deepcopy(base)
    if "methods" not in data:  # so that profiles/overrides can edit the default methods by case name
        data["methods"] = {k: v.model_dump() for k, v in _default_methods().items()}
    provenance: dict[str, str] = {}
    profiles = data.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"{source}: profiles: expected a mapping of profile name -> keys, "
                          f"got {type(profiles).__name__}")
    chosen = profile if profile is not None else data.get("default_profile")
    if chosen is not None:
        if chosen not in profiles:
            via = "--profile" if profile is not None else "default_profile"
            raise ConfigError(f"{source}: {via}: profile {chosen!r} not found; choose one of "
                              f"{sorted(profiles) or '(none: add a profiles: section)'}")
        prof = profiles[chosen] or {}
        if not isinstance(prof, dict):
            raise ConfigError(f"{source}: profiles.{chosen}: expected a mapping of keys, got {type(prof).__name__}")
        for k in prof:
            if isinstance(k, str) and k.split(".")[0] in ("profiles", "default_profile", "name"):
                raise ConfigError(f"{source}: profiles.{chosen}.{k}: a profile cannot set {k.split('.')[0]}")
        for p in deep_merge(data, prof, source=f"{source}: profiles.{chosen}"):
            provenance[p] = f"profile {chosen!r}"
    if overlay is not None:
        if isinstance(overlay, Mapping):
            ov, name = copy.deepcopy(dict(overlay)), overlay_name or "the overlay mapping"
            where = name
        else:
            ov, name = read_yaml(overlay, what="overlay"), str(overlay)
            where = f"overlay {overlay}"
        for p in deep_merge(data, ov, source=name):
            provenance[p] = where
    for text in overrides:
        key, value = parse_override(text)
        set_path(data, key, value, source=f"--set {text}")
        provenance[key] = f"--set {text}"
    return data, provenance, chosen


def load_experiment(path: str | os.PathLike | Mapping, *, overrides: Iterable[str] = (),
                    overlay: str | os.PathLike | Mapping | None = None, profile: str | None = None,
                    check_profiles: bool = False, overlay_name: str | None = None) -> Experiment:
    """Read, merge and strictly validate an experiment (raises ConfigError naming file and key)."""
    if isinstance(path, Mapping):
        base, source = copy.deepcopy(dict(path)), "<dict>"
    else:
        base, source = read_yaml(path), str(path)
    merged, provenance, chosen = merge_layers(base, source=source, profile=profile, overlay=overlay,
                                              overlay_name=overlay_name,
                                              overrides=list(overrides))
    exp = validate_dict(merged, source=source, provenance=provenance)
    exp._source, exp._profile, exp._raw = source, chosen, merged
    _check_sweep(exp, merged, source)
    if check_profiles:
        for other in exp.profiles:
            if other != chosen:
                m, prov, _ = merge_layers(base, source=source, profile=other)
                validate_dict(m, source=f"{source} (profile {other})", provenance=prov)
    return exp


def _check_sweep(exp: Experiment, merged: dict, source: str) -> None:
    """Every sweep value must give a valid experiment (errors name sweep.<axis>[i])."""
    for axis, values in exp.sweep.items():
        for i, v in enumerate(values):
            trial = copy.deepcopy(merged)
            trial["sweep"] = {}
            set_path(trial, axis, v, source=f"{source}: sweep.{axis}[{i}]")
            try:
                Experiment.model_validate(trial)
            except ValidationError as e:
                line = format_validation_error(e, source, data=trial)
                raise ConfigError(f"{source}: sweep.{axis}[{i}] = {_describe(v)}: "
                                  f"{line.removeprefix(source + ': ')}") from None


__all__ = ["Experiment", "load_experiment", "validate_dict", "parse_override", "set_path", "get_path",
           "split_path", "deep_merge", "models_for", "uses_structure", "sde_dict", "dump_yaml", "ROLES",
           "VARIANTS", "read_yaml"]
