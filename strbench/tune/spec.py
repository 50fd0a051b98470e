"""The tune YAML: base experiment, search space of dotted key paths, objective, study settings; and the
overlays a trial applies (a mapping of dotted keys -> values; ``--export`` writes one as YAML)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from strbench import atomic
from strbench.errors import ConfigError

# objective name -> optimisation direction (metrics returned by strbench.experiment.evaluate)
OBJECTIVES: dict[str, str] = {"psnr": "maximize", "ssim": "maximize", "fid": "minimize", "kid": "minimize"}

Scalar = Union[None, bool, int, float, str]
DEFAULT_REPORT_AT = (0.25, 0.5, 0.75)  # study.report_at: fractions of training with an intermediate value

# --------------------------------------------------------------------------------------------
# the tune YAML schema
# --------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Dist(_Strict):
    # `when`: sample this parameter only when earlier space keys have these values (a value or a
    # list of allowed values), e.g. {schedule.texture.kind: power}. Otherwise the key is left out of
    # the overlay and the base experiment's value is used.
    when: Optional[dict[str, Union[Scalar, list[Scalar]]]] = None


class FloatDist(_Dist):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: Optional[float] = None

    @model_validator(mode="after")
    def _check(self):
        _check_range(self.low, self.high, self.log, self.step)
        return self

    def suggest(self, trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)

    def probe(self) -> float:
        return self.low


class IntDist(_Dist):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = 1

    @model_validator(mode="after")
    def _check(self):
        _check_range(self.low, self.high, self.log, None if self.step == 1 else self.step)
        return self

    def suggest(self, trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log, step=self.step)

    def probe(self) -> int:
        return self.low


class CategoricalDist(_Dist):
    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1)

    def suggest(self, trial, name: str):
        return trial.suggest_categorical(name, self.choices)

    def probe(self):
        return self.choices[0]


def _check_range(low, high, log, step) -> None:
    if not low < high:
        raise ValueError(f"low ({low}) must be < high ({high})")
    if log and low <= 0:
        raise ValueError(f"log=true needs low > 0, got {low}")
    if log and step is not None:
        raise ValueError("log=true and step cannot be combined")
    if step is not None and step <= 0:
        raise ValueError(f"step must be > 0, got {step}")


Dist = Annotated[Union[FloatDist, IntDist, CategoricalDist], Field(discriminator="type")]


class StudySpec(_Strict):
    name: str = Field(min_length=1)
    objective: Union[str, list[str]] = "psnr"
    n_trials: PositiveInt = 20  # study budget over all workers: complete + pruned + evaluated-and-failed
    sampler: Literal["tpe", "random", "cmaes", "nsga2"] = "tpe"
    n_startup_trials: Optional[PositiveInt] = None  # tpe/cmaes random start; median pruner warm-up
    pruner: Optional[Literal["median", "hyperband", "none"]] = None  # None: median (single), none (multi)
    storage: Optional[str] = None  # default: journal file .strbench/optuna-journal.log
    seed: Optional[int] = 0
    heartbeat_interval: PositiveInt = 60  # seconds between heartbeats of a running trial
    grace_period: Optional[PositiveInt] = None  # no heartbeat for this long -> stale (default 2x interval)
    max_retry: Optional[int] = Field(default=2, ge=0)  # retries of a stale trial (None: unlimited)
    # fractions of training at which a trial evaluates the whole objective with its models as trained so
    # far (its intermediate values, for the pruner and the learning curve); [] = the final value only
    report_at: list[float] = Field(default_factory=lambda: list(DEFAULT_REPORT_AT))

    @field_validator("report_at")
    @classmethod
    def _check_report_at(cls, v: list[float]) -> list[float]:
        if any(not 0 < f < 1 for f in v) or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"must list increasing fractions of training in (0, 1), e.g. "
                             f"{list(DEFAULT_REPORT_AT)}, or [] for the final value only; got {v}")
        return v

    @model_validator(mode="after")
    def _check(self):
        for name in self.objectives:
            if name not in OBJECTIVES:
                raise ValueError(f"unknown objective {name!r}; choose from {sorted(OBJECTIVES)}")
        if len(set(self.objectives)) != len(self.objectives):
            raise ValueError(f"objective lists a metric twice: {self.objectives}")
        multi = len(self.objectives) > 1
        if multi and self.pruner not in (None, "none"):
            raise ValueError("pruning is not supported for multi-objective studies; set pruner: none")
        if multi and self.sampler == "cmaes":
            raise ValueError("sampler cmaes is single-objective; use nsga2, tpe or random")
        if self.grace_period is not None and self.grace_period <= self.heartbeat_interval:
            raise ValueError(f"grace_period ({self.grace_period}) must exceed heartbeat_interval "
                             f"({self.heartbeat_interval})")
        return self

    @property
    def objectives(self) -> list[str]:
        return [self.objective] if isinstance(self.objective, str) else list(self.objective)

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o] for o in self.objectives]

    @property
    def pruner_name(self) -> str:
        if self.pruner is not None:
            return self.pruner
        return "none" if len(self.objectives) > 1 else "median"


class MlflowSpec(_Strict):
    tracking_uri: Optional[str] = None  # default: the base experiment's tracking URI
    experiment: Optional[str] = None  # default: "<base experiment name>-tune"


class TuneSpec(_Strict):
    base: str  # path of the base experiment YAML (relative paths: from the current directory)
    profile: Optional[str] = None
    study: StudySpec
    space: dict[str, Dist] = Field(min_length=1)
    set: dict[str, Any] = Field(default_factory=dict)  # fixed overlay applied to every trial
    mlflow: MlflowSpec = Field(default_factory=MlflowSpec)

    @model_validator(mode="after")
    def _check(self):
        seen: list[str] = []
        for key, dist in self.space.items():
            _check_key_path(key)
            for cond_key, allowed in (dist.when or {}).items():
                if cond_key not in seen:
                    raise ValueError(f"space[{key!r}].when refers to {cond_key!r}, which must be an "
                                     f"earlier key of space")
                cond = self.space[cond_key]
                values = allowed if isinstance(allowed, list) else [allowed]
                if isinstance(cond, CategoricalDist):
                    bad = [v for v in values if v not in cond.choices]
                    if bad:
                        raise ValueError(f"space[{key!r}].when: {bad} not among the choices of "
                                         f"{cond_key!r} {cond.choices}")
            seen.append(key)
        for key in self.set:
            _check_key_path(key)
            if key in self.space:
                raise ValueError(f"key {key!r} is both in set and in space; keep one")
        return self

    def search_definition(self) -> dict:
        """What defines the search: every process working on one study must agree on it."""
        return {"base": self.base, "profile": self.profile, "objective": self.study.objectives,
                "space": {k: v.model_dump(exclude_none=True) for k, v in self.space.items()},
                "set": self.set}


def _check_key_path(key: str) -> None:
    parts = key.split(".")
    if any(not p or p != p.strip() or " " in p for p in parts):
        raise ValueError(f"bad key path {key!r}: use dotted names like schedule.texture.kind")


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "." in str(part):
            out += f"[{str(part)!r}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def parse_spec(data: Any, source: str = "<tune config>") -> TuneSpec:
    """Validate a tune config mapping; errors -> ConfigError naming the file and key path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a tune config must be a YAML mapping with base/study/space keys")
    try:
        return TuneSpec.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = _loc(tuple(p for p in err["loc"] if p not in ("float", "int", "categorical")
                         and not str(p).startswith(("function-", "union["))))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        raise ConfigError(f"{source}: {loc or '<top>'}: {msg}") from None


