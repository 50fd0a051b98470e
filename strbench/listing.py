"""`strbench ls`: what a tracking store holds, as data (the CLI prints it).

    overview(uri)                      # every MLflow experiment holding strbench runs, with cell counts
    store_cells(uri, "quickstart")     # the cell runs of one experiment, one row per cell hash
    planned_cells(exp)                 # every cell an experiment YAML plans, with its state in the store

A cell is identified by its hash (tag ``strbench.cell_hash``) and may have several runs (a failed try, then a
finished one); its state is ``finished`` when any of its runs FINISHED, else the status of its latest run
(``failed``, ``running``, ``killed``), and ``not run`` when the store has none. A RUNNING run whose heartbeat
(tag ``strbench.heartbeat``) is older than the claims' grace period is flagged stale: its process is gone and
the next ``strbench run`` marks it FAILED. Everything here reads: no store, cache entry or folder is created.
MLflow is read through strbench.tracking only.
"""
from __future__ import annotations

import os
import textwrap
import time
from dataclasses import dataclass, field
from typing import Iterable, Optional

import pandas as pd

from strbench import contract
from strbench.contract import column, metric_column
from strbench.errors import StrbenchError
from strbench.selection import as_str as _str
from strbench.selection import column as _col

FINISHED, NOT_RUN = "finished", "not run"
STATES = ("finished", "failed", "running", "killed")  # MLflow statuses of cell runs, lower-cased
ERROR_WIDTH = 100  # characters of a failed run's error tag kept in the listing

OVERVIEW_COLUMNS = ["experiment", "parents", "profiles", "cells", "finished", "failed", "running", "stale", "killed",
                    "trainings", "studies", "trials", "last_activity", "tracking_uri", "artifact_location"]
CELL_COLUMNS = ["experiment", "index", "cell", "cell_hash", "label", "state", "stale", "last_heartbeat", "runs",
                "history", "error", "run_id", "parent_run_id", "started", "ended", "artifact_uri"]
PLAN_COLUMNS = ["models"]  # after CELL_COLUMNS and the metrics, for a YAML's cells


class UnknownExperiment(StrbenchError):
    """`strbench ls NAME` for a name the store does not hold."""


def key_metrics() -> list[str]:
    """The metrics a listing shows: the reports' main metrics (strbench.report.METRICS)."""
    from strbench.report import METRICS

    return [m.key for m in METRICS]


def _tracking():
    from strbench import tracking  # the only module that imports mlflow

    return tracking


def grace_s(exp=None) -> float:
    """The claims' grace period (an experiment's claims.grace_s, else STRBENCH_CLAIM_GRACE, default 60 s): a
    RUNNING run silent longer is stale."""
    from strbench.experiment.claims import settings

    return settings(None if exp is None else exp.claims.grace_s, None if exp is None else exp.claims.heartbeat_s)[0]


def _ms(x) -> Optional[float]:
    """A timestamp (pandas Timestamp, ms number or numeric text) in ms since the epoch; None when missing."""
    if x is None or (isinstance(x, float) and x != x) or x is pd.NaT:
        return None
    if isinstance(x, pd.Timestamp):
        return None if pd.isna(x) else x.value / 1e6
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _stamp(ms: Optional[float]) -> Optional[pd.Timestamp]:
    return None if ms is None else pd.Timestamp(round(ms), unit="ms", tz="UTC")


def shorten_error(text) -> str:
    """The first line of a run's error tag, shortened to ERROR_WIDTH characters."""
    first = next((ln.strip() for ln in _str(text).splitlines() if ln.strip()), "")
    return textwrap.shorten(first, ERROR_WIDTH, placeholder=" ...") if first else ""


