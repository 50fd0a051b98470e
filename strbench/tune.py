"""`strbench tune`: Optuna studies over the theta/delta schedules (and any other key by path).

A tune YAML names a base experiment, a search space of dotted key paths, an objective measured on the
*validation* split, and the study settings (sampler, pruner, storage, heartbeats). Each trial turns
its sampled parameters into an overlay (``{"schedule.texture.kind": "power", ...}``), applies it to
the base experiment and calls ``runner.evaluate(config, split="val", report=...)``; intermediate
results reported by the runner feed the pruner. Models are trained through the runner's cache, so
trials that need the same model share it.

Scale-out: the study lives in an Optuna storage (a journal file by default, SQLite, or PostgreSQL for
many machines). The first process creates it; ``--worker`` processes join it with ``load_study``.
Every storage runs with heartbeats: a trial whose worker died (no heartbeat for ``grace_period``
seconds) is marked FAIL by the next worker that starts a trial, and a copy with the same parameters
is enqueued (``RetryHeartbeatStaleTrialCallback``, at most ``max_retry`` times). Optuna 5.0's
JournalStorage has no heartbeat of its own; :class:`HeartbeatJournalStorage` adds one (heartbeats are
trial system attributes in the journal).

Budget: without ``--n-trials`` a process runs trials until the study holds ``study.n_trials`` finished
ones (complete, pruned, or failed while evaluating, e.g. a diverged training), waiting for trials that
other workers are running; two workers checking at the same instant can overshoot by one trial.
``--n-trials K`` runs exactly K trials in this process (e.g. to extend a finished study).

Conditional keys: ``when: {schedule.texture.kind: power}`` samples a key only when earlier keys have
those values (Optuna's define-by-run space); otherwise the key is left out of the overlay.

MLflow: one parent run per study (tag ``strbench.role=study``), one nested run per finished trial
(tag ``strbench.role=trial``), written through :mod:`strbench.tracking` (``StudyRuns``). A trial
whose worker was killed gets no run; its retry does.
"""
from __future__ import annotations

import json
import math
import os
import random
import socket
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from strbench import atomic
from strbench.errors import ConfigError, StrbenchError, TrainingDiverged

DEFAULT_STORAGE = ".strbench/optuna-journal.log"
HEARTBEAT_ATTR = "strbench:heartbeat"  # journal heartbeats: unix time of the last beat
SPEC_ATTR = "strbench.spec"  # study user attr: what defines the search (workers must agree)
OVERLAY_ATTR = "strbench.overlay"  # trial user attr: the exact overlay the trial ran
METRICS_ATTR = "strbench.metrics"  # trial user attr: all validation metrics of the trial
PARENT_RUN_ATTR = "strbench.mlflow_parent_run"  # study user attr: MLflow parent run id
ERROR_ATTR = "strbench.error"  # trial user attr: why an evaluated trial failed (e.g. training diverged)

# objective name -> optimisation direction (metrics returned by runner.evaluate)
OBJECTIVES: dict[str, str] = {"psnr": "maximize", "ssim": "maximize", "fid": "minimize", "kid": "minimize"}

Scalar = Union[None, bool, int, float, str]

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


# --------------------------------------------------------------------------------------------
# evaluation: overlay -> metrics (injectable; the default goes through config + runner)
# --------------------------------------------------------------------------------------------

Report = Callable[[int, dict], None]


@dataclass
class Evaluator:
    """`evaluate(overlay, report) -> metrics` (validation split); `check(overlay)` raises ConfigError."""

    evaluate: Callable[[dict, Report], dict]
    check: Optional[Callable[[dict], None]] = None
    describe: dict = field(default_factory=dict)  # base experiment name / tracking uri, for MLflow


def runner_evaluator(spec: TuneSpec) -> Evaluator:
    """The real objective: config.load_experiment(base + overlay) -> runner.evaluate(split='val')."""
    from strbench import config, runner

    base = Path(spec.base)
    if not base.is_file():
        raise ConfigError(f"tune config: base experiment {spec.base!r} not found (relative paths are "
                          f"read from the current directory {os.getcwd()})")

    def load(overlay: dict):
        with tempfile.TemporaryDirectory(prefix="strbench-tune-") as d:
            path = write_overlay(overlay, Path(d) / "overlay.yaml")
            try:
                return config.load_experiment(base, overlay=path, profile=spec.profile)
            except ConfigError as e:  # name the tune config's keys, not the temporary file
                raise ConfigError(str(e).replace(f"overlay {path}", "the tune space/set keys")
                                  .replace(str(path), "the tune space/set keys")) from None

    def evaluate(overlay: dict, report: Report) -> dict:
        return runner.evaluate(load(overlay), split="val", report=report)

    def check(overlay: dict) -> None:
        load(overlay)

    exp = config.load_experiment(base, profile=spec.profile)
    return Evaluator(evaluate, check, describe=_describe_experiment(exp))


