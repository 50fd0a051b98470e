"""Running an experiment: every cell not yet FINISHED in MLflow is evaluated and logged, once.

    summary = run_experiment(exp)                 # what `strbench run` does
    status = plan_status(exp)                     # what `strbench run --dry-run` shows

(tune's per-trial evaluation, no MLflow: :mod:`strbench.experiment.objective`.)

Only :mod:`strbench.tracking` talks to MLflow. Everything is validated (schema, every cell's training and
sampling settings, dataset and mask folders, weights files) before tracking is opened, so bad input never
creates an MLflow run or database. Progress goes to a :class:`~strbench.experiment.progress.Progress`.
"""
from __future__ import annotations

import contextlib
import errno
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from strbench import config as cfgmod
from strbench import contract as K
from strbench import dist
from strbench.config import Experiment
from strbench.errors import ConfigError
from strbench.experiment import claims
from strbench.experiment.cache import Resources, model_status
from strbench.experiment.checks import expand, preflight
from strbench.experiment.evaluate import evaluate_cell
from strbench.experiment.plan import Cell, ModelSpec, experiment_hash, unique_models
from strbench.experiment.progress import SILENT, Progress

@dataclass
class RunSummary:
    experiment: str
    n_cells: int
    done_before: int = 0
    ran: int = 0
    failed: list = field(default_factory=list)  # (label, hash, error)
    not_tried: list = field(default_factory=list)  # labels left when the tracking store stopped answering
    stopped: str = ""  # why the sweep stopped before its last cell (the store did not answer), else ""
    elsewhere: list = field(default_factory=list)  # labels of cells claimed (or finished) by another process
    stale_marked: int = 0
    parent_run_id: Optional[str] = None
    seconds: float = 0.0
    results: dict = field(default_factory=dict)  # cell hash -> metrics

    @property
    def ok(self) -> bool:
        return not self.failed and not self.stopped


# ------------------------------------------------------------------------------------------------
# what MLflow records of a cell
# ------------------------------------------------------------------------------------------------


def cell_tags(cell: Cell, exp_hash: str) -> dict:
    c = cell.config
    tags = {K.METHOD_TAG: c.method.method, K.CASE_TAG: c.case, K.VARIANT_TAG: c.variant or "none",
            K.DATASET_TAG: c.dataset.type, K.MASK_SET_TAG: c.mask.set, K.MASK_BIN_TAG: c.mask.label,
            K.MASK_LO_TAG: c.mask.lo, K.MASK_HI_TAG: c.mask.hi, K.SEED_TAG: c.seed, K.SIZE_TAG: c.dataset.size,
            K.EXPERIMENT_HASH_TAG: exp_hash, K.SPLIT_TAG: "test", K.CELL_INDEX_TAG: cell.index}
    tags.update({K.tag(k): v for k, v in cell.method.tags(c.method).items()})
    for r, spec in c.models.items():
        tags[K.MODEL_PREFIX + r] = spec.hash
        if spec.pretrained:
            tags[K.PRETRAINED_PREFIX + r] = spec.source + (f" sha256:{spec.sha256}" if spec.sha256 else "")
    for k, v in cell.extra_axes.items():
        tags[K.AXIS_PREFIX + k] = v
    return tags


def cell_params(cell: Cell, exp: Experiment) -> dict:
    from strbench.tracking import flatten

    c = cell.config.model_dump()
    c["models"] = {r: m.hash for r, m in cell.config.models.items()}
    r = exp.resolved()
    c["train"] = r["train"]
    c["nets"] = r["nets"]
    c["structure"] = r["structure"]
    flat = flatten(c)
    # one name per value: no `None` params, no settings.* repeating method.* (the method's own settings)
    return {k: v for k, v in flat.items() if v != "None" and not (k.startswith("settings.") and
                                                                  flat.get("method." + k[len("settings."):]) == v)}


def rerunnable_yaml(exp: Experiment, cell: Optional[Cell] = None) -> str:
    """The experiment as it ran, as a YAML `strbench validate` / `strbench run` accept (logged as the parent's
    experiment.yaml and every cell's config.yaml); for a cell, the header says how to run that cell alone."""
    from strbench import __version__

    how = [f"strbench {__version__}: experiment {exp.name!r}" + (f", profile {exp.profile!r}" if exp.profile else "")
           + f" from {exp.source}, resolved (profile, --set and overlay applied; every default filled in)."]
    if cell is not None:
        how += [f"This run is its cell {cell.label!r} ({cell.hash[:12]}); the config expands to all "
                f"{exp.name} cells. This cell alone:", f"  strbench run config.yaml --cells {cell.hash[:12]}"]
    else:
        how += ["Again:  strbench run experiment.yaml"]
    return cfgmod.dump_yaml(exp.rerunnable(), header=how)


