"""The tracking contract: every name strbench writes to MLflow (and to Optuna's study storage) and reads back,
declared once: tag names, run kinds, the columns of ``mlflow.search_runs``, artifact paths, the default store.

The writer (:mod:`strbench.tracking`, the experiment runner, tuning) and every reader (reports, selection,
``strbench ls``, rescore) use these names; none spells a tag as a string of its own (tests/test_contract.py).
Pure: no mlflow import.

Layout: one MLflow experiment per strbench experiment name, tagged ``mlflow.experimentKind`` =
``custom_model_development`` (MLflow's own mark of a model-training experiment, as opposed to a GenAI one;
MLflow 3.17's UI shows the view named in its URL, see UI_VIEW_QUERY); runs carry ``strbench.role`` = one of
:class:`Kind`: the experiment's parent run, one nested run per cell, one per model training, one per tuning
study and one per trial.
"""
from __future__ import annotations

DEFAULT_URI = "sqlite:///mlflow.db"  # the store when the YAML's `tracking.uri` is not set
DEFAULT_ARTIFACTS = "./mlartifacts"  # artifact root of new experiments in a local store

PREFIX = "strbench."
COLUMN = "tags."  # prefix of tag columns in mlflow.search_runs(output_format="pandas")
METRIC_COLUMN = "metrics."
PARAM_COLUMN = "params."

# MLflow's own names that strbench sets
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # a model-training experiment, not a GenAI one
# MLflow 3.17's UI picks its view from the URL's workflowType (else its GenAI | Model training switch, kept in
# the browser, GenAI by default), not from the experiment tag (checked in a browser): links strbench writes
# carry this query so they open in the model-training view
UI_VIEW_QUERY = "workflowType=machine_learning"
PARENT_RUN_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
NOTE_TAG = "mlflow.note.content"  # a run's description (Markdown in the UI)


class Kind:
    """Values of ROLE_TAG: what a run is."""

    EXPERIMENT = "experiment"  # parent of one resolved experiment's cells
    CELL = "cell"
    TRAINING = "training"
    STUDY = "study"
    TRIAL = "trial"
    ALL = (EXPERIMENT, CELL, TRAINING, STUDY, TRIAL)


def tag(name: str) -> str:
    """The full tag name of strbench's `name` (``strbench.<name>``)."""
    return PREFIX + name


def column(tag_name: str) -> str:
    """The pandas column of a tag in ``mlflow.search_runs`` output."""
    return COLUMN + tag_name


def metric_column(metric: str) -> str:
    """The pandas column of a metric in ``mlflow.search_runs`` output (``metrics.psnr``)."""
    return METRIC_COLUMN + metric


def param_column(param: str) -> str:
    """The pandas column of a parameter in ``mlflow.search_runs`` output."""
    return PARAM_COLUMN + param


# every run
ROLE_TAG = tag("role")
HOST_TAG, PID_TAG, ERROR_TAG = tag("host"), tag("pid"), tag("error")  # host, pid: for people only
HEARTBEAT_TAG, CLAIM_TAG = tag("heartbeat"), tag("claim")  # ms of the last beat; the claim's token
# the claims folder (strbench.experiment.claims.Board.id) a cell run was claimed through; on the MLflow experiment:
# the one claims folder every process writing to it must share
BOARD_TAG = tag("claims_board")
VERSION_TAG, GIT_COMMIT_TAG = tag("version"), tag("git_commit")

# parent (experiment) runs
EXPERIMENT_TAG = tag("experiment")
EXPERIMENT_HASH_TAG = tag("experiment_hash")
CELLS_TAG = tag("cells")  # the parent's cells: their hashes' first SHORT_HASH characters, comma-joined
SHORT_HASH = 12
LAST_INVOKED_TAG = tag("last_invoked")
PROFILE_TAG = tag("profile")
CONFIG_PATH_TAG = tag("config_path")
N_CELLS_TAG = tag("n_cells")