# ------------------------------------------------------------------------------------------------ pure
def cell_states(cells: pd.DataFrame, *, now: Optional[float] = None, grace_s: float = 60.0) -> pd.DataFrame:
    """One row per cell hash of `cells` (cell runs in mlflow.search_runs layout, any status): its state, how
    many runs it has, their statuses latest first (`history`), the run that counts (the latest FINISHED one,
    else the latest), that run's label, error (first line, shortened), times, artifact URI and key metrics.
    `stale`: a RUNNING latest run whose heartbeat (`last_heartbeat`) is older than `grace_s` seconds (at time
    `now`, time.time())."""
    metrics = key_metrics()
    cols = [c for c in CELL_COLUMNS if c != "experiment"] + metrics
    hcol = column(contract.CELL_HASH_TAG)
    if cells.empty or hcol not in cells.columns:
        return pd.DataFrame(columns=cols)
    now_ms = (time.time() if now is None else now) * 1000
    df = cells[cells[hcol].notna()].copy()
    df["_start"] = [(_ms(x) or 0.0) for x in _col(df, "start_time")]
    df = df.sort_values("_start", ascending=False, kind="stable")
    out = []
    for h, runs in df.groupby(hcol, sort=False):
        statuses = [_str(s).lower() for s in runs["status"]]
        finished = runs[runs["status"] == "FINISHED"]
        run = (finished if len(finished) else runs).iloc[0]
        state = FINISHED if len(finished) else statuses[0]
        beat = _ms(run.get(column(contract.HEARTBEAT_TAG))) or _ms(run.get("start_time"))
        stale = state == "running" and beat is not None and (now_ms - beat) / 1000 > grace_s
        rec = {"index": _int(run.get(column(contract.CELL_INDEX_TAG))), "cell": str(h)[:12], "cell_hash": h,
               "label": _str(run.get(column(contract.RUN_NAME_TAG))) or _label_from_tags(run), "state": state,
               "stale": bool(stale), "last_heartbeat": _stamp(beat) if state == "running" else None,
               "runs": len(runs), "history": ",".join(statuses),
               "error": shorten_error(run.get(column(contract.ERROR_TAG))) if state != FINISHED else "",
               "run_id": run["run_id"], "parent_run_id": _str(run.get(column(contract.PARENT_RUN_TAG))),
               "started": _stamp(_ms(run.get("start_time"))), "ended": _stamp(_ms(run.get("end_time"))),
               "artifact_uri": _str(run.get("artifact_uri"))}
        for m in metrics:
            rec[m] = _num(run.get(metric_column(m))) if state == FINISHED else None
        out.append(rec)
    return pd.DataFrame(out, columns=cols)


def _int(x) -> Optional[int]:
    try:
        return int(float(x))
    except (TypeError, ValueError):
        return None


def _num(x) -> Optional[float]:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if v != v else v


def _label_from_tags(run: pd.Series) -> str:
    parts = [_str(run.get(column(t))) for t in (contract.CASE_TAG, contract.MASK_SET_TAG, contract.MASK_BIN_TAG)]
    seed = _str(run.get(column(contract.SEED_TAG)))
    return " ".join(p for p in parts if p) + (f" seed={seed}" if seed else "")


def summarise(runs: pd.DataFrame, *, now: Optional[float] = None, grace_s: float = 60.0) -> dict:
    """Counts of one experiment's strbench runs (every role, every status): parents, their profiles, distinct
    cells per state (`stale`: of the running ones, those without a heartbeat for longer than `grace_s`), finished
    model trainings (training runs), tuning studies and trials, and the last activity (latest start, end or heartbeat)."""
    role = _col(runs, column(contract.ROLE_TAG)).map(_str)
    states = cell_states(runs[role == contract.Kind.CELL], now=now, grace_s=grace_s)
    parents = runs[role == contract.Kind.EXPERIMENT]
    profiles = sorted({_str(p) for p in _col(parents, column(contract.PROFILE_TAG))} - {""})
    tuning = runs[role.isin([contract.Kind.STUDY, contract.Kind.TRIAL])]
    studies = {_str(s) for s in _col(tuning, column(contract.STUDY_TAG))} - {""}
    times = [t for c in ("start_time", "end_time") for t in (_ms(x) for x in _col(runs, c)) if t is not None]
    times += [t for t in (_ms(x) for x in _col(runs, column(contract.HEARTBEAT_TAG))) if t is not None]
    counts = states["state"].value_counts()
    return {"parents": len(parents), "profiles": ",".join(profiles), "cells": len(states),
            **{s: int(counts.get(s, 0)) for s in STATES}, "stale": int(states["stale"].sum()),
            "trainings": int(((role == contract.Kind.TRAINING) & (_col(runs, "status").map(_str) == "FINISHED")).sum()),
            "studies": len(studies),
            "trials": int((role == contract.Kind.TRIAL).sum()), "last_activity": _stamp(max(times)) if times else None}