def _describe_experiment(exp) -> dict:
    """MLflow defaults from the base experiment: its name and tracking URI."""
    return {"name": exp.experiment_name, "tracking_uri": exp.tracking.uri,
            "artifact_location": exp.tracking.artifact_location}


# --------------------------------------------------------------------------------------------
# storage with heartbeats
# --------------------------------------------------------------------------------------------


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    return optuna


def _heartbeat_journal_class():
    optuna = _optuna()
    from optuna.storages import JournalStorage
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.trial import TrialState

    class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
        """JournalStorage + heartbeats (optuna 5.0's journal has none): a beat is the trial system
        attribute ``strbench:heartbeat`` (unix time); a RUNNING trial is stale when neither its last
        beat nor its start is within ``grace_period`` seconds. Clocks of the workers must agree."""

        def __init__(self, backend, *, heartbeat_interval: int, grace_period: int | None,
                     stale_trial_callback=None) -> None:
            super().__init__(backend)
            self.heartbeat_interval = heartbeat_interval
            self.grace_period = grace_period
            self.stale_trial_callback = stale_trial_callback

        def record_heartbeat(self, trial_id: int) -> None:
            try:
                self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another worker already failed this trial as stale

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            grace = self.grace_period or 2 * self.heartbeat_interval
            now = time.time()
            stale = []
            for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                last = float(t.system_attrs.get(HEARTBEAT_ATTR, 0.0))
                if t.datetime_start is not None:  # naive local time -> unix time
                    last = max(last, t.datetime_start.timestamp())
                if now - last > grace:
                    stale.append(t._trial_id)
            return stale

        def get_heartbeat_interval(self) -> int | None:
            return self.heartbeat_interval

        def get_heartbeat_stale_trial_callback(self):
            return self.stale_trial_callback

    return HeartbeatJournalStorage


RDB_SCHEMES = ("sqlite", "postgresql", "mysql")


def storage_kind(url: str) -> str:
    """'journal' for `journal:PATH` or a bare path, 'rdb' for sqlite/postgresql/mysql URLs."""
    if url.startswith("journal:"):
        return "journal"
    if "://" not in url:
        return "journal"
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme in RDB_SCHEMES:
        return "rdb"
    raise ConfigError(f"storage {url!r}: unknown scheme {scheme!r}; use a journal file path, "
                      f"sqlite:///file.db or postgresql://user@host/db")


def resolve_storage_url(url: str | None) -> str:
    """Default journal file; journal paths made absolute (`journal:/abs/path`)."""
    url = url or DEFAULT_STORAGE
    if storage_kind(url) == "journal":
        path = url.removeprefix("journal:")
        return "journal:" + str(Path(path).expanduser().resolve())
    return url


def redact(url: str) -> str:
    """The storage URL without its password (for logs and MLflow tags)."""
    if storage_kind(url) == "rdb" and "@" in url:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    return url


def _postgres_driver(url: str) -> str:
    """`postgresql://` -> `postgresql+psycopg2://` when psycopg2 is what is installed (SQLAlchemy 2.1
    picks psycopg 3 for a bare postgresql:// URL)."""
    import importlib.util

    has2, has3 = (importlib.util.find_spec(m) is not None for m in ("psycopg2", "psycopg"))
    if url.startswith("postgresql://"):
        if has2 and not has3:
            return "postgresql+psycopg2://" + url[len("postgresql://"):]
        if not (has2 or has3):
            raise ConfigError(f"storage {redact(url)}: PostgreSQL needs psycopg2 "
                              f"(pip install psycopg2-binary, or the dev extra)")
    return url


