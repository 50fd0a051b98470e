"""Experiments: plan cells, cache data and models, evaluate cells, run and log them.

    from strbench import config, experiment
    exp = config.load_experiment("experiments/quickstart.yaml")
    cells = experiment.expand(exp)              # frozen, hashed, before anything runs
    summary = experiment.run_experiment(exp)    # what `strbench run` does
    metrics = experiment.evaluate(exp, split="val")   # what `strbench tune` does per trial

One concern per module: ``plan`` (cells and model specs, pure), ``checks`` (pre-flight of what a run
reads), ``cache`` (datasets, masks, the model cache), ``evaluate`` (one cell: sample, score, artifacts),
``run`` (the MLflow loop, dry-run status, tune's entry point), ``progress`` (events; the CLI prints them).
The runner knows no equation: it calls strbench.train, strbench.sample and strbench.metrics.
"""
from strbench.experiment.cache import Resources, model_status
from strbench.experiment.checks import check_resources, preflight
from strbench.experiment.evaluate import CellResult, evaluate_cell
from strbench.experiment.plan import (Cell, CellConfig, ModelSpec, TrainData, cell_config, expand, experiment_hash,
                                      freeze, model_groups, model_specs, shard_cells, thaw, unique_models)
from strbench.experiment.progress import SILENT, Bar, Progress
from strbench.experiment.run import (PlanStatus, RunSummary, Validation, cell_params, cell_tags, evaluate,
                                     plan_status, run_experiment, tracking_is_local, validate)

__all__ = ["Bar", "Cell", "CellConfig", "CellResult", "ModelSpec", "PlanStatus", "Progress", "Resources",
           "RunSummary", "SILENT", "TrainData", "Validation", "cell_config", "cell_params", "cell_tags",
           "check_resources", "evaluate", "evaluate_cell", "expand", "experiment_hash", "freeze", "model_groups",
           "model_specs", "model_status", "plan_status", "preflight", "run_experiment", "shard_cells", "thaw",
           "tracking_is_local", "unique_models", "validate"]
