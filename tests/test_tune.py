"""strbench tune: schema, search space, storages with several workers, heartbeats/retries, export.

Storage tests use a cheap deterministic objective (tests/tune_fake_worker.py) in subprocesses; the
last test runs the real runner on the tiny CPU profile with MLflow.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import optuna
from optuna.trial import TrialState

from strbench import tune
from strbench.errors import ConfigError, StrbenchError

from tune_fake_worker import fake_evaluator, fake_metrics
from tune_helpers import GRACE, HB, fake_spec, load, run_two_workers, spawn, write_spec

# ------------------------------------------------------------------------------------------------
# schema and search space
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("patch, needle", [
    ({"bogus": 1}, "bogus: unknown key"),
    ({"study": {"name": "s", "samplr": "tpe"}}, "study.samplr: unknown key"),
    ({"study": {"name": "s", "sampler": "grid"}}, "study.sampler"),
    ({"study": {"name": "s", "objective": "lpips"}}, "unknown objective 'lpips'"),
    ({"study": {"name": "s", "objective": ["psnr", "fid"], "pruner": "median"}}, "multi-objective"),
    ({"study": {"name": "s", "heartbeat_interval": 10, "grace_period": 5}}, "grace_period"),
    ({"space": {"a.b": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}}, "['a.b']: log=true needs low > 0"),
    ({"space": {"a.b": {"type": "float", "low": 1.0, "high": 1.0}}}, "low (1.0) must be < high"),
    ({"space": {"a.b": {"type": "normal", "low": 1.0}}}, "['a.b']"),
    ({"space": {"a.b": {"type": "int", "low": 1, "high": 4, "hgih": 5}}}, "['a.b'].hgih: unknown key"),
    ({"space": {"p": {"type": "float", "low": 1, "high": 2, "when": {"k": "x"}},
                "k": {"type": "categorical", "choices": ["x"]}}}, "must be an earlier key"),
    ({"space": {"k": {"type": "categorical", "choices": ["x"]},
                "p": {"type": "float", "low": 1, "high": 2, "when": {"k": "y"}}}}, "not among the choices"),
    ({"set": {"x": 1}}, "both in set and in space"),
])
def test_spec_rejects_bad_keys_with_one_line_naming_the_key(patch, needle):
    data = fake_spec("j.log")
    data.update(patch)
    with pytest.raises(ConfigError) as e:
        tune.parse_spec(data, "t.yaml")
    msg = str(e.value)
    assert needle in msg and msg.startswith("t.yaml: ") and "\n" not in msg, msg


def test_shipped_tune_config_validates():
    spec = tune.load_spec(Path(__file__).parents[1] / "experiments" / "tune_schedules.yaml")
    assert spec.study.directions == ["maximize"] and spec.study.sampler == "tpe"
    assert "schedule.texture.kind" in spec.space and spec.study.pruner_name == "median"


def test_shipped_tune_config_fits_its_base_experiment(tmp_path, monkeypatch):
    """Every space key (with its condition made true) and the `set` keys load on the base experiment."""
    root = Path(__file__).parents[1]
    spec = tune.load_spec(root / "experiments" / "tune_schedules.yaml")
    assert (root / spec.base).is_file(), f"base experiment {spec.base} of the shipped tune config is missing"
    from strbench import config

    monkeypatch.chdir(root)  # the tune config's paths are relative to the repository root
    ev = tune.runner_evaluator(spec)
    for overlay in tune.probe_overlays(spec):
        ev.check(overlay)
    only_set = tune.write_overlay(spec.set, tmp_path / "set.yaml")
    exp = config.load_experiment(spec.base, profile=spec.profile, overlay=only_set)
    assert list(exp.methods) == ["StrDiffusion"]  # `set` removed the other cases


def test_conditional_key_sampled_only_when_its_condition_holds():
    spec = tune.parse_spec({
        "base": "b.yaml", "study": {"name": "s"}, "set": {"train.steps": 2},
        "space": {"schedule.texture.kind": {"type": "categorical", "choices": ["cosine", "power"]},
                  "schedule.texture.params.power": {"type": "float", "low": 0.5, "high": 4, "log": True,
                                                    "when": {"schedule.texture.kind": "power"}},
                  "schedule.texture.T": {"type": "int", "low": 4, "high": 8}}})
    cos = tune.sample_overlay(optuna.trial.FixedTrial({"schedule.texture.kind": "cosine", "schedule.texture.T": 5}), spec)
    assert cos == {"train.steps": 2, "schedule.texture.kind": "cosine", "schedule.texture.T": 5}
    pw = tune.sample_overlay(optuna.trial.FixedTrial({"schedule.texture.kind": "power", "schedule.texture.T": 6,
                                                      "schedule.texture.params.power": 2.5}), spec)
    assert pw["schedule.texture.params.power"] == 2.5
    # probes: one per key, with the key's condition made true (validates every path up front)
    probes = tune.probe_overlays(spec)
    assert probes[1] == {"train.steps": 2, "schedule.texture.kind": "power", "schedule.texture.params.power": 0.5}


@pytest.mark.parametrize("sampler, pruner", [("tpe", "median"), ("random", "hyperband"), ("nsga2", "none"),
                                             ("cmaes", "median")])
def test_sampler_and_pruner_registries(tmp_path, sampler, pruner):
    spec = tune.parse_spec(fake_spec(str(tmp_path / "j.log"), sampler=sampler, pruner=pruner))
    try:
        import cmaes  # noqa: F401
    except ImportError:
        if sampler == "cmaes":
            with pytest.raises(ConfigError, match="cmaes needs the `cmaes` package"):
                tune.open_study(spec)
            return
    study, _ = tune.open_study(spec)
    names = {"tpe": "TPESampler", "random": "RandomSampler", "nsga2": "NSGAIISampler", "cmaes": "CmaEsSampler",
             "median": "MedianPruner", "hyperband": "HyperbandPruner", "none": "NopPruner"}
    assert (type(study.sampler).__name__, type(study.pruner).__name__) == (names[sampler], names[pruner])
    s = tune.run_study(spec, evaluator=fake_evaluator(), n_trials=2, track=False)
    assert s.n_complete + s.n_pruned == 2


def test_storage_urls():
    assert tune.storage_kind("sqlite:///a.db") == "rdb"
    assert tune.storage_kind("postgresql+psycopg2://u:pw@h/db") == "rdb"
    assert tune.storage_kind("runs/journal.log") == "journal"
    assert tune.resolve_storage_url(None) == "journal:" + str(Path(tune.DEFAULT_STORAGE).resolve())
    assert "pw" not in tune.redact("postgresql://u:pw@h:5432/db")
    with pytest.raises(ConfigError, match="unknown scheme 'redis'"):
        tune.storage_kind("redis://localhost")


# ------------------------------------------------------------------------------------------------
# one process: create/join rules, budget, pruning, export
# ------------------------------------------------------------------------------------------------


def test_worker_needs_an_existing_study_and_the_same_search(tmp_path):
    url = str(tmp_path / "j.log")
    spec = tune.parse_spec(fake_spec(url))
    with pytest.raises(StrbenchError, match=r"does not exist in storage journal:.*j\.log"):
        tune.run_study(spec, evaluator=fake_evaluator(), worker=True, track=False)
    tune.open_study(spec)  # the first process creates it
    other = fake_spec(url)
    other["space"]["x"]["high"] = 2.0
    with pytest.raises(ConfigError, match="different tune config .*space"):
        tune.open_study(tune.parse_spec(other), worker=True)
    flipped = fake_spec(url, objective="fid")
    with pytest.raises(ConfigError, match="directions"):
        tune.open_study(tune.parse_spec(flipped), worker=True)


def test_tune_command_says_progress_on_stderr_unless_quiet(tmp_path, monkeypatch, capsys):
    """The library reports through `say`; `strbench tune` prints those lines on stderr, none with -q."""
    from strbench import cli

    real = tune.run_study
    monkeypatch.setattr(tune, "run_study", lambda spec, **kw: real(spec, evaluator=fake_evaluator(), track=False, **kw))
    cfg = write_spec(tmp_path, fake_spec(str(tmp_path / "j.log"), n_trials=2))
    assert cli.main(["tune", str(cfg), "--n-trials", "1", "-q"]) == 0
    assert capsys.readouterr() == ("", "")
    assert cli.main(["tune", str(cfg), "--n-trials", "1"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines()[0].startswith("study 'fake' in journal:") and err.splitlines()[1].startswith("trial 1 ")
    assert out.startswith("study 'fake' (journal:") and "2 complete" in out


def test_budget_then_export_reproduces_the_best_value(tmp_path):
    url = str(tmp_path / "j.log")
    spec = tune.parse_spec(fake_spec(url, n_trials=5))
    said = []
    s = tune.run_study(spec, evaluator=fake_evaluator(), track=False, say=said.append)
    assert (s.ran, s.n_complete, s.n_running) == (5, 5, 0)
    assert said[0].startswith("study 'fake' in journal:") and [x.split()[:3:2] for x in said[1:]] == [
        ["trial", "COMPLETE"]] * 5
    again = tune.run_study(spec, evaluator=fake_evaluator(), track=False)
    assert again.ran == 0  # the budget is met: a second process has nothing to do
    out, best = tune.export_best(spec, tmp_path / "best.yaml")
    text = out.read_text()
    assert f"trial {best.number}" in text and "study 'fake'" in text and "--set-from" in text
    overlay = tune.read_overlay(out)
    assert set(overlay) == {"fixed", "kind", "x"} and overlay["fixed"] == 3
    study = load(spec, url)
    assert best.value == max(t.value for t in study.trials)
    assert fake_metrics(overlay)["psnr"] == best.value  # re-evaluating the overlay gives the same value


def test_multi_objective_export_is_best_first_objective_on_the_pareto_front(tmp_path):
    url = str(tmp_path / "j.log")
    spec = tune.parse_spec(fake_spec(url, n_trials=6, objective=["psnr", "fid"], sampler="nsga2"))
    tune.run_study(spec, evaluator=fake_evaluator(), track=False)
    study = load(spec, url)
    _, best = tune.export_best(spec, tmp_path / "best.yaml")
    front = study.best_trials
    assert best.number in {t.number for t in front}
    assert best.values[0] == max(t.values[0] for t in front)


def test_median_pruner_stops_trials_below_the_median(tmp_path):
    url = str(tmp_path / "j.log")
    spec = tune.parse_spec(fake_spec(url, n_trials=12, pruner="median", n_startup_trials=2))
    tune.run_study(spec, evaluator=fake_evaluator(), track=False)
    study = load(spec, url)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert pruned and len(pruned) + len(complete) == 12
    for t in pruned:  # below the median (numpy percentile 50) of the earlier complete trials' curves
        step = max(t.intermediate_values)
        earlier = [u.intermediate_values[step] for u in complete if u.number < t.number]
        assert max(t.intermediate_values.values()) < float(np.percentile(earlier, 50))
    for t in complete[2:]:  # and no complete trial was ever below it
        for step, v in t.intermediate_values.items():
            earlier = [u.intermediate_values[step] for u in complete if u.number < t.number]
            best = max(w for k, w in t.intermediate_values.items() if k <= step)
            assert best >= float(np.percentile(earlier, 50)) - 1e-12


def test_diverged_trial_fails_and_the_study_goes_on(tmp_path):
    from strbench.errors import TrainingDiverged

    url = str(tmp_path / "j.log")
    spec = tune.parse_spec(fake_spec(url, n_trials=3))

    def evaluate(overlay, report):
        if overlay["x"] < 0.3:
            raise TrainingDiverged("loss is nan at step 3")
        return fake_metrics(overlay)

    s = tune.run_study(spec, evaluator=tune.Evaluator(evaluate), n_trials=8, track=False)
    study = load(spec, url)
    states = [t.state for t in study.trials]
    assert s.ran == 8 and states.count(TrialState.FAIL) == sum(t.params["x"] < 0.3 for t in study.trials)
    assert all("TrainingDiverged" in t.user_attrs[tune.ERROR_ATTR] for t in study.trials if t.state == TrialState.FAIL)
    # budget mode: an evaluated failure counts toward study.n_trials (no endless replacement)
    spec2 = tune.parse_spec(fake_spec(url, name="budget", n_trials=5))
    tune.run_study(spec2, evaluator=tune.Evaluator(evaluate), track=False)
    assert len(load(spec2, url).trials) == 5


# ------------------------------------------------------------------------------------------------
# several processes on one study
# ------------------------------------------------------------------------------------------------


def test_two_workers_share_one_journal_study(tmp_path):
    """(SQLite: two processes share a study in the kill test below; PostgreSQL: test_tune_postgres.py.)"""
    run_two_workers(tmp_path, str(tmp_path / "j.log"))


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_killed_worker_trial_turns_stale_and_is_retried(tmp_path, kind):
    url = str(tmp_path / "j.log") if kind == "journal" else f"sqlite:///{tmp_path / 'optuna.db'}"
    cfg = write_spec(tmp_path, fake_spec(url, n_trials=2))
    spec = tune.load_spec(cfg)
    tune.open_study(spec)
    hung = spawn(cfg, url, "--worker", "--hang")
    try:
        deadline = time.time() + 30
        while True:  # wait until the hung worker holds a RUNNING trial
            running = load(spec, url).get_trials(states=(TrialState.RUNNING,))
            if running or time.time() > deadline:
                break
            time.sleep(0.2)
        assert running, "the hanging worker never started its trial"
        time.sleep(HB + 0.5)  # it has beaten at least once
    finally:
        hung.send_signal(signal.SIGKILL)
        hung.wait(10)
    dead = running[0]
    study = load(spec, url)  # still readable; the dead trial is RUNNING until someone notices
    assert study.trials[dead.number].state == TrialState.RUNNING
    # a new worker runs a fresh trial, then (budget 2 = 1 complete + 1 running) waits until the dead
    # trial misses its heartbeats for GRACE s, fails it, and runs the enqueued retry
    s = tune.run_study(spec, evaluator=fake_evaluator(), worker=True, track=False)
    study = load(spec, url)
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states and s.n_running == 0
    assert study.trials[dead.number].state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    failed = study.trials[dead.number]
    assert retries[0].params == failed.params and set(failed.params) == {"kind", "x"}  # same params again
    assert retries[0].user_attrs[tune.OVERLAY_ATTR] == failed.user_attrs[tune.OVERLAY_ATTR]
    assert states.count(TrialState.COMPLETE) == 2  # the budget counts finished trials only


# ------------------------------------------------------------------------------------------------
# the real runner, tiny CPU profile, MLflow parent + nested runs
# ------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_journal_heartbeat_keeps_a_live_trial_and_flags_a_silent_one(tmp_path, monkeypatch):
    spec = tune.parse_spec(fake_spec(str(tmp_path / "j.log")))
    study, _ = tune.open_study(spec)
    st = study._storage
    assert optuna.storages._heartbeat.is_heartbeat_enabled(st)
    trial = study.ask()
    clock = {"now": time.time()}

    class FakeTime:
        @staticmethod
        def time():
            return clock["now"]

    monkeypatch.setattr(tune.storage, "time", FakeTime)
    assert st._get_stale_trial_ids(study._study_id) == []  # just started
    clock["now"] += GRACE + 1
    assert st._get_stale_trial_ids(study._study_id) == [trial._trial_id]  # silent for > grace
    st.record_heartbeat(trial._trial_id)  # a beat (at the fake now) makes it live again
    clock["now"] += GRACE - 0.5
    assert st._get_stale_trial_ids(study._study_id) == []
    study.tell(trial, 1.0)
    clock["now"] += 100
    assert st._get_stale_trial_ids(study._study_id) == []  # finished trials are never stale


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    """One MLflow backend for the module's MLflow tests (creating its schema takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def test_mlflow_parent_run_per_study_and_one_nested_run_per_trial(tmp_path, mlflow_uri):
    from strbench import tracking
    from strbench.errors import TrainingDiverged

    uri = mlflow_uri
    data = fake_spec(str(tmp_path / "j.log"), pruner="median", n_startup_trials=1)
    data["mlflow"] = {"tracking_uri": uri, "experiment": "tune-test"}
    spec = tune.parse_spec(data)
    base = fake_evaluator()

    def evaluate(overlay, report):
        if overlay["x"] < 0.2:
            raise TrainingDiverged("loss is nan")
        return base.evaluate(overlay, report)

    study, _ = tune.open_study(spec)
    for x in (0.7, 0.1, 0.3):  # complete, diverged (FAIL), below the median at step 100 (PRUNED)
        study.enqueue_trial({"kind": "a", "x": x})
    tune.run_study(spec, evaluator=tune.Evaluator(evaluate), n_trials=4)
    tune.run_study(spec, evaluator=tune.Evaluator(evaluate), n_trials=2, worker=True)  # joins
    study = load(spec, str(tmp_path / "j.log"))
    assert [t.state for t in study.trials[:3]] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED]
    parents, runs = tracking.search_study_runs(uri, "tune-test", "fake")
    assert len(parents) == 1  # the joining process reused the parent run
    parent = parents["run_id"][0]
    assert study.user_attrs[tune.PARENT_RUN_ATTR] == parent
    assert len(runs) == len(study.trials) == 6
    assert set(runs["tags.mlflow.parentRunId"]) == {parent}
    status = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}  # pruning is a normal end
    by_number = {int(r["tags.strbench.trial_number"]): r for _, r in runs.iterrows()}
    client = tracking.Tracker(uri, "tune-test").client
    assert client.get_experiment_by_name("tune-test").tags.get("mlflow.experimentKind") == "custom_model_development"
    for t in study.trials:
        r = by_number[t.number]
        assert r["tags.strbench.trial_state"] == t.state.name and r["status"] == status[t.state.name]
        assert float(r["params.x"]) == pytest.approx(t.params["x"], rel=1e-12)
        history = {m.step: m.value for m in client.get_metric_history(r["run_id"], "val_psnr")}
        if t.state == TrialState.COMPLETE:  # the curve at its training steps, ending at the final value
            assert r["metrics.val_psnr"] == pytest.approx(t.value, rel=1e-12)
            assert history == pytest.approx(t.intermediate_values, rel=1e-12)
            assert max(history) == 300 and history[300] == pytest.approx(t.value, rel=1e-12)
            assert r["tags.mlflow.runName"] == f"trial {t.number}"
            assert r["metrics.val_fid"] == pytest.approx(fake_metrics(t.user_attrs[tune.OVERLAY_ATTR])["fid"])
        if t.state == TrialState.PRUNED:  # its intermediate curve only: no final point beyond it
            assert history == pytest.approx(t.intermediate_values, rel=1e-12) and max(history) == 100
            assert r["tags.mlflow.runName"] == f"trial {t.number} (pruned at step 100)"
            assert "metrics.val_fid" not in r or np.isnan(r["metrics.val_fid"])
    assert not [c for c in runs.columns if c in ("metrics.psnr", "metrics.ssim", "metrics.fid")]  # no test names
    assert parents["metrics.n_complete"][0] == sum(t.state == TrialState.COMPLETE for t in study.trials)
    assert parents["metrics.n_pruned"][0] == sum(t.state == TrialState.PRUNED for t in study.trials)
    assert parents["metrics.best_val_psnr"][0] == pytest.approx(study.best_value, rel=1e-12)


