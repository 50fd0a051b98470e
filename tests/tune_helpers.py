"""Helpers of the strbench tune tests (tests/test_tune.py, tests/test_tune_postgres.py): a cheap deterministic
tune spec run by tests/tune_fake_worker.py in subprocesses, and the checks that several workers shared a study."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from strbench import tune
from tune_fake_worker import fake_metrics

WORKER = Path(__file__).parent / "tune_fake_worker.py"

HB, GRACE = 1, 3  # heartbeat interval and grace period (s) of the storage tests


def fake_spec(storage: str, *, name: str = "fake", n_trials: int = 6, objective="psnr", pruner="none",
              sampler: str = "random", **study) -> dict:
    s = {"name": name, "objective": objective, "n_trials": n_trials, "sampler": sampler, "storage": storage,
         "seed": 1, "heartbeat_interval": HB, "grace_period": GRACE, "max_retry": 2, **study}
    if pruner is not None:
        s["pruner"] = pruner
    return {"base": "unused.yaml", "study": s,
            "space": {"kind": {"type": "categorical", "choices": ["a", "b"]},
                      "x": {"type": "float", "low": 0.0, "high": 1.0}},
            "set": {"fixed": 3}}


def write_spec(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "tune.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def load(spec: tune.TuneSpec, storage: str):
    st = tune.open_storage(storage, spec.study)
    return optuna.load_study(study_name=spec.study.name, storage=st)


def spawn(cfg: Path, storage: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), str(cfg), "--storage", storage, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 60) -> None:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out


def assert_consistent(spec, url: str, log: Path, n: int, pids: int = 2) -> None:
    study = load(spec, url)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * n, [t.state for t in trials]
    assert sorted(t.number for t in trials) == list(range(n))  # none lost, none duplicated
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(lines) == n  # each trial evaluated exactly once
    ran = sorted(json.dumps(x["overlay"], sort_keys=True) for x in lines)
    stored = sorted(json.dumps(t.user_attrs[tune.OVERLAY_ATTR], sort_keys=True) for t in trials)
    assert ran == stored
    assert len({x["pid"] for x in lines}) == pids
    for t in trials:
        assert t.value == fake_metrics(t.user_attrs[tune.OVERLAY_ATTR])["psnr"]


def run_two_workers(tmp_path: Path, url: str, n_each: int = 3) -> None:
    cfg = write_spec(tmp_path, fake_spec(url, n_trials=2 * n_each))
    spec = tune.load_spec(cfg)
    tune.open_study(spec)  # the first process creates the study; both workers join it
    log = tmp_path / "evals.jsonl"
    procs = [spawn(cfg, url, "--worker", "--n-trials", str(n_each), "--sleep", "0.3", "--log", str(log))
             for _ in range(2)]
    for p in procs:
        finish(p)
    assert_consistent(spec, url, log, 2 * n_each)
