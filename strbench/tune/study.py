"""The study loop: samplers and pruners, the objective (overlay -> experiment.evaluate on the validation
split), workers joining one study, MLflow runs of the study, export of the best overlay (the command: strbench.cli.tune)."""
from __future__ import annotations

import json
import math
import os
import random
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from strbench.contract import (BASE_TAG, DEFAULT_URI, ERROR_ATTR, METRICS_ATTR, OVERLAY_ATTR,  # noqa: F401
                               PARENT_RUN_ATTR, SPEC_ATTR, STORAGE_TAG, VAL_PREFIX)
from strbench.errors import ConfigError, StrbenchError, TrainingDiverged
from strbench.tune.spec import (OBJECTIVES, StudySpec, TuneSpec, probe_overlays,
                                sample_overlay, write_overlay)
from strbench.tune.storage import open_storage, quiet_optuna, redact, resolve_storage_url, storage_kind

# --------------------------------------------------------------------------------------------
# evaluation: overlay -> metrics (injectable; the default goes through config + runner)
# --------------------------------------------------------------------------------------------

Report = Callable[[int, dict], None]


@dataclass
class Evaluator:
    """`evaluate(overlay, report) -> metrics` (validation split); `check(overlay)` raises ConfigError.

    `report(step, metrics)` takes the trial's intermediate values (step: training steps done, increasing;
    the pruner may stop the trial there). The returned metrics may hold ``train_steps``, the training step of
    the final value (default: one past the last reported step, 0 without reports)."""

    evaluate: Callable[[dict, Report], dict]
    check: Optional[Callable[[dict], None]] = None
    describe: dict = field(default_factory=dict)  # base experiment name / tracking uri, for MLflow


def runner_evaluator(spec: TuneSpec) -> Evaluator:
    """The real objective: config.load_experiment(base + overlay) -> experiment.evaluate(split='val',
    stages=study.report_at). The full pre-flight (image files, mask folder, FID weights, pretrained
    weights) runs once per process for each set of those inputs: an overlay that changes none of them
    (schedules, sampler settings: the usual search) is checked with the cheap check_resources only; one
    that changes a dataset, mask or weights key gets its own full pre-flight, once."""
    from strbench import config, experiment

    base = Path(spec.base)
    if not base.is_file():
        raise ConfigError(f"tune config: base experiment {spec.base!r} not found (relative paths are "
                          f"read from the current directory {os.getcwd()})")

    def load(overlay: dict):
        return config.load_experiment(base, overlay=overlay, overlay_name="the tune space/set keys",
                                      profile=spec.profile)

    checked: set[str] = set()  # preflight_inputs() of the experiments whose full pre-flight passed

    def evaluate(overlay: dict, report: Report) -> dict:
        exp = load(overlay)
        cells = experiment.expand(exp)
        key = preflight_inputs(exp, cells)
        if key not in checked:
            experiment.preflight(exp, cells, tracking=False, splits=("val",))
            checked.add(key)
        return experiment.evaluate(exp, split="val", report=report, stages=spec.study.report_at, preflight=False)

    def check(overlay: dict) -> None:
        load(overlay)

    exp = config.load_experiment(base, profile=spec.profile)
    return Evaluator(evaluate, check, describe=_describe_experiment(exp))


def preflight_inputs(exp, cells) -> str:
    """What the pre-flight of a tuning evaluation reads, as one string: the cells' evaluation datasets and
    mask settings, the models' training datasets and pretrained weights, the FID settings. Two experiments
    with the same string need one pre-flight."""
    from strbench import experiment

    models = experiment.unique_models(cells)
    return json.dumps({
        "eval": sorted({c.config.dataset.model_dump_json() + c.config.mask.model_dump_json() for c in cells}),
        "train": sorted({m.data.dataset.model_dump_json() for m in models}),
        "pretrained": sorted(f"{m.role}:{m.source}:{m.sha256}" for m in models if m.pretrained),
        "fid": [exp.metrics.fid, exp.metrics.kid, exp.metrics.fid_weights]}, sort_keys=True)


def check_spec(spec: TuneSpec) -> int:
    """What `strbench validate TUNE.yaml` checks: the base experiment loads, and every space key applies to it
    (one probe overlay per key, validated as a trial's overlay would be). Returns the number of probes."""
    evaluator = runner_evaluator(spec)
    probes = probe_overlays(spec)
    for overlay in probes:
        evaluator.check(overlay)
    return len(probes)