def load_spec(path: str | os.PathLike) -> TuneSpec:
    """Read (with the experiment reader's one-line errors) and validate a tune YAML."""
    from strbench.config import read_yaml

    return parse_spec(read_yaml(path, what="tune config"), str(path))


# --------------------------------------------------------------------------------------------
# search space -> overlay
# --------------------------------------------------------------------------------------------


def _when_holds(when: dict | None, chosen: dict) -> bool:
    for key, allowed in (when or {}).items():
        values = allowed if isinstance(allowed, list) else [allowed]
        if key not in chosen or chosen[key] not in values:
            return False
    return True


def sample_overlay(trial, spec: TuneSpec) -> dict[str, Any]:
    """Sample the space in YAML order (conditional keys only when their `when` holds) + `set`."""
    chosen: dict[str, Any] = {}
    for key, dist in spec.space.items():
        if _when_holds(dist.when, chosen):
            chosen[key] = dist.suggest(trial, key)
    return {**spec.set, **chosen}


def probe_overlays(spec: TuneSpec) -> list[dict[str, Any]]:
    """One overlay per space key (its conditions made true), to validate every path before a study."""
    out = []
    for key, dist in spec.space.items():
        chosen = {}
        for cond_key, allowed in (dist.when or {}).items():
            chosen[cond_key] = allowed[0] if isinstance(allowed, list) else allowed
        chosen[key] = dist.probe()
        out.append({**spec.set, **chosen})
    return out


def write_overlay(overlay: dict[str, Any], path: str | os.PathLike, header: list[str] = ()) -> Path:
    """Write an overlay YAML (dotted keys -> values), with `header` lines as comments."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump(dict(overlay), sort_keys=False, default_flow_style=False)
    text = "".join(f"# {line}\n" for line in header) + body
    atomic.write_text(p, text)
    return p


def read_overlay(path: str | os.PathLike) -> dict[str, Any]:
    """Read an overlay YAML written by :func:`write_overlay` (or by hand), with the reader that
    `strbench run --set-from` uses (missing file, bad YAML and a non-mapping top level are one-line errors)."""
    from strbench.config import read_yaml

    return read_yaml(path, what="overlay")