def code_tags() -> dict:
    """strbench's version and, when it runs from a git checkout, the commit (and whether it has local changes)."""
    import subprocess

    from strbench import __version__

    tags = {K.VERSION_TAG: __version__}
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", ""
    if commit:
        tags[K.GIT_COMMIT_TAG] = commit + ("+local-changes" if dirty else "")
    return tags


# ------------------------------------------------------------------------------------------------
# one cell, one MLflow run, one cleanup path
# ------------------------------------------------------------------------------------------------


def _run_cell(exp: Experiment, cell: Cell, tracker, parent: str, res: Resources, exp_hash: str,
              summary: RunSummary, progress: Progress, i: int, n: int) -> None:
    """Evaluate and log one cell. Its run ends FINISHED, FAILED (error tag + error.txt; the sweep goes on)
    or KILLED (Ctrl-C / SIGTERM: re-raised so the caller ends the parent). A store that stops answering for
    longer than tracking.outage_s fails the cell and raises TrackingUnavailable (the caller stops the sweep)."""
    from strbench import tracking
    from strbench.tracking import MetricBuffer

    t0 = time.time()
    run_id = tracker.start_cell(parent, cell.hash, run_name=cell.label,
                                tags={**cell_tags(cell, exp_hash), **code_tags()}, params=cell_params(cell, exp))
    bars: dict = {}
    trainings: dict[str, _Training] = {}  # role -> the training run this cell opened for it

    def on_train(spec: ModelSpec):  # called holding the model's train lock, before it trains
        progress.event("training", spec=spec, label=cell.label)
        bars[spec.role] = progress.bar("train", spec.train.steps, f"train {spec.role}")
        tid = tracker.start_training(parent, spec.hash, spec.role, params=training_params(spec),
                                     tags={K.EXPERIMENT_TAG: exp.name, K.TRAINED_FOR_TAG: cell.label,
                                           K.TRAINED_FOR_CELL_TAG: cell.hash, **code_tags()})
        trainings[spec.role] = _Training(tid, MetricBuffer(tracker, tid), spec.train.steps)
        tracker.set_tags(run_id, {K.TRAINED_PREFIX + spec.role: spec.hash})

    def train_cb(ev: dict):
        t = trainings.get(ev.get("role"))
        if t is None or t.ended:
            return
        if ev.get("event") == "resumed":  # its loss history so far is replayed into the training run next
            tracker.set_tags(t.run_id, {K.RESUMED_AT_TAG: int(ev["step"])})
        if ev.get("event") != "loss":
            return
        step = int(ev["step"])
        t.buf.add("train/loss", float(ev["loss"]), step)
        t.buf.add("train/lr", float(ev["lr"]), step)
        if step >= t.steps:  # the model's last log point: its training run is complete
            t.end(tracker, "FINISHED")
        if ev["role"] in bars:
            bars[ev["role"]].update_to(step)

    status, error = "FAILED", None
    try:
        with tempfile.TemporaryDirectory(prefix="strbench-cell-") as td:
            result = evaluate_cell(cell.config, res, split="test", progress=progress, workdir=Path(td),
                                   on_train=on_train, train_callback=train_cb)
            for b in bars.values():
                b.close()
            tracker.log_metrics(run_id, result.metrics)
            tracker.set_tags(run_id, result.tags)
            tracker.link_models(run_id, {r: (m.hash, m.source if m.pretrained else "")
                                         for r, m in cell.config.models.items()})
            for name, image in result.images.items():
                tracker.log_image(run_id, image, name)
            (Path(td) / "config.yaml").write_text(rerunnable_yaml(exp, cell))
            tracker.log_artifacts(run_id, td)
        status = "FINISHED"
        summary.ran += 1
        summary.results[cell.hash] = result.metrics
        progress.event("cell_finished", i=i, n=n, cell=cell, metrics=result.metrics, seconds=time.time() - t0)
    except KeyboardInterrupt:
        status, error = "KILLED", "interrupted (SIGINT/SIGTERM); run the same command again to resume"
        raise
    except Exception as e:  # a failing cell: FAILED with the error, the sweep goes on
        error = f"{type(e).__name__}: {e}"
        if isinstance(e, OSError) and e.filename is None and e.errno in _DISK_ERRNOS:  # e.g. MLflow's artifact copy
            error += f" (this run's artifacts go to {tracker.artifact_root(run_id)}; the model cache is {exp.cache_dir})"
        with contextlib.suppress(Exception):
            with tempfile.TemporaryDirectory(prefix="strbench-err-") as td:
                (Path(td) / "error.txt").write_text(traceback.format_exc())
                tracker.log_artifacts(run_id, td)
        summary.failed.append((cell.label, cell.hash, error))
        progress.event("cell_failed", i=i, n=n, cell=cell, error=error)
    finally:
        for b in bars.values():
            b.close()
        for t in trainings.values():  # a training that did not reach its last step ends with the cell
            with contextlib.suppress(Exception):
                t.end(tracker, status if status != "FINISHED" else "FAILED",
                      error or "the cell finished before this training logged its last step")
        if status == "KILLED":
            with contextlib.suppress(Exception):
                tracker.end(run_id, status, error=error)
        else:
            try:
                tracker.end(run_id, status, error=error)
            except tracking.TrackingUnavailable as e:  # its run stays RUNNING: a re-run fails it as an orphan and redoes it
                if status == "FINISHED":
                    summary.ran -= 1
                    summary.results.pop(cell.hash, None)
                    summary.failed.append((cell.label, cell.hash, str(e)))
                raise