def _describe_experiment(exp) -> dict:
    """MLflow defaults from the base experiment: its name and tracking URI."""
    return {"name": exp.experiment_name, "tracking_uri": exp.tracking.uri,
            "artifact_location": exp.tracking.artifact_location}


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
    optuna = quiet_optuna()
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
    if study.metric_names != spec.study.objectives:  # optuna-dashboard shows "psnr", not "Objective 0"
        study.set_metric_names(spec.study.objectives)  # (a study created before strbench set them)
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
        curve: list[tuple[int, dict]] = []  # (training step, metrics) of the intermediate values; the final
        # value goes to MLflow at record["step"] (StudyRuns.log_trial)

        def report(step: int, metrics: dict) -> None:
            curve.append((int(step), dict(metrics)))
            if single and metrics.get(objectives[0]) is not None:
                trial.report(float(metrics[objectives[0]]), int(step))
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at step {step}")

        record = {"number": trial.number, "overlay": overlay, "curve": curve, "metrics": {},
                  "values": None, "step": None, "state": "RUNNING", "error": None,
                  "retry_of": _retried_from(trial)}
        try:
            metrics = dict(evaluator.evaluate(overlay, report))
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
            steps = metrics.pop("train_steps", None)
            last = curve[-1][0] if curve else None
            step = int(steps) if steps is not None else (0 if last is None else last + 1)
            record.update(state="COMPLETE", values=values, metrics=_numeric(metrics), step=step)
            if single and (last is None or step > last):  # the curve ends at the final value (not pruned there)
                trial.report(values[0], step)
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
              say: Callable[[str], None] | None = None) -> StudySummary:
    """Run trials until the study has `study.n_trials` finished trials over all workers (or exactly
    `n_trials` trials in this process when given). Returns the study's counts and best trial. `say(line)`
    gets one line of progress per event (study opened, each finished trial, waiting for other workers);
    None: silent (the CLI passes a printer to stderr)."""
    if evaluator is None:
        evaluator = runner_evaluator(spec)
    if evaluator.check is not None:  # every key path and value type, before any training
        for overlay in probe_overlays(spec):
            evaluator.check(overlay)
    study, url = open_study(spec, storage=storage, worker=worker)
    say = say or (lambda line: None)
    say(f"study {spec.study.name!r} in {redact(url)}: objective {spec.study.objectives}, "
        f"sampler {spec.study.sampler}, pruner {spec.study.pruner_name}")

    study_log = _StudyLog(spec, study, url, evaluator) if track else None

    def on_trial(record: dict) -> None:
        if study_log is not None:
            study_log.trial(record)
        vals = "" if record["values"] is None else " " + " ".join(
            f"{o}={v:.4g}" for o, v in zip(spec.study.objectives, record["values"]))
        retry = "" if record["retry_of"] is None else f" (retry of trial {record['retry_of']})"
        at = f" at step {record['curve'][-1][0]}" if record["state"] == "PRUNED" and record["curve"] else ""
        say(f"trial {record['number']} {record['state']}{at}{vals}{retry}")

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


def _local_storage_file(url: str) -> Path | None:
    """The file of a journal or SQLite storage URL (None for a server or an in-memory database)."""
    if storage_kind(url) == "journal":
        return Path(url.removeprefix("journal:")).expanduser()
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url.split(":///", 1)[1].split("?", 1)[0]).expanduser()
    return None


def export_best(spec: TuneSpec, out: str | os.PathLike, *, storage: str | None = None,
                tune_path: str | None = None) -> tuple[Path, Any]:
    """Write the best trial's overlay (the `set` keys + its sampled keys) for `run --set-from`."""
    optuna = quiet_optuna()
    url = resolve_storage_url(storage or spec.study.storage)
    name = spec.study.name
    missing = _local_storage_file(url)
    if missing is not None and not missing.is_file():  # opening it would create an empty storage file
        raise StrbenchError(f"study {name!r} does not exist: no storage file {missing} ({redact(url)}); run "
                            "strbench tune first, or give its storage with --storage")
    st = open_storage(url, spec.study)
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
        self.uri = spec.mlflow.tracking_uri or d.get("tracking_uri") or DEFAULT_URI
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
            tags={STORAGE_TAG: redact(url), BASE_TAG: spec.base})
        if study.user_attrs.get(PARENT_RUN_ATTR) != self.parent:
            study.set_user_attr(PARENT_RUN_ATTR, self.parent)

    def trial(self, record: dict) -> None:
        """The trial's run: its intermediate curve and, when complete, its final metrics at its final step
        (a pruned trial has no final value; every metric is logged as val_<name>)."""
        values = {} if record["values"] is None else dict(zip(self.objectives, record["values"]))
        self.runs.log_trial(self.parent, record["number"], params=record["overlay"],
                            metrics={**record["metrics"], **values}, curve=record["curve"],
                            step=record["step"], state=record["state"], retry_of=record["retry_of"],
                            error=record["error"])

    def finish(self, s: "StudySummary", ok: bool = True) -> None:
        m = {"n_complete": s.n_complete, "n_pruned": s.n_pruned, "n_failed": s.n_failed}
        if s.best_values is not None:
            m.update({f"best_{VAL_PREFIX}{o}": v for o, v in zip(self.objectives, s.best_values)})
            m["best_trial"] = s.best_number
        self.runs.finish_parent(self.parent, m, status="FINISHED" if ok else "FAILED")
