"""Planning: an experiment expands into frozen, hashed cells and the models they need.

    cells = expand(exp)          # sweep axes x cases x mask sets x bins, deduplicated, grouped by model

Everything here is pure (no files, no MLflow, no environment): a :class:`Cell` holds its typed, frozen
:class:`CellConfig`; a :class:`ModelSpec` holds the :class:`~strbench.trainset.TrainConfig` and the
training data of one model. Method knowledge comes from the method registry (:mod:`strbench.methods`), role
knowledge (nets.unet, structure guidance) from the role registry (:mod:`strbench.roles`).
What comes from this machine is passed in: the launch's world size and a ``digest(path, key) -> sha256``
of pretrained weights files (``strbench.experiment.expand`` = :func:`strbench.experiment.checks.expand`
reads both).
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Optional

from pydantic import field_serializer, field_validator, model_serializer

from strbench import config as cfgmod
from strbench import methods as registry
from strbench.config import Experiment, MethodCfg, MetricsCfg, SampleCfg, SplitsCfg, Strict
from strbench.errors import ConfigError
from strbench.hashing import config_hash


def freeze(x: Any) -> Any:
    """Deep read-only copy: mappings -> MappingProxyType, lists -> tuples."""
    if isinstance(x, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in x.items()})
    if isinstance(x, (list, tuple)):
        return tuple(freeze(v) for v in x)
    return x


def thaw(x: Any) -> Any:
    """Plain dicts and lists again (for JSON/YAML and for editing a copy)."""
    if isinstance(x, Mapping):
        return {k: thaw(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [thaw(v) for v in x]
    return x


# ------------------------------------------------------------------------------------------------
# what a model is trained on, and the model
# ------------------------------------------------------------------------------------------------


class TrainDataset(Strict):
    type: str
    root: Optional[str]
    size: int
    resize: str
    split_file: Optional[str]
    limit: Optional[int]
    test_fraction: Optional[float]


class TrainMasks(Strict):
    """The random training-mask pool (strbench.masks.random_masks)."""

    families: list[str]
    ratio: list[float]
    count: int
    seed: int
    size: int


class TrainData(Strict):
    dataset: TrainDataset
    masks: TrainMasks
    structure_model: Optional[str] = None  # hash of the structure model (guidance "net")

    def identity(self) -> dict:
        d = self.model_dump()
        if d["structure_model"] is None:
            del d["structure_model"]
        return d


@dataclass(frozen=True)
class ModelSpec:
    """A model to train once and share: its role, TrainConfig, training data and dependencies."""

    role: str
    hash: str  # = TrainConfig.hash(role), also the checkpoint's config_hash; pretrained: see pretrained_hash
    train: Any  # strbench.trainset.TrainConfig (frozen; for a pretrained model only its net counts)
    data: TrainData
    needs: tuple[str, ...] = ()  # hashes of models that must exist first (structure net for guidance "net")
    source: Optional[str] = None  # pretrained: a weights file, "random:SEED", "" (not set yet); None: trained
    sha256: Optional[str] = None  # of the weights file (None for random:SEED)

    @property
    def short(self) -> str:
        return self.hash[:12]

    @property
    def pretrained(self) -> bool:
        return self.source is not None

    def to_dict(self) -> dict:
        d = {"hash": self.hash, "train": self.train.to_dict(), "data": self.data.identity(), "needs": list(self.needs)}
        if self.source is not None:
            d.update(source=self.source, sha256=self.sha256)
        return d

    @classmethod
    def from_dict(cls, role: str, d: Mapping) -> "ModelSpec":
        from strbench.trainset import TrainConfig

        return cls(role=role, hash=d["hash"], train=TrainConfig.from_dict(thaw(d["train"])),
                   data=TrainData.model_validate(thaw(d["data"]), strict=False), needs=tuple(d.get("needs") or ()),
                   source=d.get("source"), sha256=d.get("sha256"))


RANDOM_PREFIX = "random:"


def random_seed_of(source: str) -> Optional[int]:
    """SEED of a "random:SEED" model source, else None."""
    if not source.startswith(RANDOM_PREFIX):
        return None
    tail = source[len(RANDOM_PREFIX):]
    if not tail.lstrip("-").isdigit():
        raise ConfigError(f"models: {source!r}: write random:SEED with an integer seed, e.g. random:0")
    return int(tail)


def pretrained_hash(role: str, net: Mapping, sha256: Optional[str], seed: Optional[int]) -> str:
    """Identity of a loaded model: its role, its resolved network, and the file's content (or the seed)."""
    return config_hash({"role": role, "net": dict(net), "weights": {"sha256": sha256} if sha256 else {"random": seed}})


