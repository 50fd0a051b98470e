"""Tune's entry point: train (through the cache) and evaluate an experiment, a cell or a cell config on the
validation (or test) images; no MLflow.

    metrics = evaluate(exp, split="val")                        # what `strbench tune` does per trial
    metrics = evaluate(exp, split="val", stages=(0.25, 0.5), report=lambda step, m: ...)   # a learning curve
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional, Sequence

from strbench import config as cfgmod
from strbench.config import Experiment
from strbench.errors import ConfigError
from strbench.experiment.cache import Resources
from strbench.experiment.evaluate import evaluate_cell
from strbench.experiment.plan import Cell, CellConfig, ModelSpec
from strbench.experiment.progress import SILENT, Progress

ReportFn = Callable[[int, dict], None]  # evaluate(report=...): (training step, metrics) at each stage




def evaluate(target: Any, *, split: str = "val", report: Optional[ReportFn] = None, stages: Sequence[float] = (),
             preflight: bool = True, progress: Progress = SILENT) -> dict:
    """Train (through the cache) and evaluate on the `split` images and masks ('val' for tuning: the
    validation photos and masks drawn with masks.val_seed); no MLflow. Accepts an Experiment (every
    cell of a learned method, floors left out: they are references, not part of an objective; metrics
    are averaged over cells), a Cell, a CellConfig, a cell config mapping (a cell run's cell.yaml) or an
    experiment mapping (a cell run's config.yaml). The result has ``train_steps``: the largest ``train.steps`` of the models (the
    training step of the final value; 0 when every model is pretrained).

    stages: fractions of training in (0, 1), increasing (strbench tune's ``study.report_at``), for a
    learning curve. At each fraction f every model not yet complete in the cache is trained to
    ceil(f x its train.steps) steps (a resumable checkpoint, Resources.model(until=...)), all cells are
    evaluated with the models as trained so far, and ``report(step, metrics)`` receives the averaged
    metrics (as returned at the end), ``step`` = the largest training-step count among the models trained
    in stages. Models those models need are trained fully first; models complete already are used as
    they are. A stage that would not get past the previous one, or would finish training, is skipped;
    when every model is complete (e.g. cached by an earlier trial) `report` is never called. Then the
    models are trained fully (resuming, so the final weights are those of training straight through) and
    the final metrics are returned, not reported. Without stages `report` is never called.

    preflight: False checks only the settings and folders (check_resources), not the contents (images, mask
    folder, FID weights file); strbench tune runs the full pre-flight once per study, not per trial."""
    from strbench import methods
    from strbench.experiment import checks

    if split not in ("val", "test"):
        raise ConfigError(f"evaluate: split must be 'val' or 'test', got {split!r}")
    stages = [float(f) for f in stages]
    if any(not 0 < f < 1 for f in stages) or any(b <= a for a, b in zip(stages, stages[1:])):
        raise ConfigError(f"evaluate: stages must be increasing fractions of training in (0, 1), got {stages}")
    cache_dir, device = ".strbench", "auto"
    if isinstance(target, Experiment):
        cells = checks.expand(target)
        if preflight:
            checks.preflight(target, cells, tracking=False, splits=(split,))
        else:
            checks.check_resources(target, cells)
        configs = [c.config for c in cells if not methods.get(c.config.method.method).floor]
        cache_dir, device = target.cache_dir, target.device
    elif isinstance(target, Cell):
        configs = [target.config]
    elif isinstance(target, CellConfig):
        configs = [target]
    elif isinstance(target, Mapping) and "models" in target and "method" in target:
        configs = [CellConfig.from_mapping(target)]
    elif isinstance(target, Mapping):
        return evaluate(cfgmod.load_experiment(target), split=split, report=report, stages=stages,
                        preflight=preflight, progress=progress)
    else:
        raise TypeError("evaluate() takes an Experiment, a Cell, a CellConfig or a cell config mapping")
    res = Resources(cache_dir, device, progress=progress)
    models = {m.hash: m for cc in configs for m in cc.models.values()}
    trained = [m for m in models.values() if not m.pretrained]
    final_step = max((m.train.steps for m in trained), default=0)
    needed = {h for m in models.values() for h in m.needs}  # trained fully before the models that need them
    staged = [m for m in trained if m.hash not in needed and res.model_status(m) != "cached"]
    last = 0
    for frac in stages if staged else ():
        until = {m.hash: min(math.ceil(frac * m.train.steps), m.train.steps) for m in staged}
        if all(k >= models[h].train.steps for h, k in until.items()):
            break  # this stage would finish training: the final evaluation does it
        view = _TrainedUntil(res, until)
        for m in staged:
            view.model(m, models)
        step = max(res.trained_steps(m) or 0 for m in staged)
        if step <= last or step >= final_step:  # trained further elsewhere meanwhile: nothing new to show
            continue
        metrics = _evaluate_configs(configs, view, split, progress)
        last = step
        if report is not None:
            report(step, metrics)
    out = _evaluate_configs(configs, res, split, progress)
    out["train_steps"] = float(final_step)
    return out


class _TrainedUntil:
    """The Resources that evaluate_cell sees at one stage of evaluate(): model() trains each model of
    `until` (hash -> step) only to that step; everything else is the underlying Resources'."""

    def __init__(self, res: Resources, until: Mapping[str, int]):
        self._res, self._until, self._nets = res, dict(until), {}

    def model(self, spec: ModelSpec, others: Mapping[str, ModelSpec] = {}, **kw):
        if spec.hash not in self._nets:
            self._nets[spec.hash] = self._res.model(spec, others, until=self._until.get(spec.hash), **kw)
        return self._nets[spec.hash]

    def models(self, specs: Mapping[str, ModelSpec], **kw):
        """Resources.models, each model through this stage's model()."""
        return Resources.models(self, specs, **kw)

    def __getattr__(self, name: str):
        return getattr(self._res, name)


def _evaluate_configs(configs: list, res, split: str, progress: Progress) -> dict:
    """Every cell config evaluated on `split`; metrics averaged over the cells (n_images summed)."""
    per_cell = [evaluate_cell(cc, res, split=split, progress=progress).metrics for cc in configs]
    out: dict[str, Any] = {}
    for k in sorted({k for m in per_cell for k in m}):
        vals = [m[k] for m in per_cell if k in m]
        if k == "n_images":
            out[k] = float(sum(vals))
        elif len(vals) == len(per_cell):
            out[k] = float(sum(vals) / len(vals))
    out["n_cells"] = len(per_cell)
    if len(per_cell) > 1:
        out["cells"] = per_cell
    return out
