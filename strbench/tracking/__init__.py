"""MLflow tracking: the only package of strbench that imports mlflow.

Layout (docs/INTERFACES.md, "MLflow layout"; every name from :mod:`strbench.contract`): one MLflow experiment
per strbench experiment name, tagged ``mlflow.experimentKind=custom_model_development`` so that MLflow's UI
opens it in its model-training view; one parent run (tag ``strbench.role=experiment``) per resolved
experiment, reused when the same experiment is run again; one nested run per cell (``strbench.role=cell``,
``mlflow.parentRunId``) carrying ``strbench.cell_hash``, and one per model training (``strbench.role=training``,
``strbench.model_hash``) that every cell using the model links (``strbench.training_run.<role>``); tuning
studies and their trials as ``strbench.role=study`` / ``trial`` runs (:mod:`.studies`). A cell counts as done
when a FINISHED cell run with its hash exists in the experiment. A RUNNING cell run is alive while its tag
``strbench.heartbeat`` (ms, refreshed by the holder's heartbeat thread, strbench.experiment.claims) is younger
than the grace period; an older one is stale and marked FAILED. A local store (sqlite, file) is created, and a
parent run looked up or created, under a file lock beside it (``<db>.lock``), so processes starting together
make one store and one parent run. Everything goes through ``MlflowClient`` with explicit run ids (no global
active run).

Modules: :mod:`.store` (URIs, locks, keys, opening an experiment), :mod:`.writer` (Tracker, MetricBuffer),
:mod:`.readers` (searches and artifacts for reports, rescore and ``strbench ls``), :mod:`.studies` (tuning).
"""
from __future__ import annotations

from strbench.tracking.readers import (EXPERIMENT_COLUMNS, download_artifacts, list_experiments, read_artifact_bytes,
                                       read_csv_artifact, search_all_cell_runs, search_cell_runs,
                                       search_experiment_runs, search_strbench_runs)
from strbench.tracking.store import (PARAM_MAX, STORE_LOCK_TIMEOUT_S, TAG_MAX, absolute_uri, clean_key, flatten,
                                     is_local, local_lock_path, open_experiment, role_filter, sqlite_path, tag_filter,
                                     tracking_exists, uri_or_default)
from strbench.tracking.patience import TrackingUnavailable
from strbench.tracking.studies import TRIAL_STATUS, StudyRuns, search_study_runs
from strbench.tracking.writer import MetricBuffer, Tracker

__all__ = ["EXPERIMENT_COLUMNS", "MetricBuffer", "PARAM_MAX", "STORE_LOCK_TIMEOUT_S", "StudyRuns", "TAG_MAX",
           "TRIAL_STATUS", "Tracker", "TrackingUnavailable", "absolute_uri", "clean_key", "download_artifacts", "flatten", "is_local",
           "list_experiments", "local_lock_path", "open_experiment", "read_artifact_bytes", "read_csv_artifact",
           "role_filter", "search_all_cell_runs", "search_cell_runs", "search_experiment_runs", "search_strbench_runs",
           "search_study_runs", "sqlite_path", "tag_filter", "tracking_exists", "uri_or_default"]