Digest = Callable[[str, str], str]  # (weights file, or the masks.path folder; its config key) -> sha256 hex


def _no_digest(path: str, key: str) -> str:
    raise ConfigError(f"{key}: a weights file enters the model hash by its sha256 (a by_name mask folder the cell "
                      "hash): plan with strbench.experiment.expand (it reads it), or pass digest= to plan.expand")


# ------------------------------------------------------------------------------------------------
# a cell
# ------------------------------------------------------------------------------------------------


class EvalMasks(Strict):
    """The evaluation masks of one cell: one bin (lo, hi] of one mask set."""

    set: str
    lo: float
    hi: float
    label: str
    per_bin: int
    families: list[str]
    bins: list[list[float]]
    source: str
    path: Optional[str]
    polarity: Optional[str]
    seed: int
    val_seed: int
    pairing: str = "seeded"  # by_name: strbench.pairing (each image with its own masks)
    content: Optional[str] = None  # by_name: sha256 of the mask folder's files (pairing.folder_digest)

    @model_serializer(mode="wrap")
    def _identity(self, handler):
        """Seeded cells dump (and hash) as before these two fields existed."""
        d = handler(self)
        if d.get("pairing") == "seeded" and d.get("content") is None:
            d.pop("pairing", None)
            d.pop("content", None)
        return d


class EvalDataset(Strict):
    type: str
    root: Optional[str]
    size: int
    resize: str
    splits: SplitsCfg
    test_fraction: Optional[float]


class CellConfig(Strict):
    """Everything one cell's result depends on (plus its models' full specs); logged as cell.yaml."""

    model_config = {**Strict.model_config, "arbitrary_types_allowed": True}

    case: str
    method: MethodCfg
    settings: dict[str, Any]  # what strbench.sample.sample receives: set method fields + structure inputs
    mask: EvalMasks
    dataset: EvalDataset
    variant: Optional[str]
    schedule: dict[str, dict[str, Any]]  # texture / structure: make_sde keyword arguments
    sample: SampleCfg
    metrics: MetricsCfg
    seed: int
    models: dict[str, ModelSpec]

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, v):
        return {r: m if isinstance(m, ModelSpec) else ModelSpec.from_dict(r, m) for r, m in dict(v).items()}

    @field_serializer("models")
    def _dump_models(self, v):
        return {r: m.to_dict() for r, m in v.items()}

    @classmethod
    def from_mapping(cls, d: Mapping) -> "CellConfig":
        """A cell config read back (e.g. a logged cell.yaml): lists where YAML has them."""
        return cls.model_validate(thaw(d), strict=False)

    def hash(self) -> str:
        """Hash of what determines the result: models by their hash, bookkeeping left out."""
        c = self.model_dump()
        c["models"] = {r: m.hash for r, m in self.models.items()}
        return config_hash(c)


@dataclass(frozen=True)
class Cell:
    """One evaluation: a case (method + settings) on one mask bin, resolved, frozen and hashed."""

    index: int
    hash: str
    config: CellConfig
    axes: Mapping  # sweep values: case, method, mask_set, mask_bin, variant, seed, and any swept key

    @property
    def short(self) -> str:
        return self.hash[:12]

    @property
    def models(self) -> tuple[ModelSpec, ...]:
        return tuple(self.config.models.values())

    @property
    def method(self):
        return registry.get(self.config.method.method)

    @property
    def extra_axes(self) -> dict:
        """Swept keys besides the standard axes."""
        return {k: v for k, v in self.axes.items() if k not in STANDARD_AXES}

    @property
    def label(self) -> str:
        a = self.axes
        extra = " ".join(f"{k}={v}" for k, v in self.extra_axes.items())
        var = f" {a['variant']}" if a.get("variant") else ""
        mset = f"{a['mask_set']}/" if a.get("n_mask_sets", 1) > 1 else ""
        return f"{a['case']} {mset}{a['mask_bin']}{var} seed={a['seed']}" + (f" {extra}" if extra else "")

    def model(self, role: str) -> ModelSpec:
        return self.config.models[role]


STANDARD_AXES = ("case", "method", "mask_set", "mask_bin", "variant", "seed", "n_mask_sets")


# ------------------------------------------------------------------------------------------------
# expansion
# ------------------------------------------------------------------------------------------------


