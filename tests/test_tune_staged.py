"""strbench tune's learning curves: models trained in stages (train_model(stop_at), Resources.model(until),
experiment.evaluate(stages)), intermediate values indexed by training steps, the study's metric names, and
one pre-flight per study. Tiny nets, a few training steps, CPU."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

import optuna
from optuna.trial import TrialState

from strbench import config as C  # noqa: E402
from strbench import experiment, tune  # noqa: E402
from strbench.checkpoint import load_checkpoint  # noqa: E402
from strbench.errors import ConfigError  # noqa: E402
from strbench.train import TrainConfig, train_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from helpers import tiny  # noqa: E402
from helpers import TINY_TUNE_BASE, train_data  # noqa: E402
from tune_fake_worker import fake_evaluator  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: single-threaded tiny nets


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------
# train_model(stop_at) and Resources.model(until)
# ------------------------------------------------------------------------------------------------


def test_training_in_stages_ends_bit_identical_to_training_straight_through(tmp_path):
    """Stops between checkpoints and log points (with EMA, warmup, cosine lr): the final checkpoint (weights,
    EMA, optimiser, loss log) and the returned net equal those of one uninterrupted run; no loss-log point
    is added at a stop."""
    cfg = TrainConfig(steps=7, batch=2, lr=1e-3, warmup=2, ema=0.9, checkpoint_every=3, log_every=2, workers=0)
    imgs, masks = train_data()

    def losses(into):
        return lambda ev: into.append((ev["step"], ev["loss"])) if ev["event"] == "loss" and not ev.get("replayed") \
            else None

    straight, staged = [], []
    a = train_model("texture", cfg, imgs, masks, ckpt_path=tmp_path / "a.pt", device="cpu", callback=losses(straight))
    for k, at in ((1, 1), (4, 4), (5, 5), (2, 5)):  # 2: a checkpoint already past it is returned as it is
        net = train_model("texture", cfg, imgs, masks, ckpt_path=tmp_path / "b.pt", device="cpu", stop_at=k,
                          callback=losses(staged))
        state = load_checkpoint(tmp_path / "b.pt", cfg.hash("texture"))
        assert state["step"] == at and not net.training
        assert _same_weights(net.state_dict(), state["ema"])  # the net as trained so far (EMA weights)
    assert not _same_weights(load_checkpoint(tmp_path / "b.pt")["model"], load_checkpoint(tmp_path / "a.pt")["model"])
    b = train_model("texture", cfg, imgs, masks, ckpt_path=tmp_path / "b.pt", device="cpu", callback=losses(staged))
    assert staged == straight and [s for s, _ in straight] == [2, 4, 6, 7]
    sa, sb = load_checkpoint(tmp_path / "a.pt"), load_checkpoint(tmp_path / "b.pt")
    assert sa["step"] == sb["step"] == 7 and sa["log"] == sb["log"]
    for key in ("model", "ema"):
        assert _same_weights(sa[key], sb[key])
    assert _same_weights(sa["optimizer"]["state"][0], sb["optimizer"]["state"][0])
    assert _same_weights(a.state_dict(), b.state_dict())


def test_model_until_trains_part_way_unmemoised_then_completes_as_straight(tmp_path):
    d = tiny(tmp_path)
    d["methods"] = {"IR-SDE": {"method": "irsde"}}
    d["train"]["checkpoint_every"] = 100  # the stage checkpoints are the only ones before the end
    spec = experiment.expand(C.load_experiment(d))[0].model("irsde")
    res = experiment.Resources(tmp_path / "cache", "cpu")
    assert res.trained_steps(spec) is None
    half = res.model(spec, until=2)
    assert res.model_status(spec) == "partial" and res.trained_steps(spec) == 2  # no complete.json
    assert load_checkpoint(res.model_dir(spec) / "model.pt")["step"] == 2
    full = res.model(spec)  # not memoised at step 2: resumed and trained to the end
    assert full is not half and res.model_status(spec) == "cached" and res.trained_steps(spec) == 4
    assert res.model(spec, until=1) is full  # a complete model is returned as it is
    assert res.trained_steps(spec) == 4
    other = experiment.Resources(tmp_path / "straight", "cpu")
    assert _same_weights(other.model(spec).state_dict(), full.state_dict())


# ------------------------------------------------------------------------------------------------
# experiment.evaluate(stages)
# ------------------------------------------------------------------------------------------------


def test_evaluate_in_stages_reports_at_training_steps_and_ends_as_straight(tmp_path):
    d = tiny(tmp_path)
    d["methods"] = {"IR-SDE": {"method": "irsde"}}
    d["train"]["steps"] = 8
    exp = C.load_experiment(d)
    seen = []
    m = experiment.evaluate(exp, split="val", report=lambda s, met: seen.append((s, met)), stages=[0.2, 0.5, 0.8])
    assert [s for s, _ in seen] == [2, 4, 7]  # ceil(f x 8): training steps done at each stage
    assert m["train_steps"] == 8 and all(met["n_images"] == m["n_images"] for _, met in seen)  # all cells each time
    assert seen[0][1]["psnr"] != seen[1][1]["psnr"] != m["psnr"]  # the models as trained so far, not the final ones
    straight = C.load_experiment({**d, "cache_dir": str(tmp_path / "straight")})
    again = experiment.evaluate(straight, split="val", report=lambda s, met: seen.append((s, met)))
    assert again["psnr"] == m["psnr"] and again["ssim"] == m["ssim"]  # staged weights == straight weights
    assert len(seen) == 3  # no stages: no intermediate values
    seen.clear()
    cached = experiment.evaluate(exp, split="val", report=lambda s, met: seen.append((s, met)), stages=[0.5])
    assert seen == [] and cached["psnr"] == m["psnr"]  # every model complete: the final value only
    with pytest.raises(ConfigError, match="stages must be increasing fractions"):
        experiment.evaluate(exp, split="val", stages=[0.5, 1.0])


# ------------------------------------------------------------------------------------------------
# the study: metric names, intermediate values by training step, one pre-flight
# ------------------------------------------------------------------------------------------------


def _spec(tmp_path, **study) -> tune.TuneSpec:
    return tune.parse_spec({"base": "unused.yaml",
                            "study": {"name": "s", "storage": str(tmp_path / "j.log"), "sampler": "random",
                                      "pruner": "none", **study},
                            "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}}})


def test_study_metric_names_are_the_objectives_on_create_and_join(tmp_path):
    spec = _spec(tmp_path, objective=["psnr", "fid"])
    st = tune.open_storage(str(tmp_path / "j.log"), spec.study)
    optuna.create_study(study_name="s", storage=st, directions=["maximize", "minimize"])  # as before the fix
    assert optuna.load_study(study_name="s", storage=st).metric_names is None
    study, _ = tune.open_study(spec, worker=True)  # joining names an unnamed study
    assert study.metric_names == ["psnr", "fid"]
    study, _ = tune.open_study(spec, worker=True)  # and joining a named one changes nothing
    assert study.metric_names == ["psnr", "fid"]
    fresh, _ = tune.open_study(_spec(tmp_path / "b"))
    assert fresh.metric_names == ["psnr"]
    tune.run_study(_spec(tmp_path / "b"), evaluator=fake_evaluator(), n_trials=1, track=False)
    assert "value_psnr" in fresh.trials_dataframe().columns  # the name reaches optuna's tables (and its dashboard)


def test_report_at_must_be_increasing_fractions(tmp_path):
    with pytest.raises(ConfigError) as e:
        tune.parse_spec({"base": "b.yaml", "study": {"name": "s", "report_at": [0.5, 0.5]},
                         "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}}}, "t.yaml")
    msg = str(e.value)
    assert msg.startswith("t.yaml: study.report_at: must list increasing fractions") and "\n" not in msg
    assert _spec(tmp_path).study.report_at == [0.25, 0.5, 0.75]
    assert _spec(tmp_path, report_at=[]).study.report_at == []


def test_trial_intermediate_values_are_by_training_step_and_preflight_runs_once(tmp_path, monkeypatch):
    """The real runner on two mask bins: each trial's intermediate values are the whole objective (both bins)
    at training steps 1, 2, 3 and its final value at step 4; a second trial of the same model (cached) has the
    final value only; the full pre-flight ran once for the study."""
    base = tmp_path / "base.yaml"
    base.write_text(TINY_TUNE_BASE + f"cache_dir: {tmp_path / 'cache'}\n")
    spec = tune.parse_spec({"base": str(base),
                            "study": {"name": "staged", "sampler": "random", "pruner": "none", "n_trials": 2,
                                      "storage": str(tmp_path / "j.log")},
                            "space": {"sample.batch": {"type": "categorical", "choices": [2]}}})
    calls = []
    real = experiment.preflight
    monkeypatch.setattr(experiment, "preflight", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    evaluator = tune.runner_evaluator(spec)
    records = []

    def evaluate(overlay, report):
        out = evaluator.evaluate(overlay, report)
        records.append(out)
        return out

    tune.run_study(spec, evaluator=tune.Evaluator(evaluate, evaluator.check), track=False)
    study = optuna.load_study(study_name="staged", storage=tune.open_storage(str(tmp_path / "j.log"), spec.study))
    first, second = study.trials
    assert first.state == second.state == TrialState.COMPLETE
    assert sorted(first.intermediate_values) == [1, 2, 3, 4]  # ceil(f x 4) for f = 0.25, 0.5, 0.75; the final at 4
    assert first.intermediate_values[4] == first.value == records[0]["psnr"]
    assert len(set(first.intermediate_values.values())) == 4
    assert second.intermediate_values == {4: second.value} and second.value == first.value
    assert records[0]["n_cells"] == 2 and json.loads(json.dumps(first.user_attrs[tune.METRICS_ATTR]))
    assert "train_steps" not in first.user_attrs[tune.METRICS_ATTR]
    assert len(calls) == 1  # one full pre-flight for the study, not one per trial
    assert math.isfinite(first.value)


def test_preflight_inputs_change_only_with_what_the_preflight_reads(tmp_path):
    d = tiny(tmp_path)
    key = tune.study.preflight_inputs

    def k(*overrides):
        exp = C.load_experiment(d, overrides=list(overrides))
        return key(exp, experiment.expand(exp))

    assert k() == k("schedule.texture.kind=power", "methods.StrDiffusion.u_max=3", "train.steps=2")
    assert k() != k("metrics.fid=true")
    assert k() != k("masks.per_bin=3")
