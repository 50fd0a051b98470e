"""Interrupting `strbench run` (Ctrl-C, SIGTERM, SIGKILL) and starting it again: the sweep finishes
with every cell exactly once FINISHED in MLflow, the half-trained model resumes from its checkpoint,
and nothing is left half-written."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from strbench import cli
from helpers import migrated_db, runs, tiny

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: single-threaded tiny nets

ROOT = Path(__file__).resolve().parents[1]


def small(tmp_path: Path, steps: int = 4) -> dict:
    d = tiny(tmp_path)
    d["methods"] = {"IR-SDE": {"method": "irsde"},
                    "C": {"method": "strdiffusion", "ablation": "C"}}
    d["masks"]["bins"] = [[0.1, 0.3]]
    d["train"].update(steps=steps, checkpoint_every=2, log_every=2)
    return d


def write(tmp_path: Path, d: dict) -> str:
    migrated_db(tmp_path)
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return str(p)


def training_runs(tmp_path, role: str):
    """The training runs of the `role` model, oldest first."""
    df = runs(tmp_path)
    return df[(df["tags.strbench.role"] == "training") & (df["tags.strbench.model_role"] == role)] \
        .sort_values("start_time").reset_index(drop=True)


def assert_each_cell_finished_once(tmp_path, n_cells: int):
    df = runs(tmp_path)
    cells = df[df["tags.strbench.role"] == "cell"]
    fin = cells[cells["status"] == "FINISHED"]
    assert len(fin) == n_cells and fin["tags.strbench.cell_hash"].nunique() == n_cells
    assert not (cells["status"] == "RUNNING").any()
    parents = df[df["tags.strbench.role"] == "experiment"]
    assert len(parents) == 1 and parents["status"].iloc[0] == "FINISHED"
    return cells


def test_ctrl_c_in_training_then_resume(tmp_path, monkeypatch):
    """In-process: a KeyboardInterrupt after the texture net's first checkpoint."""
    import strbench.train as T

    real = T.train_model
    seen: dict = {}

    def interrupted(role, cfg, *a, callback=None, **kw):
        def cb(ev):
            if ev.get("event") == "loss" and not ev.get("replayed"):  # steps trained by this process
                seen.setdefault(role, []).append(ev["step"])
            if callback:
                callback(ev)
            if role == "texture" and ev["step"] == 2 and not seen.get("interrupted"):
                seen["interrupted"] = True
                raise KeyboardInterrupt
        return real(role, cfg, *a, callback=cb, **kw)

    monkeypatch.setattr(T, "train_model", interrupted)
    path = write(tmp_path, small(tmp_path))
    assert cli.main(["run", path, "-q"]) == 130
    df = runs(tmp_path)
    killed = df[(df["tags.strbench.role"] == "cell") & (df["status"] == "KILLED")]
    assert len(killed) == 1 and killed["tags.strbench.case"].iloc[0] == "C"
    assert "interrupted" in killed["tags.strbench.error"].iloc[0]
    assert df[df["tags.strbench.role"] == "experiment"]["status"].iloc[0] == "KILLED"
    seen.clear()
    seen["interrupted"] = True
    assert cli.main(["run", path, "-q"]) == 0
    assert seen["texture"] == [4]  # resumed from the step-2 checkpoint, not from scratch
    assert "irsde" not in seen  # the finished IR-SDE cell was skipped
    cells = assert_each_cell_finished_once(tmp_path, 2)
    from mlflow.tracking import MlflowClient

    fin = cells[(cells["status"] == "FINISHED") & (cells["tags.strbench.case"] == "C")].iloc[0]
    tex = training_runs(tmp_path, "texture")
    assert list(tex["status"]) == ["KILLED", "FINISHED"]  # the interrupted training, then the resumed one
    assert fin["tags.strbench.training_run.texture"] == tex["run_id"].iloc[1]  # the cell links its model's run
    assert tex["tags.strbench.resumed_at"].iloc[1] == "2"
    hist = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db").get_metric_history(tex["run_id"].iloc[1],
                                                                                         "train/loss")
    assert [m.step for m in hist] == [2, 4]  # the loss logged before the interruption is on the finished run
    # a process killed after its last cell but before ending the parent left it RUNNING: the next run closes it
    parent = df[df["tags.strbench.role"] == "experiment"]["run_id"].iloc[0]
    MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db").update_run(parent, status="RUNNING")
    assert cli.main(["run", path, "-q"]) == 0
    assert_each_cell_finished_once(tmp_path, 2)


def test_a_finished_models_losses_are_stored_before_sampling(tmp_path, monkeypatch):
    """The loss curve reaches MLflow when training ends, not with the cell's metrics: a kill -9 while
    sampling (or later) no longer loses the curve of the model the cell just finished."""
    import strbench.sample as S
    from mlflow.tracking import MlflowClient

    real, seen = S.sample, []

    def spy(*a, **kw):
        if not seen:
            client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
            (run,) = [r for r in client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
                      if r.data.tags.get("strbench.role") == "training"]
            assert run.info.status == "FINISHED"  # the training run ended with training, before sampling
            seen.append([m.step for m in client.get_metric_history(run.info.run_id, "train/loss")])
        return real(*a, **kw)

    monkeypatch.setattr(S, "sample", spy)
    d = small(tmp_path)
    d["methods"] = {"IR-SDE": {"method": "irsde"}}
    assert cli.main(["run", write(tmp_path, d), "-q"]) == 0
    assert seen == [[2, 4]]