def open_storage(url: str | None, study: StudySpec):
    """Optuna storage for `url` with heartbeats and the retry-on-stale callback."""
    optuna = _optuna()
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    url = resolve_storage_url(url)
    retry = RetryHeartbeatStaleTrialCallback(max_retry=study.max_retry)
    if storage_kind(url) == "journal":
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return _heartbeat_journal_class()(JournalFileBackend(str(path)),
                                          heartbeat_interval=study.heartbeat_interval,
                                          grace_period=study.grace_period, stale_trial_callback=retry)
    engine_kwargs = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}  # several workers on one file
        db = url.split(":///", 1)[-1]
        if db and db != ":memory:":
            Path(db).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("postgresql"):
        url = _postgres_driver(url)
    try:
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=study.heartbeat_interval,
            grace_period=study.grace_period, heartbeat_stale_trial_callback=retry)
    except Exception as e:  # unreachable server, bad credentials, bad URL
        raise StrbenchError(f"storage {redact(url)}: cannot open: {str(e).splitlines()[0]}") from None


# --------------------------------------------------------------------------------------------
# samplers and pruners (registries)
# --------------------------------------------------------------------------------------------


def _tpe(study: StudySpec, seed):
    import optuna

    kw = {} if study.n_startup_trials is None else {"n_startup_trials": study.n_startup_trials}
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True, **kw)


def _random(study: StudySpec, seed):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _cmaes(study: StudySpec, seed):
    import optuna

    try:
        import cmaes  # noqa: F401
    except ImportError:
        raise ConfigError("study.sampler: cmaes needs the `cmaes` package (pip install cmaes); "
                          "use tpe or random") from None
    kw = {} if study.n_startup_trials is None else {"n_startup_trials": study.n_startup_trials}
    return optuna.samplers.CmaEsSampler(seed=seed, **kw)


def _nsga2(study: StudySpec, seed):
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed)


SAMPLER_FACTORIES: dict[str, Callable] = {"tpe": _tpe, "random": _random, "cmaes": _cmaes, "nsga2": _nsga2}


def _median(study: StudySpec):
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=study.n_startup_trials or 5)


def _hyperband(study: StudySpec):
    import optuna

    return optuna.pruners.HyperbandPruner()


def _nop(study: StudySpec):
    import optuna

    return optuna.pruners.NopPruner()


PRUNER_FACTORIES: dict[str, Callable] = {"median": _median, "hyperband": _hyperband, "none": _nop}


def process_seed(seed: int | None, joined: bool) -> int | None:
    """The creating process uses `seed`; processes joining an existing study derive their own (else
    every worker would propose the same parameters). Multi-worker studies are not bit-reproducible."""
    if seed is None or not joined:
        return seed
    return random.Random(f"{seed}:{socket.gethostname()}:{os.getpid()}:{time.time_ns()}").randrange(2**31)


# --------------------------------------------------------------------------------------------
# the study
# --------------------------------------------------------------------------------------------


@dataclass
class StudySummary:
    study_name: str
    storage: str  # redacted
    ran: int  # trials this process ran
    n_complete: int
    n_pruned: int
    n_failed: int
    n_running: int
    best_number: int | None
    best_values: list[float] | None


def open_study(spec: TuneSpec, *, storage: str | None = None, worker: bool = False):
    """Create the study (first process, load_if_exists) or join it (`worker`: it must exist)."""
    optuna = _optuna()
    url = resolve_storage_url(storage or spec.study.storage)
    st = open_storage(url, spec.study)
    name = spec.study.name
    exists = name in {s.study_name for s in st.get_all_studies()}
    if worker and not exists:
        raise StrbenchError(f"study {name!r} does not exist in storage {redact(url)}; start the first "
                            f"process without --worker (it creates the study), then the workers")
    seed = process_seed(spec.study.seed, joined=exists)
    sampler = SAMPLER_FACTORIES[spec.study.sampler](spec.study, seed)
    pruner = PRUNER_FACTORIES[spec.study.pruner_name](spec.study)
    if exists:
        study = optuna.load_study(study_name=name, storage=st, sampler=sampler, pruner=pruner)
    else:
        study = optuna.create_study(study_name=name, storage=st, sampler=sampler, pruner=pruner,
                                    directions=spec.study.directions, load_if_exists=True)
    _check_same_search(study, spec, url)
    return study, url