# ------------------------------------------------------------------------------------------------ readers
@dataclass
class Overview:
    """`strbench ls`: the store and one row per MLflow experiment holding strbench runs (OVERVIEW_COLUMNS)."""

    uri: str
    exists: bool
    table: pd.DataFrame
    notes: list = field(default_factory=list)


def overview(uri: str, *, now: Optional[float] = None) -> Overview:
    tracking = _tracking()
    if not tracking.tracking_exists(uri):
        return Overview(uri, False, pd.DataFrame(columns=OVERVIEW_COLUMNS))
    exps = tracking.list_experiments(uri)
    runs = tracking.search_strbench_runs(uri, exps["experiment_id"])
    grace = grace_s()
    rows = []
    for x in exps.itertuples(index=False):
        mine = runs[runs["experiment_id"] == x.experiment_id] if not runs.empty else runs
        if mine.empty:
            continue
        rows.append({"experiment": x.name, **summarise(mine, now=now, grace_s=grace), "tracking_uri": uri,
                     "artifact_location": x.artifact_location})
    table = pd.DataFrame(rows, columns=OVERVIEW_COLUMNS)
    if len(table):
        table = table.sort_values("last_activity", ascending=False, na_position="last", kind="stable")
    return Overview(uri, True, table.reset_index(drop=True))


@dataclass
class CellListing:
    """The cells of one experiment: from the store (`planned` False) or planned by a YAML (every planned cell,
    `not run` where the store has none). `table`: CELL_COLUMNS + key metrics (+ `models` when planned)."""

    experiment: str  # the MLflow experiment name
    uri: str
    exists: bool  # the tracking store exists
    found: bool  # the store holds this experiment
    table: pd.DataFrame
    planned: bool = False
    source: str = ""  # the YAML
    profile: Optional[str] = None
    cache_dir: str = ""
    artifact_location: str = ""
    parents: pd.DataFrame = field(default_factory=pd.DataFrame)  # run_id, name, profile, status, last_invoked
    unplanned: int = 0  # cells in the store that this YAML does not plan (other settings, older versions)
    models: list = field(default_factory=list)  # (role, short hash, cache status, cells using it) when planned
    grace_s: float = 60.0  # the grace period `stale` was judged by

    def counts(self) -> dict[str, int]:
        c = self.table["state"].value_counts() if len(self.table) else {}
        return {s: int(c.get(s, 0)) for s in (*STATES, NOT_RUN)}


def _parents_frame(parents: pd.DataFrame) -> pd.DataFrame:
    cols = ["run_id", "name", "profile", "status", "last_invoked"]
    if parents.empty:
        return pd.DataFrame(columns=cols)
    out = pd.DataFrame({"run_id": parents["run_id"], "name": _col(parents, column(contract.RUN_NAME_TAG)).map(_str),
                        "profile": _col(parents, column(contract.PROFILE_TAG)).map(_str),
                        "status": parents["status"].map(lambda s: _str(s).lower()),
                        "last_invoked": [_stamp(_ms(v) or _ms(s)) for v, s in
                                         zip(_col(parents, column(contract.LAST_INVOKED_TAG)), parents["start_time"])]})
    return out.sort_values("last_invoked", ascending=False, kind="stable").reset_index(drop=True)