_DISK_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, getattr(errno, "EDQUOT", errno.ENOSPC))


@dataclass
class _Training:
    """The MLflow run of one model's training, opened by the cell that trains it."""

    run_id: str
    buf: Any  # strbench.tracking.MetricBuffer
    steps: int
    ended: bool = False

    def end(self, tracker, status: str, error: Optional[str] = None) -> None:
        if self.ended:
            return
        self.ended = True
        self.buf.flush()
        tracker.end(self.run_id, status, error=None if status == "FINISHED" else error)


def training_params(spec: ModelSpec) -> dict:
    """A training run's params: the model's training config and data, flat, without None values."""
    from strbench.tracking import flatten

    flat = flatten({"role": spec.role, "model_hash": spec.hash, "train": spec.train.to_dict(),
                    "data": spec.data.identity(), "needs": list(spec.needs)})
    return {k: v for k, v in flat.items() if v not in ("None", "[]")}


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (scancel, preemption) and SIGUSR2 (submitit's warning before a Slurm job's time limit) behave
    like Ctrl-C: runs are marked KILLED and claims released, nothing is left half-written, so a re-run (or the
    requeued job) resumes at once. Only the first signal interrupts; a second one (Slurm signals every process
    of a job step, and submitit's job forwards the same stop) does not break the cleanup it started."""
    if not hasattr(signal, "SIGTERM") or sys.platform == "win32":
        yield
        return
    signals = [signal.SIGTERM] + ([signal.SIGUSR2] if hasattr(signal, "SIGUSR2") else [])
    fired: list = []

    def handler(signum, frame):
        if fired:
            return
        fired.append(signum)
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    try:
        old = {s: signal.signal(s, handler) for s in signals}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_experiment(exp: Experiment, *, progress: Progress = SILENT, cells: Optional[list[Cell]] = None,
                   only: Optional[Iterable[str]] = None) -> RunSummary:
    """Train what is missing (model cache), sample, score and log every cell not yet FINISHED in MLflow.
    Failed cells are collected (run FAILED, error tag), not raised; Ctrl-C/SIGTERM marks the current
    runs KILLED and re-raises KeyboardInterrupt."""
    t_start = time.time()
    all_cells = cells if cells is not None else expand(exp)
    preflight(exp, all_cells)
    mine = select_cells(exp, all_cells, only)
    summary = RunSummary(experiment=exp.experiment_name, n_cells=len(mine))
    ranks, _ = dist.init_distributed(exp.device)  # under torchrun: join the process group (NCCL on CUDA, gloo on CPU)
    if not ranks.is_main:  # ranks > 0 train and sample their share of each cell rank 0 runs; no MLflow
        return _follow_rank0(exp, mine, summary)

    from strbench import tracking

    exp_hash = experiment_hash(all_cells)
    board = claims.Board.for_store(exp.cache_dir, exp.tracking.uri, exp.experiment_name,
                                   grace=exp.claims.grace_s, heartbeat=exp.claims.heartbeat_s)
    tracker = tracking.Tracker(exp.tracking.uri, exp.experiment_name, exp.tracking.artifact_location,
                               lock_path=board.store_lock, outage_s=exp.tracking.outage_s,
                               say=lambda m: progress.event("tracking", message=m), board=board.id,
                               take_over=exp.claims.take_over)
    done = tracker.finished_cells()
    todo = [c for c in mine if c.hash not in done]  # each is claimed just before it runs (claims.claim_cell)
    summary.done_before = sum(c.hash in done for c in mine)
    where = {"experiment": exp.name, "n_cells": len(mine), "tracking_uri": exp.tracking.uri,
             "mlflow_experiment": exp.experiment_name}
    if not todo:
        _tell_ranks(ranks, None)
        if all(c.hash in done for c in all_cells):  # a process killed after the experiment's last cell
            tracker.close_parent(exp_hash)  # left its parent run open
        progress.event("nothing_to_do", **where)
        summary.seconds = time.time() - t_start
        return summary

    with tempfile.TemporaryDirectory(prefix="strbench-exp-") as td:
        resolved = exp.rerunnable()
        (Path(td) / "experiment.yaml").write_text(rerunnable_yaml(exp))
        parent = tracker.parent_run(
            exp_hash, run_name=f"{exp.name}" + (f" [{exp.profile}]" if exp.profile else "") + f" {exp_hash[:8]}",
            tags={K.EXPERIMENT_TAG: exp.name, K.PROFILE_TAG: exp.profile or "",
                  K.CONFIG_PATH_TAG: exp.source, K.N_CELLS_TAG: len(all_cells), **code_tags()},
            params={k: v for k, v in tracking.flatten(resolved).items() if v != "None"}, cell_hashes=[c.hash for c in all_cells],
            artifacts=td)
    summary.parent_run_id = parent
    res = Resources(exp.cache_dir, exp.device, progress=progress)
    progress.event("started", **where, done_before=summary.done_before, todo=len(todo), device=str(res.device))
    sweep = progress.bar("cells", len(todo), "cells")
    seen: list = []
    try:
        with _sigterm_as_interrupt():
            order = claims.free_first(todo, board, busy=res.model_busy, ready=res.model_ready)
            for i, cell in enumerate(order, 1):
                seen.append(cell.hash)
                turn = claims.claim_cell(board, tracker, cell.hash, cell.label, since=t_start)
                summary.stale_marked += turn.stale
                if turn.claim is None:  # another live process has it, or finished it meanwhile
                    summary.elsewhere.append(cell.label)
                    progress.event("skipped", label=cell.label, why=turn.why)
                else:
                    with turn.claim:  # heartbeat while the cell runs; released after it (also on Ctrl-C)
                        _tell_ranks(ranks, cell.hash)
                        _run_cell(exp, cell, turn.claim.watch(tracker), parent, res, exp_hash, summary, progress,
                                  i, len(todo))
                sweep.update_to(i)
            _tell_ranks(ranks, None)
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            tracker.end(parent, "KILLED")
        raise
    except tracking.TrackingUnavailable as e:  # past tracking.outage_s: stop here, nothing else can be logged
        _tell_ranks(ranks, None)
        summary.stopped = str(e)
        summary.not_tried = [c.label for c in todo if c.hash not in seen[:-1] and
                             c.label not in {f[0] for f in summary.failed}]
    finally:
        sweep.close()
    if not summary.stopped:
        with contextlib.suppress(Exception):  # a summary that cannot be written never fails the experiment
            log_parent_summary(tracker, parent, all_cells)
        with contextlib.suppress(tracking.TrackingUnavailable):
            end_parent(tracker, parent, all_cells, board, summary)
    summary.seconds = time.time() - t_start
    return summary


def end_parent(tracker, parent: str, cells: list[Cell], board, summary: RunSummary) -> str:
    """End the experiment's parent run with a status computed from its cells in the store, whichever process
    or job ran them: FINISHED (and any earlier error tag removed) when every cell has a FINISHED run; left
    RUNNING while another process holds a live claim on one of them (the last to end closes it); else FAILED
    naming the cells that failed here, or FINISHED when the rest were simply not asked for (--cells).
    Returns the status written ("RUNNING" when left so)."""
    hashes = [c.hash for c in cells]
    done = tracker.finished_cells()
    if all(h in done for h in hashes):
        tracker.end(parent, "FINISHED")
        tracker.clear_error(parent)
        return "FINISHED"
    if board.live_cells() & set(hashes):
        return "RUNNING"
    if summary.failed:
        names = ", ".join(label for label, _, _ in summary.failed[:5]) + (" ..." if len(summary.failed) > 5 else "")
        tracker.end(parent, "FAILED", error=f"{len(summary.failed)} cell(s) failed: {names}")
        return "FAILED"
    tracker.end(parent, "FINISHED")
    tracker.clear_error(parent)
    return "FINISHED"


SUMMARY_METRICS = ("psnr", "ssim", "lpips", "fid", "kid", "nfe_per_image", "sec_per_image")


def parent_summary(cells: list[Cell], runs: Mapping[str, Any]) -> tuple[Any, dict]:
    """(one row per cell: its label, axes, state, run id and metrics; the parent's metrics
    ``<metric>/<case>/<bin>[/...]`` per cell and ``<metric>/<case>`` averaged over the case's cells when all of
    them finished, plus ``cells_finished`` / ``cells_total``). `runs`: cell hash -> its FINISHED run's
    (run id, metrics)."""
    import pandas as pd

    seeds = {c.axes.get("seed") for c in cells}
    sets = {c.axes.get("mask_set") for c in cells}
    rows, metrics, per_case = [], {}, {}
    for c in cells:
        a = c.axes
        found = runs.get(c.hash)
        m = found[1] if found else {}
        rows.append({"cell": c.label, "case": a["case"], "method": a["method"], "mask_set": a.get("mask_set"),
                     "mask_bin": a["mask_bin"], "variant": a.get("variant") or "", "seed": a["seed"],
                     **{f"axis.{k}": v for k, v in c.extra_axes.items()}, "cell_hash": c.short,
                     "state": "FINISHED" if found else "not finished", "run_id": found[0] if found else "",
                     **{k: m.get(k) for k in SUMMARY_METRICS}})
        parts = [a["case"]] + ([a["mask_set"]] if len(sets) > 1 else []) + [str(a["mask_bin"]).replace("%", "")]
        parts += ([f"seed{a['seed']}"] if len(seeds) > 1 else []) + [f"{k}={v}" for k, v in c.extra_axes.items()]
        per_case.setdefault(a["case"], []).append(m)
        for k in SUMMARY_METRICS:
            if k in m:
                metrics["/".join([k] + parts)] = float(m[k])
    for case, ms in per_case.items():
        for k in SUMMARY_METRICS:
            vals = [m[k] for m in ms if k in m]
            if vals and len(vals) == len(ms):
                metrics[f"{k}/{case}"] = float(sum(vals) / len(vals))
    metrics["cells_finished"] = float(sum(r["state"] == "FINISHED" for r in rows))
    metrics["cells_total"] = float(len(rows))
    return pd.DataFrame(rows), metrics


def log_parent_summary(tracker, parent: str, cells: list[Cell]) -> dict:
    """The parent run's summary of its cells (whichever invocation or process ran them): metrics (see
    parent_summary) and the artifact summary.csv. Returns the metrics."""
    runs = {r.data.tags[K.CELL_HASH_TAG]: (r.info.run_id, r.data.metrics) for r in tracker.cell_runs_of(c.hash for c in cells)}
    df, metrics = parent_summary(cells, runs)
    tracker.log_metrics(parent, metrics)
    with tempfile.TemporaryDirectory(prefix="strbench-summary-") as td:
        df.to_csv(Path(td) / "summary.csv", index=False)
        tracker.log_artifact(parent, Path(td) / "summary.csv")
    return metrics


def select_cells(exp: Experiment, all_cells: list[Cell], only: Optional[Iterable[str]] = None) -> list[Cell]:
    """This process's cells: the experiment's, or those whose hash starts with one of `only` (--cells; a
    launcher job's cells). Which process runs which of them is settled cell by cell by the claims; the parent
    run stays the whole experiment's."""
    if only is None:
        return list(all_cells)
    want = set(only)
    unknown = sorted(h for h in want if not any(c.hash.startswith(h) for c in all_cells))
    if unknown:
        raise ConfigError(f"{exp.source}: --cells: no cell {unknown[0]} in this experiment (see --dry-run)")
    return [c for c in all_cells if any(c.hash.startswith(h) for h in want)]


def _tell_ranks(ranks: dist.DistInfo, cell_hash: Optional[str]) -> Optional[str]:
    """Under torchrun: rank 0's next cell (None: no more), given to every rank just before it runs; rank 0
    decides cell by cell (claims), so all ranks run the same cells in the same order."""
    return cell_hash if ranks.world_size == 1 else dist.broadcast(cell_hash)


def _follow_rank0(exp: Experiment, mine: list, summary: RunSummary) -> RunSummary:
    """A rank > 0 under torchrun: for each cell rank 0 runs, train (DDP) and sample this rank's batches; rank 0
    gathers the outputs and alone scores FID, writes artifacts and talks to MLflow."""
    ranks = dist.current_dist()
    by_hash = {c.hash: c for c in mine}
    res = Resources(exp.cache_dir, exp.device)
    while (h := _tell_ranks(ranks, None)) is not None:
        try:
            evaluate_cell(by_hash[h].config, res, split="test")
            summary.ran += 1
        except Exception as e:  # rank 0 records the failure; keep in step with it
            summary.failed.append((by_hash[h].label, h, f"{type(e).__name__}: {e}"))
    return summary


# ------------------------------------------------------------------------------------------------
# what a run would do (dry run) and validation
# ------------------------------------------------------------------------------------------------


@dataclass
class PlanStatus:
    """What `strbench run --dry-run` shows: cells, the models they need, what is cached / finished."""

    exp: Experiment
    all_cells: list
    mine: list
    models: list  # (ModelSpec, cache status cached|partial|missing, number of cells using it)
    done: set  # hashes of cells FINISHED in tracking
    note: str = ""  # why tracking could not be read, if so
    checks: list = field(default_factory=list)  # the pre-flight's passed checks (strbench.preflight.Checked)


def plan_status(exp: Experiment, cells: Optional[list[Cell]] = None,
                only: Optional[Iterable[str]] = None) -> PlanStatus:
    """Reads tracking only if it exists, and the cache's file names; creates nothing. `only`: as --cells."""
    from strbench import tracking

    all_cells = cells if cells is not None else expand(exp)
    checks = preflight(exp, all_cells)
    mine = select_cells(exp, all_cells, only)
    done: set = set()
    note = ""
    if tracking.tracking_exists(exp.tracking.uri):
        try:
            df = tracking.search_cell_runs(exp.tracking.uri, exp.experiment_name, latest_only=False)
            done = set() if df.empty else set(df[K.column(K.CELL_HASH_TAG)])
        except Exception as e:  # e.g. an unreachable server: say so, list everything as pending
            note = f" (tracking not readable: {type(e).__name__})"
    else:
        note = " (no tracking database yet)"
    users: dict[str, int] = {}
    for c in mine:
        for m in c.models:
            users[m.hash] = users.get(m.hash, 0) + 1
    models = [(m, model_status(exp.cache_dir, m), users.get(m.hash, 0)) for m in unique_models(mine)]
    return PlanStatus(exp=exp, all_cells=all_cells, mine=mine, models=models, done=done, note=note, checks=checks)


@dataclass
class Validation:
    exp: Experiment
    cells: list
    models: list
    other_profiles: list
    checks: list = field(default_factory=list)  # the pre-flight's passed checks (strbench.preflight.Checked)


def validate(config: str | Mapping, overrides: Iterable[str] = (), overlay: Optional[str] = None,
             profile: Optional[str] = None) -> Validation:
    """`strbench validate X.yaml`: schema, every profile, sweep, training/sampling settings, folders."""
    exp = cfgmod.load_experiment(config, overrides=list(overrides), overlay=overlay, profile=profile,
                                 check_profiles=True)
    cells = expand(exp)
    checks = preflight(exp, cells)
    return Validation(exp=exp, cells=cells, models=unique_models(cells),
                      other_profiles=[p for p in exp.profiles if p != exp.profile], checks=checks)


def tracking_is_local(uri: str) -> bool:
    """A local store (sqlite, file), browsed with `mlflow ui --backend-store-uri` (strbench.tracking.is_local)."""
    from strbench.tracking import is_local

    return is_local(uri)