TINY_BASE = """\
name: tune-tiny
dataset: {type: builtin, size: 16}
masks: {bins: [[0.1, 0.5]], per_bin: 2, train: {count: 16}}
methods: {IR-SDE: {method: irsde}}
schedule: {texture: {T: 4}}
nets: {preset: tiny, unet: {nf: 8}}
train: {steps: 3, batch: 2, checkpoint_every: 100, log_every: 100}
sample: {batch: 2}
metrics: {fid: false, bootstrap: 0}
device: cpu
"""


@pytest.mark.slow
def test_three_trials_on_the_tiny_profile_then_export_reproduces_the_validation_metric(tmp_path, mlflow_uri):
    """Real runner (16 px, T = 4, 3 training steps, IR-SDE): 3 trials through `strbench tune`, 3
    nested MLflow runs under one parent; 2 schedule kinds -> at most 2 models trained (the runner's
    cache); the exported overlay gives the best trial's val PSNR again."""
    from strbench import experiment
    from strbench import cli, config, tracking

    uri = mlflow_uri
    base = tmp_path / "base.yaml"
    base.write_text(TINY_BASE + f"cache_dir: {tmp_path / 'cache'}\ntracking: {{uri: '{uri}'}}\n")
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(yaml.safe_dump({
        "base": str(base),
        "study": {"name": "tiny", "objective": "psnr", "n_trials": 3, "sampler": "random", "seed": 0,
                  "storage": str(tmp_path / "journal.log")},
        "space": {"schedule.texture.kind": {"type": "categorical", "choices": ["cosine", "power"]}},
        "set": {"schedule.texture.eps": 0.01},
    }, sort_keys=False))
    assert cli.main(["tune", str(cfg), "-q"]) == 0
    parents, runs = tracking.search_study_runs(uri, "tune-tiny-tune", "tiny")
    assert len(parents) == 1 and len(runs) == 3
    assert set(runs["tags.mlflow.parentRunId"]) == {parents["run_id"][0]}
    assert set(runs["status"]) == {"FINISHED"} and runs["metrics.val_psnr"].notna().all()
    kinds = set(runs["params.schedule.texture.kind"])
    models = list((tmp_path / "cache" / "models").glob("*/model.pt"))
    assert len(models) == len(kinds) <= 2  # same schedule -> same cached model, trained once

    best_yaml = tmp_path / "best.yaml"
    assert cli.main(["tune", str(cfg), "--export", str(best_yaml), "-q"]) == 0
    spec = tune.load_spec(cfg)
    study = load(spec, str(tmp_path / "journal.log"))
    exp = config.load_experiment(base, overlay=best_yaml)
    assert exp.schedule.texture.kind == study.best_trial.params["schedule.texture.kind"]
    again = experiment.evaluate(exp, split="val")
    assert again["psnr"] == pytest.approx(study.best_value, abs=1e-9)
    assert again["psnr"] == pytest.approx(runs["metrics.val_psnr"].max(), abs=1e-9)


def test_tune_yaml_file_errors_are_one_line(tmp_path):
    """The tune YAML goes through the experiment reader: missing file, bad syntax, non-mapping top level."""
    with pytest.raises(ConfigError, match="no such tune config file.*tune_schedules.yaml"):
        tune.load_spec(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("study: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: line 2 column 1: not valid YAML"):
        tune.load_spec(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="tune config file must be a mapping of keys \\(base:"):
        tune.load_spec(tmp_path / "list.yaml")