def model_specs(exp: Experiment, roles: Iterable[str], *, world_size: int = 1,
                digest: Digest = _no_digest) -> dict[str, ModelSpec]:
    """TrainConfig and training data of each role (with its dependencies); validated by strbench.trainset.
    world_size: ranks of the launch (the global batch is part of the hash); digest: sha256 of a weights file."""
    from strbench import roles as role_registry
    from strbench.trainset import TrainConfig

    ds, tr, nets = exp.dataset, exp.train, exp.nets
    data = {
        "dataset": {"type": ds.type, "root": ds.root, "size": ds.size, "resize": ds.resize,
                    "split_file": ds.splits.train, "limit": ds.train_limit, "test_fraction": ds.test_fraction},
        "masks": {**exp.masks.train.model_dump(), "seed": exp.seed, "size": ds.size},
    }
    sdes = {"sde": exp.sde("texture"), "sde_structure": None}
    if any(v is not None for v in exp.schedule.structure.model_dump().values()):
        sdes["sde_structure"] = exp.sde("structure")
    out: dict[str, ModelSpec] = {}

    def spec(role: str) -> ModelSpec:
        if role in out:
            return out[role]
        declared = role_registry.get(role)
        needs: tuple = ()
        data_r = dict(data)
        if declared.guided and tr.guidance == "net":  # guided by the trained structure net
            needs = (spec(role_registry.GUIDE).hash,)
            data_r["structure_model"] = needs[0]
        fields = tr.model_dump(exclude={"roles"})
        override = tr.roles.get(role)
        if override is not None:
            fields.update({k: v for k, v in override.model_dump().items() if v is not None})
        net = dict(nets.roles.get(role) or {})
        if declared.unet:
            net = {**nets.unet, **net}
        if nets.arch != "strbench":
            net = {"arch": nets.arch, **net}
        source = exp.models.get(role, False)
        source = "" if source is None else (source or None)  # "": a role set to null (checked by the pre-flight)
        if source is not None:
            needs, data_r = (), dict(data)  # loaded, not trained: depends on no other model
        tc = {**fields, "seed": exp.seed, "preset": nets.preset, "net": net, **sdes, "variant": exp.variant,
              "canny_sigma": exp.structure.canny_sigma, "data_id": config_hash(data_r), "world_size": world_size}
        try:
            cfg = TrainConfig.from_dict(copy.deepcopy(tc), path="train")
            cfg.validate(role)
        except ConfigError as e:
            raise ConfigError(f"{exp.source}: model {role!r} (train/nets sections): {e}") from None
        if source is None:
            out[role] = ModelSpec(role=role, hash=cfg.hash(role), train=cfg, data=TrainData.model_validate(data_r),
                                  needs=needs)
        else:
            key = f"{exp.source}: models.{role}"
            try:
                seed = random_seed_of(source)
            except ConfigError as e:
                raise ConfigError(f"{key}: {str(e).removeprefix('models: ')}") from None
            sha = None if seed is not None or source == "" else digest(source, key)
            out[role] = ModelSpec(role=role, hash=pretrained_hash(role, cfg.identity(role)["config"]["net"], sha, seed),
                                  train=cfg, data=TrainData.model_validate(data_r), source=source, sha256=sha)
        return out[role]

    for r in roles:
        spec(r)
    return out


def sampler_settings(exp: Experiment, method: cfgmod.MethodSettings) -> dict:
    """Keyword settings of strbench.sample.sample for this case (None = the method's default), plus the
    experiment's structure inputs for structure-guided methods."""
    s = {k: v for k, v in method.model_dump(exclude={"method"}).items() if v is not None}
    m = registry.get(method.method)
    for k in m.train_settings:  # one setting for training and sampling (e.g. the time D is queried at)
        trained = getattr(exp.train, k)
        if k in s and s[k] != trained:
            raise ConfigError(f"{k}={s[k]!r} differs from train.{k}={trained!r}, the value its networks were "
                              f"trained with; set train.{k} instead")
        s[k] = trained
    if cfgmod.uses_structure(method):
        st = exp.structure
        s["variant"] = exp.variant
        s["canny_sigma"] = st.test_canny_sigma if st.test_canny_sigma is not None else st.canny_sigma
    return s