# cell runs
CELL_HASH_TAG = tag("cell_hash")
CELL_INDEX_TAG = tag("cell_index")
CASE_TAG, METHOD_TAG, VARIANT_TAG = tag("case"), tag("method"), tag("variant")
DATASET_TAG, SIZE_TAG, SPLIT_TAG, SEED_TAG = tag("dataset"), tag("size"), tag("split"), tag("seed")
MASK_SET_TAG, MASK_BIN_TAG = tag("mask_set"), tag("mask_bin")
MASK_LO_TAG, MASK_HI_TAG = tag("mask_lo"), tag("mask_hi")
METRIC_PROTOCOL_TAG = tag("metric_protocol")
MODEL_PREFIX = tag("model.")  # strbench.model.<role> = model hash
PRETRAINED_PREFIX = tag("pretrained.")  # strbench.pretrained.<role> = source (+ sha256)
AXIS_PREFIX = tag("axis.")  # strbench.axis.<key> = swept value
TRAINING_RUN_PREFIX = tag("training_run.")  # strbench.training_run.<role> = run id of the model's training
# a method's own tags (Method.tags: strbench.<key>); StrDiffusion's:
ABLATION_TAG, MODE_TAG = tag("ablation"), tag("mode")

# training runs
MODEL_HASH_TAG, MODEL_ROLE_TAG = tag("model_hash"), tag("model_role")
TRAINED_FOR_TAG, TRAINED_FOR_CELL_TAG = tag("trained_for"), tag("trained_for_cell")
TRAINED_PREFIX = tag("trained.")  # on the cell that trained it: strbench.trained.<role> = model hash
RESUMED_AT_TAG = tag("resumed_at")

# studies and trials (strbench tune)
STUDY_TAG, TRIAL_NUMBER_TAG, TRIAL_STATE_TAG = tag("study"), tag("trial_number"), tag("trial_state")
RETRY_OF_TAG = tag("retry_of")
STORAGE_TAG, BASE_TAG = tag("storage"), tag("base")  # on a study's run: its Optuna storage (redacted), base YAML
VAL_PREFIX = "val_"  # trial metrics are measured on the validation split: val_psnr, ..., best_val_<objective>

# Optuna's study storage (strbench tune): the user attrs strbench writes and reads back
SPEC_ATTR = tag("spec")  # study: what defines the search (workers must agree)
PARENT_RUN_ATTR = tag("mlflow_parent_run")  # study: the MLflow parent run id
OVERLAY_ATTR = tag("overlay")  # trial: the exact overlay the trial ran
METRICS_ATTR = tag("metrics")  # trial: all validation metrics of the trial
ERROR_ATTR = tag("error")  # trial: why an evaluated trial failed (e.g. training diverged)
HEARTBEAT_ATTR = "strbench:heartbeat"  # trial system attr of a journal storage: unix time of the last beat


class Artifact:
    """Artifact paths of runs that one module writes and another reads back."""

    CELL_CONFIG = "cell.yaml"  # a cell's resolved settings (what evaluate and rescore read)
    RERUNNABLE = "config.yaml"  # a cell's re-runnable experiment (before cell.yaml: the cell config itself)
    EXPERIMENT_CONFIG = "experiment.yaml"  # on the parent run
    SUMMARY = "summary.csv"  # on the parent run
    PER_IMAGE = "per_image.csv"
    OUTPUTS = "outputs"  # every composited output, lossless PNG
    PROTOCOL = "protocol.json"
    SAMPLES, SAMPLES_TILES = "samples.png", "samples_tiles.png"
    TRAJECTORY, TRAJECTORY_LEVELS, KL_TRAJECTORY = "trajectory.png", "trajectory_levels.json", "kl_trajectory.csv"
    ERROR = "error.txt"  # a failed cell's traceback


def ui_link(experiment_id: str, run_id: str = "") -> str:
    """The MLflow UI's address of an experiment (its runs) or of one run, relative to the UI's root, opening in
    the model-training view: ``#/experiments/<id>/runs[/<run id>]?workflowType=machine_learning``."""
    return f"#/experiments/{experiment_id}/runs" + (f"/{run_id}" if run_id else "") + "?" + UI_VIEW_QUERY


def missing_tag(metric: str) -> str:
    """Why a metric of a cell could not be computed (e.g. ``strbench.fid_missing``)."""
    return tag(f"{metric}_missing")


def protocol_tag(metric: str) -> str:
    """The recorded protocol of one metric (e.g. ``strbench.fid_protocol``)."""
    return tag(f"{metric}_protocol")