GRACE_S = 2.0  # claims: a killed holder's cell is taken over 2 s after its last heartbeat (default 60 s)


def _start(path: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "STRBENCH_CLAIM_GRACE": str(GRACE_S)}
    # A shell's background job (e.g. CI started with `&`) inherits SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: restore the default so the child reacts to Ctrl-C as in a terminal.
    return subprocess.Popen([sys.executable, "-m", "strbench.cli", "run", path, "-q"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_checkpoint(proc: subprocess.Popen, cache: Path, timeout: float = 90.0) -> Path:
    t0 = time.time()
    while time.time() - t0 < timeout:
        found = list(cache.glob("models/*/model.pt"))
        if found:
            return found[0]
        if proc.poll() is not None:
            raise AssertionError(f"run ended before training: {proc.communicate()}")
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("no checkpoint appeared")


@pytest.mark.parametrize("sig, rc, status", [(signal.SIGINT, 130, "KILLED"), (signal.SIGKILL, -9, "RUNNING")])
def test_signal_mid_training_then_rerun(tmp_path, sig, rc, status):
    d = small(tmp_path, steps=150)
    d["methods"] = {"IR-SDE": {"method": "irsde"}}
    path = write(tmp_path, d)
    proc = _start(path, tmp_path)
    _wait_for_checkpoint(proc, tmp_path / "cache")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == rc, err
    df = runs(tmp_path)
    cell = df[df["tags.strbench.role"] == "cell"]
    assert list(cell["status"]) == [status]
    model_dir = next((tmp_path / "cache" / "models").iterdir())
    assert (model_dir / "model.pt").is_file() and not (model_dir / "complete.json").exists()
    assert not list(model_dir.glob("*.tmp*")) or sig == signal.SIGKILL
    # Ctrl-C releases the cell's claim; SIGKILL leaves it, and its heartbeat stops
    left = list((tmp_path / "cache" / "claims").glob("*/*.json"))
    assert len(left) == (1 if sig == signal.SIGKILL else 0)
    if left:
        time.sleep(max(0.0, GRACE_S + 0.2 - (time.time() - json.loads(left[0].read_text())["heartbeat"])))
    # start again: finishes, the stale run (SIGKILL) is marked FAILED, the checkpoint is not corrupt
    proc = _start(path, tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    cells = assert_each_cell_finished_once(tmp_path, 1)
    assert len(cells) == 2
    old = cells[cells["status"] != "FINISHED"]
    assert list(old["status"]) == (["FAILED"] if sig == signal.SIGKILL else ["KILLED"])
    if sig == signal.SIGKILL:
        assert "no heartbeat" in old["tags.strbench.error"].iloc[0]
    assert (model_dir / "complete.json").is_file()
    from mlflow.tracking import MlflowClient

    fin = cells[cells["status"] == "FINISHED"]["run_id"].iloc[0]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    tr = training_runs(tmp_path, "irsde")  # the killed process's training run, then the resumed one
    assert list(tr["status"]) == (["FAILED", "FINISHED"] if sig == signal.SIGKILL else ["KILLED", "FINISHED"])
    if sig == signal.SIGKILL:  # found RUNNING by the process that took the train lock over
        assert tr["tags.strbench.error"].iloc[0].startswith("stale:")
    assert client.get_run(fin).data.tags["strbench.training_run.irsde"] == tr["run_id"].iloc[1]
    assert int(tr["tags.strbench.resumed_at"].iloc[1]) >= 2  # resumed from a checkpoint, not step 0
    hist = client.get_metric_history(tr["run_id"].iloc[1], "train/loss")  # ... and the losses before the kill too
    assert sorted(m.step for m in hist) == list(range(2, 151, 2))
    from strbench.train import load_model

    load_model(model_dir / "model.pt", expected_hash=model_dir.name)


def test_a_diverged_model_is_not_trained_again_by_the_next_run(tmp_path, monkeypatch, capsys):
    """A NaN loss leaves models/<hash>/diverged.json: the next run (or another process sharing the cache) fails
    that model's cells at once with the reason and the way out, instead of training to the same NaN again;
    --dry-run says so; removing the file trains it again."""
    from helpers import poison_losses
    from strbench import roles

    orig = roles.get("irsde")
    calls = poison_losses(monkeypatch, "irsde", 3)
    d = small(tmp_path)
    d["methods"] = {"IR-SDE": {"method": "irsde"}}
    d["floors"] = False
    path = write(tmp_path, d)
    assert cli.main(["run", path, "-q"]) == 1
    (marker,) = list((tmp_path / "cache" / "models").glob("*/diverged.json"))
    assert "at step 3" in json.loads(marker.read_text())["error"]
    trained = calls["n"]
    capsys.readouterr()
    assert cli.main(["run", path, "-q"]) == 1
    assert calls["n"] == trained  # not trained again
    df = runs(tmp_path)
    failed = df[(df["tags.strbench.role"] == "cell") & (df["status"] == "FAILED")].sort_values("start_time")
    assert len(failed) == 2
    first, second = failed["tags.strbench.error"]
    assert "at step 3" in first and "diverged when it was trained before" in second and "diverged.json" in second
    assert cli.main(["run", path, "--dry-run"]) == 0
    assert "1 diverged before" in capsys.readouterr().out
    monkeypatch.setitem(roles.registry(), "irsde", orig)
    marker.unlink()
    assert cli.main(["run", path, "-q"]) == 0