def _check_same_search(study, spec: TuneSpec, url: str) -> None:
    want = [d.lower() for d in spec.study.directions]
    have = [d.name.lower() for d in study.directions]
    if have != want:
        raise ConfigError(f"study {spec.study.name!r} in {redact(url)} has directions {have}, the tune "
                          f"config asks {want} (objective {spec.study.objectives}); use another study.name")
    definition = spec.search_definition()
    stored = study.user_attrs.get(SPEC_ATTR)
    if stored is None:
        study.set_user_attr(SPEC_ATTR, definition)
    elif stored != definition:
        diff = sorted(k for k in definition if definition[k] != stored.get(k))
        raise ConfigError(f"study {spec.study.name!r} in {redact(url)} was created from a different tune "
                          f"config ({', '.join(diff)} differ); use the same YAML or another study.name")


def _counts(study) -> dict[str, int]:
    """Trials per state, plus BUDGET: finished trials that count toward study.n_trials (complete,
    pruned, and failed-while-evaluated; a stale trial failed for its dead worker is retried instead)."""
    from optuna.trial import TrialState

    out = {s.name: 0 for s in TrialState}
    out["BUDGET"] = 0
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] += 1
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
                t.state == TrialState.FAIL and ERROR_ATTR in t.user_attrs):
            out["BUDGET"] += 1
    return out


def _finite_values(metrics: dict, objectives: list[str]) -> list[float]:
    values = []
    for name in objectives:
        v = metrics.get(name)
        if v is None:
            why = metrics.get(f"{name}_missing") or f"not among the returned metrics {sorted(metrics)}"
            hint = " (FID needs metrics.fid: true in the base experiment)" if name in ("fid", "kid") else ""
            raise StrbenchError(f"objective {name!r}: the evaluation gave no value ({why}){hint}; "
                                f"choose another study.objective")
        v = float(v)
        if not math.isfinite(v):
            raise TrainingDiverged(f"objective {name!r} is {v}")
        values.append(v)
    return values


def make_objective(spec: TuneSpec, evaluator: Evaluator, on_trial: Callable[[dict], None] | None = None):
    """Optuna objective: sample the overlay, evaluate it on the validation split, report for pruning."""
    import optuna

    objectives = spec.study.objectives
    single = len(objectives) == 1

    def objective(trial) -> float | list[float]:
        overlay = sample_overlay(trial, spec)
        trial.set_user_attr(OVERLAY_ATTR, overlay)
        curve: list[tuple[int, dict]] = []

        def report(step: int, metrics: dict) -> None:
            curve.append((int(step), dict(metrics)))
            if single and metrics.get(objectives[0]) is not None:
                trial.report(float(metrics[objectives[0]]), int(step))
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at step {step}")

        record = {"number": trial.number, "overlay": overlay, "curve": curve, "metrics": {},
                  "values": None, "state": "RUNNING", "error": None,
                  "retry_of": _retried_from(trial)}
        try:
            metrics = evaluator.evaluate(overlay, report)
            values = _finite_values(metrics, objectives)
        except optuna.TrialPruned:
            record["state"] = "PRUNED"
            raise
        except BaseException as e:
            record.update(state="FAIL", error=f"{type(e).__name__}: {e}")
            try:  # an evaluated failure counts toward the budget (a stale trial, retried, does not)
                trial.set_user_attr(ERROR_ATTR, record["error"][:2000])
            except Exception:
                pass
            raise
        else:
            record.update(state="COMPLETE", values=values, metrics=_numeric(metrics))
            trial.set_user_attr(METRICS_ATTR, record["metrics"])
            return values[0] if single else values
        finally:
            if on_trial is not None:
                on_trial(record)

    return objective


def _retried_from(trial) -> int | None:
    """Number of the stale trial this one retries (RetryHeartbeatStaleTrialCallback's system attr)."""
    frozen = trial.study._storage.get_trial(trial._trial_id)  # Trial has no public system_attrs
    return frozen.system_attrs.get("failed_trial")


def _numeric(metrics: dict) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
            out[k] = float(v)
    return out