def cell_config(exp: Experiment, case: str, method: cfgmod.MethodSettings, mask_set: str, mset: Mapping,
                lo: float, hi: float, models: Mapping[str, ModelSpec], mask_content: Optional[str] = None
                ) -> CellConfig:
    from strbench.masks import bin_label

    m, ds = exp.masks, exp.dataset
    guided = cfgmod.uses_structure(method)
    return CellConfig(
        case=case, method=method, settings=sampler_settings(exp, method),
        mask=EvalMasks(set=mask_set, lo=lo, hi=hi, label=bin_label(lo, hi), per_bin=mset["per_bin"],
                       families=list(mset["families"]), bins=[list(b) for b in mset["bins"]], source=m.source,
                       path=mset.get("path", m.path), polarity=m.polarity, seed=m.seed, val_seed=m.val_seed,
                       pairing=m.pairing, content=mask_content),
        dataset=EvalDataset(type=ds.type, root=ds.root, size=ds.size, resize=ds.resize, splits=ds.splits,
                            test_fraction=ds.test_fraction),
        variant=exp.variant if guided else None,
        schedule={"texture": exp.sde("texture"), "structure": exp.sde("structure")},
        sample=exp.sample, metrics=exp.metrics, seed=exp.seed, models=dict(models))


def _combos(exp: Experiment):
    """(axis values, the experiment with those values applied and validated) per sweep combination."""
    axes = [(k, list(v)) for k, v in exp.sweep.items()]
    if not axes:
        yield {}, exp
        return
    base = exp.resolved()
    for combo in itertools.product(*[vals for _, vals in axes]):
        r = copy.deepcopy(base)
        r["sweep"] = {}
        values = dict(zip([k for k, _ in axes], combo))
        for key, value in values.items():
            cfgmod.set_path(r, key, copy.deepcopy(value), source=f"{exp.source}: sweep.{key}")
        rexp = cfgmod.validate_dict(r, source=f"{exp.source} (sweep {values})")
        rexp._source = exp.source
        yield values, rexp


def expand(exp: Experiment, *, world_size: int = 1, digest: Digest = _no_digest) -> list[Cell]:
    """All cells of the experiment: sweep axes x cases x mask sets x bins, deduplicated (e.g. IR-SDE does
    not depend on the structure variant), in a stable order grouped by model. world_size: ranks of the launch
    (torchrun's; train.batch is per rank); digest(path, key): sha256 of a pretrained weights file."""
    from strbench.masks import bin_label
    from strbench.sample import resolve_settings

    n_sets = len(exp.mask_sets())
    cells: list[Cell] = []
    seen: set[str] = set()
    for values, rexp in _combos(exp):
        by_name = rexp.masks.pairing == "by_name" and rexp.masks.source == "folder"  # its content: the cells' identity
        content = {k: digest(s["path"], f"{exp.source}: masks.path") if by_name and s["path"] else None
                   for k, s in rexp.mask_sets().items()}
        for case, method in rexp.cases().items():
            specs = model_specs(rexp, registry.get(method.method).roles(method), world_size=world_size,
                                digest=digest)
            try:
                resolve_settings(method.method, sampler_settings(rexp, method))
            except ConfigError as e:
                raise ConfigError(f"{exp.source}: methods.{case}: {e}") from None
            for set_name, mset in rexp.mask_sets().items():
                for lo, hi in mset["bins"]:
                    cc = cell_config(rexp, case, method, set_name, mset, lo, hi, specs, content[set_name])
                    h = cc.hash()
                    if h in seen:
                        continue
                    seen.add(h)
                    ax = {"case": case, "method": method.method, "mask_set": set_name, "mask_bin": bin_label(lo, hi),
                          "variant": cc.variant, "seed": rexp.seed,
                          **{k: v for k, v in values.items() if k not in ("variant", "seed")}}
                    if n_sets > 1:
                        ax["n_mask_sets"] = n_sets
                    cells.append(Cell(index=len(cells), hash=h, config=cc, axes=freeze(ax)))
    return cells


def experiment_hash(cells: list[Cell]) -> str:
    return config_hash(sorted(c.hash for c in cells))


def model_groups(cells: Iterable[Cell]) -> dict[tuple, list[Cell]]:
    """Cells grouped by the models they need (in first-appearance order)."""
    groups: dict[tuple, list[Cell]] = {}
    for c in cells:
        groups.setdefault(tuple(m.hash for m in c.models), []).append(c)
    return groups


def unique_models(cells: Iterable[Cell]) -> list[ModelSpec]:
    """Every model the cells need, dependencies first."""
    out: dict[str, ModelSpec] = {}
    for c in cells:
        by_hash = {m.hash: m for m in c.models}

        def add(m: ModelSpec):
            for h in m.needs:
                add(by_hash[h])
            out.setdefault(m.hash, m)

        for m in c.models:
            add(m)
    return list(out.values())
