"""Experiments: plan cells, cache data and models, evaluate cells, run and log them.

    from strbench import config, experiment
    exp = config.load_experiment("experiments/quickstart.yaml")
    cells = experiment.expand(exp)              # frozen, hashed, before anything runs (checks.expand: plan.expand
                                                # with this launch's world size and weights files' sha256)
    summary = experiment.run_experiment(exp)    # what `strbench run` does
    metrics = experiment.evaluate(exp, split="val")   # what `strbench tune` does per trial

One concern per module: ``plan`` (cells and model specs, pure), ``checks`` (pre-flight of what a run
reads; plans with what planning needs from this machine), ``cache`` (datasets, masks, the model cache,
trained under a file lock), ``evaluate`` (one cell, in steps: inputs, sample, score, artifacts), ``claims``
(which process runs which cell: claim files with a heartbeat), ``run`` (the MLflow loop, dry-run status),
``objective`` (tune's entry point, no MLflow), ``launch`` (Slurm jobs), ``progress`` (events; the CLI
prints them). Ranks and the world size: :mod:`strbench.dist`.
The runner knows no equation: it calls strbench.train, strbench.sample and strbench.metrics.
"""
from strbench.experiment.cache import Resources, model_status
from strbench.experiment.checks import check_resources, expand, preflight
from strbench.experiment.evaluate import CellResult, evaluate_cell
from strbench.experiment.objective import evaluate
from strbench.experiment.plan import (Cell, CellConfig, ModelSpec, TrainData, cell_config, experiment_hash, freeze,
                                      model_groups, model_specs, thaw, unique_models)
from strbench.experiment.progress import SILENT, Bar, Progress
from strbench.experiment.run import (PlanStatus, RunSummary, Validation, cell_params, cell_tags, plan_status,
                                     run_experiment, tracking_is_local, validate)

__all__ = ["Bar", "Cell", "CellConfig", "CellResult", "ModelSpec", "PlanStatus", "Progress", "Resources",
           "RunSummary", "SILENT", "TrainData", "Validation", "cell_config", "cell_params", "cell_tags",
           "check_resources", "evaluate", "evaluate_cell", "expand", "experiment_hash", "freeze", "model_groups",
           "model_specs", "model_status", "plan_status", "preflight", "run_experiment", "thaw",
           "tracking_is_local", "unique_models", "validate"]