def run_study(spec: TuneSpec, *, evaluator: Evaluator | None = None, storage: str | None = None,
              worker: bool = False, n_trials: int | None = None, track: bool = True,
              quiet: bool = False) -> StudySummary:
    """Run trials until the study has `study.n_trials` finished trials over all workers (or exactly
    `n_trials` trials in this process when given). Returns the study's counts and best trial."""
    if evaluator is None:
        evaluator = runner_evaluator(spec)
    if evaluator.check is not None:  # every key path and value type, before any training
        for overlay in probe_overlays(spec):
            evaluator.check(overlay)
    study, url = open_study(spec, storage=storage, worker=worker)
    say = (lambda *a: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    say(f"study {spec.study.name!r} in {redact(url)}: objective {spec.study.objectives}, "
        f"sampler {spec.study.sampler}, pruner {spec.study.pruner_name}")

    study_log = _StudyLog(spec, study, url, evaluator) if track else None

    def on_trial(record: dict) -> None:
        if study_log is not None:
            study_log.trial(record)
        vals = "" if record["values"] is None else " " + " ".join(
            f"{o}={v:.4g}" for o, v in zip(spec.study.objectives, record["values"]))
        retry = "" if record["retry_of"] is None else f" (retry of trial {record['retry_of']})"
        say(f"trial {record['number']} {record['state']}{vals}{retry}")

    objective = make_objective(spec, evaluator, on_trial)
    ok = False
    try:
        ran = _optimize_loop(study, objective, spec.study, n_trials, say)
        ok = True
    finally:
        summary = summarize(study, url, ran if ok else 0)
        if study_log is not None:
            study_log.finish(summary, ok)
    return summary


def _optimize_loop(study, objective, st: StudySpec, n_trials: int | None, say) -> int:
    """Trials one at a time (study.optimize does the heartbeat thread and fails stale trials first).
    Budget mode (n_trials None): stop when the study has `st.n_trials` finished trials (see _counts)
    and nothing is WAITING; while the rest is RUNNING elsewhere, wait (a dead worker's trial turns stale, is retried
    here). Two workers that check the budget at the same instant may overshoot it by one trial."""
    from optuna.storages import fail_stale_trials

    catch = (TrainingDiverged,)
    poll = min(max(st.heartbeat_interval / 2, 0.2), 10.0)
    ran, waiting_said = 0, False
    while True:
        if n_trials is not None:
            if ran >= n_trials:
                return ran
        else:
            fail_stale_trials(study)
            c = _counts(study)
            finished = c["BUDGET"]
            if c["WAITING"] == 0 and finished >= st.n_trials:
                return ran
            if c["WAITING"] == 0 and finished + c["RUNNING"] >= st.n_trials:
                if not waiting_said:
                    say(f"waiting for {c['RUNNING']} trial(s) running in other workers")
                    waiting_said = True
                time.sleep(poll)
                continue
        study.optimize(objective, n_trials=1, catch=catch, gc_after_trial=False)
        ran += 1


def summarize(study, url: str, ran: int = 0) -> StudySummary:
    c = _counts(study)
    best = best_trial(study)
    return StudySummary(study.study_name, redact(url), ran, c["COMPLETE"], c["PRUNED"], c["FAIL"],
                        c["RUNNING"], None if best is None else best.number,
                        None if best is None else list(best.values))


def best_trial(study):
    """Best COMPLETE trial; multi-objective: among the Pareto front, the best by the first objective
    (ties: lowest trial number). None when nothing completed."""
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    if len(study.directions) == 1:
        return study.best_trial
    sign = 1.0 if study.directions[0] == StudyDirection.MINIMIZE else -1.0
    return min(study.best_trials, key=lambda t: (sign * t.values[0], t.number))


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------


def export_best(spec: TuneSpec, out: str | os.PathLike, *, storage: str | None = None,
                tune_path: str | None = None) -> tuple[Path, Any]:
    """Write the best trial's overlay (the `set` keys + its sampled keys) for `run --set-from`."""
    optuna = _optuna()
    url = resolve_storage_url(storage or spec.study.storage)
    st = open_storage(url, spec.study)
    name = spec.study.name
    if name not in {s.study_name for s in st.get_all_studies()}:
        raise StrbenchError(f"study {name!r} does not exist in storage {redact(url)}; run strbench tune first")
    study = optuna.load_study(study_name=name, storage=st)
    best = best_trial(study)
    if best is None:
        raise StrbenchError(f"study {name!r} in {redact(url)} has no complete trial to export yet")
    overlay = best.user_attrs.get(OVERLAY_ATTR) or {**spec.set, **best.params}
    c = _counts(study)
    values = ", ".join(f"{o} = {v!r} ({OBJECTIVES[o]})" for o, v in zip(spec.study.objectives, best.values))
    profile = f" --profile {spec.profile}" if spec.profile else ""
    header = [
        f"strbench tune export: best trial of study {name!r}" + (f" ({tune_path})" if tune_path else ""),
        f"storage: {redact(url)}",
        f"base: {spec.base}" + (f" (profile {spec.profile})" if spec.profile else ""),
        f"trial {best.number}: {values}; validation split",
        f"study: {c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL']} failed trials",
    ]
    if len(spec.study.objectives) > 1:
        header.append(f"multi-objective: best by {spec.study.objectives[0]} among the Pareto front")
    header.append(f"apply: strbench run {spec.base}{profile} --set-from {out}")
    return write_overlay(overlay, out, header), best


# --------------------------------------------------------------------------------------------
# MLflow (through strbench.tracking, the only module that imports mlflow)
# --------------------------------------------------------------------------------------------


class _StudyLog:
    """Parent run of the study (created once; found again through the study's user attr or the MLflow
    study tag when workers join) and one nested run per finished trial."""

    def __init__(self, spec: TuneSpec, study, url: str, evaluator: Evaluator):
        from strbench import tracking

        d = evaluator.describe
        base_name = d.get("name") or Path(spec.base).stem
        self.uri = spec.mlflow.tracking_uri or d.get("tracking_uri") or tracking.DEFAULT_URI
        self.experiment = spec.mlflow.experiment or f"{base_name}-tune"
        self.objectives = spec.study.objectives
        self.runs = tracking.StudyRuns(self.uri, self.experiment, spec.study.name, d.get("artifact_location"))
        st = spec.study
        self.parent = self.runs.parent(
            study.user_attrs.get(PARENT_RUN_ATTR),
            params={"base": spec.base, "profile": spec.profile or "", "objective": ",".join(st.objectives),
                    "sampler": st.sampler, "pruner": st.pruner_name, "n_trials": st.n_trials, "seed": st.seed,
                    **{f"space.{k}": json.dumps(v.model_dump(exclude_none=True)) for k, v in spec.space.items()},
                    **{f"set.{k}": v for k, v in spec.set.items()}},
            tags={"strbench.storage": redact(url), "strbench.base": spec.base})
        if study.user_attrs.get(PARENT_RUN_ATTR) != self.parent:
            study.set_user_attr(PARENT_RUN_ATTR, self.parent)

    def trial(self, record: dict) -> None:
        values = {} if record["values"] is None else dict(zip(self.objectives, record["values"]))
        self.runs.log_trial(self.parent, record["number"], params=record["overlay"],
                            metrics={**record["metrics"], **values}, curve=record["curve"],
                            state=record["state"], retry_of=record["retry_of"], error=record["error"])

    def finish(self, s: "StudySummary", ok: bool = True) -> None:
        m = {"n_complete": s.n_complete, "n_pruned": s.n_pruned, "n_failed": s.n_failed}
        if s.best_values is not None:
            m.update({f"best_{o}": v for o, v in zip(self.objectives, s.best_values)})
            m["best_trial"] = s.best_number
        self.runs.finish_parent(self.parent, m, status="FINISHED" if ok else "FAILED")


# --------------------------------------------------------------------------------------------
# CLI entry
# --------------------------------------------------------------------------------------------


def tune_command(config: str, storage: str | None = None, worker: bool = False, n_trials: int | None = None,
                 export: str | None = None, quiet: bool = False) -> int:
    """`strbench tune X.yaml [--storage URL] [--worker] [--n-trials K] [--export best.yaml]`."""
    spec = load_spec(config)
    if n_trials is not None and n_trials < 1:
        raise ConfigError(f"--n-trials must be >= 1, got {n_trials}")
    if export is not None:
        path, best = export_best(spec, export, storage=storage, tune_path=config)
        if not quiet:
            print(f"wrote {path}: trial {best.number} values {list(best.values)}")
        return 0
    s = run_study(spec, storage=storage, worker=worker, n_trials=n_trials, quiet=quiet)
    if not quiet:
        best = "none" if s.best_number is None else f"trial {s.best_number} {s.best_values}"
        print(f"study {s.study_name!r} ({s.storage}): this process ran {s.ran} trial(s); "
              f"{s.n_complete} complete, {s.n_pruned} pruned, {s.n_failed} failed, {s.n_running} running; "
              f"best {best}")
        print(f"export the best overlay: strbench tune {config} --export best.yaml")
    return 0