def _experiment_row(uri: str, name: str):
    exps = _tracking().list_experiments(uri)
    hit = exps[exps["name"] == name]
    return None if hit.empty else hit.iloc[0]


def known_experiments(uri: str) -> list[str]:
    """Names of the store's experiments that hold strbench runs (most recent first)."""
    return list(overview(uri).table["experiment"])


def store_cells(uri: str, experiment: str, *, now: Optional[float] = None) -> CellListing:
    """`strbench ls NAME`: every cell hash with runs in the experiment, the cells of the most recently invoked
    parent run first (each parent's in plan order). Raises
    UnknownExperiment (naming the known experiments) when the store does not hold `experiment`."""
    tracking = _tracking()
    if not tracking.tracking_exists(uri):
        return CellListing(experiment, uri, False, False, pd.DataFrame(columns=CELL_COLUMNS + key_metrics()))
    row = _experiment_row(uri, experiment)
    if row is None:
        known = known_experiments(uri)
        raise UnknownExperiment(f"no experiment {experiment!r} in the tracking store {uri}; "
                                + (f"it holds: {', '.join(known)}" if known else "it holds no strbench runs yet")
                                + " (a YAML path lists its planned cells: strbench ls experiments/X.yaml)")
    cells, parents = tracking.search_all_cell_runs(uri, experiment)
    grace = grace_s()
    table = cell_states(cells, now=now, grace_s=grace)
    parents = _parents_frame(parents)
    if len(table):  # the latest invocation's cells first, each invocation's in plan order
        rank = {p: i for i, p in enumerate(parents["run_id"])}
        table = table.assign(_p=table["parent_run_id"].map(lambda p: rank.get(p, len(rank))),
                             _i=table["index"].fillna(-1))
        table = table.sort_values(["_p", "_i"], kind="stable").drop(columns=["_p", "_i"])
    table.insert(0, "experiment", experiment)
    return CellListing(experiment, uri, True, True, table.reset_index(drop=True),
                       artifact_location=_str(row["artifact_location"]), parents=parents, grace_s=grace)


def planned_cells(exp, uri: Optional[str] = None, *, now: Optional[float] = None) -> CellListing:
    """`strbench ls X.yaml`: every cell the experiment plans (strbench.experiment.expand, in plan order) with its
    state in the store (`not run` when it has none), and the models each needs with their cache status
    (cached | partial | missing | pretrained). Reads the store only if it exists and the cache's file names."""
    from strbench.experiment import expand, model_status, unique_models

    tracking = _tracking()
    uri = uri or exp.tracking.uri
    name = exp.experiment_name
    planned = expand(exp)
    exists = tracking.tracking_exists(uri)
    row = _experiment_row(uri, name) if exists else None
    cells, parents = tracking.search_all_cell_runs(uri, name) if row is not None else (pd.DataFrame(), pd.DataFrame())
    grace = grace_s(exp)
    states = cell_states(cells, now=now, grace_s=grace).set_index("cell_hash", drop=False)
    status = {m.hash: model_status(exp.cache_dir, m) for m in unique_models(planned)}
    metrics = key_metrics()
    recs = []
    for c in planned:
        base = {"experiment": name, "index": c.index, "cell": c.short, "cell_hash": c.hash, "label": c.label}
        if c.hash in states.index:
            s = states.loc[c.hash]
            rec = {**{k: s[k] for k in CELL_COLUMNS if k in s.index}, **{m: s[m] for m in metrics}, **base}
        else:
            rec = {**base, "state": NOT_RUN, "stale": False, "last_heartbeat": None, "runs": 0, "history": "",
                   "error": "", "run_id": "", "parent_run_id": "", "started": None, "ended": None, "artifact_uri": "",
                   **{m: None for m in metrics}}
        rec["models"] = " ".join(f"{m.role}:{m.short}={status[m.hash]}" for m in c.models)  # role:hash=status
        recs.append(rec)
    users: dict[str, int] = {}
    for c in planned:
        for m in c.models:
            users[m.hash] = users.get(m.hash, 0) + 1
    models = [(m.role, m.short, status[m.hash], users[m.hash]) for m in unique_models(planned)]
    unplanned = len(set(states.index) - {c.hash for c in planned})
    return CellListing(name, uri, exists, row is not None,
                       pd.DataFrame(recs, columns=CELL_COLUMNS + metrics + PLAN_COLUMNS), planned=True,
                       source=exp.source, profile=exp.profile, cache_dir=str(exp.cache_dir),
                       artifact_location=_str(row["artifact_location"]) if row is not None else "",
                       parents=_parents_frame(parents), unplanned=unplanned, models=models, grace_s=grace)


