"""Tuning studies (strbench tune) in MLflow.

One parent run per Optuna study (tag strbench.role=study, strbench.study=<name>), found again by tag
when workers join; one nested run per finished trial (tag strbench.role=trial, mlflow.parentRunId),
with the trial's overlay as params and its validation metrics, each under val_<metric> (val_psnr,
val_ssim, ...; never the test split's names): the intermediate values at their training steps and the
final value at the last step, so that the chart of val_psnr is the trial's learning curve. Its state is
the tag strbench.trial_state (COMPLETE | PRUNED | FAIL); MLflow has no "pruned" status and pruning is a
normal end, so a pruned trial's run is FINISHED too, named "trial N (pruned at step S)", with its
intermediate curve and no final value. A failed trial's run is FAILED. The parent's summary metrics:
n_complete, n_pruned, n_failed, best_trial, best_val_<objective>. The study's experiment is opened by
:class:`~strbench.tracking.writer.Tracker`, so it carries the model-training view's experiment tag too.
"""
from __future__ import annotations

import os
import socket
from typing import Any, Iterable, Mapping, Optional

from strbench.contract import (HOST_TAG, PARENT_RUN_TAG, PID_TAG, RETRY_OF_TAG, ROLE_TAG, STUDY_TAG,
                               TRIAL_NUMBER_TAG, TRIAL_STATE_TAG, VAL_PREFIX, Kind)
from strbench.tracking.readers import _find_experiment
from strbench.tracking.store import TAG_MAX, clean_key, role_filter, tag_filter
from strbench.tracking.writer import Tracker

TRIAL_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}  # Optuna state -> run status


class StudyRuns:
    """MLflow runs of one tuning study (parent + nested trial runs) in one experiment."""

    def __init__(self, uri: str, experiment: str, study_name: str, artifact_location: str | None = None):
        self.tracker = Tracker(uri, experiment, artifact_location)
        self.study = study_name

    def parent(self, run_id: Optional[str] = None, *, params: Mapping[str, Any],
               tags: Mapping[str, Any]) -> str:
        """The study's parent run: `run_id` if it still exists, else the oldest run tagged with this
        study, else a new one. Marked RUNNING while a process works on the study."""
        client = self.tracker.client
        if run_id:
            try:
                run = client.get_run(run_id)
                if run.info.lifecycle_stage != "deleted" and run.info.experiment_id == self.tracker.experiment_id:
                    client.update_run(run_id, status="RUNNING")
                    return run_id
            except Exception:  # removed from this backend: find or create another
                pass
        with self.tracker.store_lock():  # workers starting together share one parent
            runs = self.tracker._search(f"{role_filter(Kind.STUDY)} and {tag_filter(STUDY_TAG, self.study)}")
            if runs:
                run_id = sorted(runs, key=lambda r: r.info.start_time or 0)[0].info.run_id
                client.update_run(run_id, status="RUNNING")
                return run_id
            all_tags = {ROLE_TAG: Kind.STUDY, STUDY_TAG: self.study, HOST_TAG: socket.gethostname(),
                        PID_TAG: str(os.getpid()), **{clean_key(k): str(v)[:TAG_MAX] for k, v in tags.items()}}
            run = client.create_run(self.tracker.experiment_id, tags=all_tags, run_name=f"study {self.study}")
            self.tracker.log_params(run.info.run_id, params)
            return run.info.run_id

    def log_trial(self, parent_id: str, number: int, *, params: Mapping[str, Any], metrics: Mapping[str, float],
                  curve: Iterable[tuple[int, Mapping[str, Any]]] = (), state: str = "COMPLETE",
                  step: Optional[int] = None, retry_of: Optional[int] = None, error: Optional[str] = None) -> str:
        """One nested, already terminated run for a finished trial: `curve` ((training step, metrics) of
        its intermediate values) and, unless it was pruned, its final `metrics` at `step` (default: the
        curve's last step), each metric as val_<name>."""
        if state not in TRIAL_STATUS:
            raise ValueError(f"unknown trial state {state!r}; expected one of {sorted(TRIAL_STATUS)}")
        curve = [(int(s), m) for s, m in curve]
        last = max((s for s, _ in curve), default=None)
        tags = {ROLE_TAG: Kind.TRIAL, STUDY_TAG: self.study, TRIAL_NUMBER_TAG: str(number), TRIAL_STATE_TAG: state,
                PARENT_RUN_TAG: parent_id, HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
        if retry_of is not None:
            tags[RETRY_OF_TAG] = str(retry_of)
        name = f"trial {number}" + (f" (pruned at step {last})" if state == "PRUNED" and last is not None else "")
        run = self.tracker.client.create_run(self.tracker.experiment_id, tags=tags, run_name=name)
        run_id = run.info.run_id
        self.tracker.log_params(run_id, params)
        points: dict[tuple[str, int], float] = {}  # (key, step) -> value: one point per metric and step
        final = [] if state == "PRUNED" else [((last or 0) if step is None else int(step), metrics)]
        for s, m in curve + final:
            for k, v in m.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    points[(VAL_PREFIX + k, s)] = float(v)
        if points:
            self.tracker.log_metric_rows(run_id, [(k, v, s) for (k, s), v in points.items()])
        self.tracker.end(run_id, TRIAL_STATUS[state], error=error)
        return run_id

    def finish_parent(self, parent_id: str, metrics: Mapping[str, float], status: str = "FINISHED") -> None:
        if metrics:
            self.tracker.log_metrics(parent_id, metrics)
        self.tracker.end(parent_id, status)


def search_study_runs(tracking_uri: Optional[str], experiment: str, study_name: str):
    """(parent runs, trial runs) of a study as mlflow.search_runs DataFrames (empty when none)."""
    import pandas as pd

    found = _find_experiment(tracking_uri, experiment)
    if found is None:
        return pd.DataFrame(), pd.DataFrame()
    mlflow, exp = found

    def runs(role: str):
        return mlflow.search_runs(experiment_ids=[exp.experiment_id], output_format="pandas",
                                  filter_string=f"{role_filter(role)} and {tag_filter(STUDY_TAG, study_name)}")

    return runs(Kind.STUDY), runs(Kind.TRIAL)