def store_place(uri: str) -> str:
    """The URI, with the absolute file of a relative sqlite store: 'sqlite:///mlflow.db (/home/me/mlflow.db)'."""
    p = _tracking().sqlite_path(uri)
    if p is None or p.is_absolute() or str(p) in ("", ":memory:"):
        return uri
    return f"{uri} ({p.expanduser().resolve()})"


def tune_overview(path: str, tracking_uri: Optional[str] = None) -> Overview:
    """`strbench ls tune.yaml`: the overview row of the MLflow experiment its studies log to (trial counts)."""
    from strbench import config, tune

    spec = tune.load_spec(path)
    base = config.load_experiment(spec.base, profile=spec.profile)
    name = spec.mlflow.experiment or f"{base.name}-tune"
    uri = tracking_uri or spec.mlflow.tracking_uri or base.tracking.uri
    ov = overview(uri)
    ov.table = ov.table[ov.table["experiment"] == name].reset_index(drop=True)
    ov.notes = [f"{path} is a tune config: its studies log to MLflow experiment {name!r}"
                + ("" if len(ov.table) else " (no runs there yet)")
                + f"; the cells of its base: strbench ls {spec.base}" + (f" --profile {spec.profile}" if spec.profile
                                                                         else "")]
    return ov


def is_config_path(target: str) -> bool:
    """`strbench ls TARGET`: a YAML path (an existing file, or a name ending in .yaml/.yml) or an experiment name."""
    return target.lower().endswith((".yaml", ".yml")) or os.path.isfile(target)


def ls(target: Optional[str] = None, *, tracking_uri: Optional[str] = None, profile: Optional[str] = None,
       overrides: Iterable[str] = (), overlay: Optional[str] = None):
    """What `strbench ls` shows: an Overview without a target, else a CellListing (a YAML's planned cells, or an
    experiment's cells in the store). `tracking_uri` None: the YAML's tracking.uri, else contract.DEFAULT_URI."""
    from strbench import config

    if target is not None and is_config_path(target):
        data = config.read_yaml(target)
        if "base" in data and "study" in data and not (profile or list(overrides) or overlay):
            return tune_overview(target, tracking_uri)
        exp = config.load_experiment(target, overrides=list(overrides), overlay=overlay, profile=profile)
        return planned_cells(exp, tracking_uri or exp.tracking.uri)
    if profile or list(overrides) or overlay:
        raise StrbenchError("--profile, --set and --set-from apply to an experiment YAML: give its path "
                            "(strbench ls experiments/X.yaml --profile P)")
    uri = tracking_uri or contract.DEFAULT_URI
    return overview(uri) if target is None else store_cells(uri, target)


__all__ = ["CELL_COLUMNS", "CellListing", "NOT_RUN", "OVERVIEW_COLUMNS", "Overview", "STATES", "UnknownExperiment",
           "cell_states", "grace_s", "is_config_path", "key_metrics", "known_experiments", "ls", "overview",
           "planned_cells", "shorten_error", "store_cells", "store_place", "summarise", "tune_overview"]
