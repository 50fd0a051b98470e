"""No work done twice (issue 12.5): cell claims with a heartbeat, models trained under a file lock, and two
`strbench run` processes started together on a fresh folder splitting one experiment's cells."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from strbench import contract, tracking
from strbench.errors import ConfigError
from strbench.experiment import claims
from helpers import migrated_db, runs, tiny

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: single-threaded tiny nets

ROOT = Path(__file__).resolve().parents[1]


def board(tmp_path: Path, **kw) -> claims.Board:
    return claims.Board(tmp_path / "claims", **{"grace": 60.0, "heartbeat": 5.0, **kw})


def age_claim(b: claims.Board, cell: str, seconds: float) -> None:
    """Pretend the holder's last heartbeat was `seconds` ago (its process stopped beating)."""
    d = json.loads(b.path(cell).read_text())
    d["heartbeat"] -= seconds
    b.path(cell).write_text(json.dumps(d))


# ---------------------------------------------------------------------------------------------- settings


def test_settings_from_the_environment(monkeypatch):
    monkeypatch.delenv(claims.GRACE_ENV, raising=False)
    monkeypatch.delenv(claims.HEARTBEAT_ENV, raising=False)
    assert claims.settings() == (60.0, 5.0)
    monkeypatch.setenv(claims.GRACE_ENV, "2")
    assert claims.settings() == (2.0, 0.5)  # the default heartbeat follows a short grace
    for grace, beat in (("-1", None), ("soon", None), ("10", "5")):
        monkeypatch.setenv(claims.GRACE_ENV, grace)
        if beat:
            monkeypatch.setenv(claims.HEARTBEAT_ENV, beat)
        with pytest.raises(ConfigError, match="STRBENCH_"):
            claims.settings()


def test_settings_from_the_yaml_win_over_the_environment(tmp_path, monkeypatch, capsys):
    """claims.grace_s / claims.heartbeat_s of the experiment reach the run's claim board; unset, the environment
    decides; a heartbeat over a third of the grace is refused at validation (YAML) or pre-flight (YAML + env)."""
    from strbench import cli, config
    from strbench.experiment import run as run_mod

    monkeypatch.setenv(claims.GRACE_ENV, "30")
    monkeypatch.delenv(claims.HEARTBEAT_ENV, raising=False)
    d = tiny(tmp_path)
    d["claims"] = {"grace_s": 9}
    d["methods"] = {"IR-SDE": {"method": "irsde"}}
    d["masks"]["bins"] = [[0.1, 0.3]]
    d["floors"] = False
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(d))
    seen = []
    real = claims.Board.for_store

    def spy(*a, **kw):
        board = real(*a, **kw)
        seen.append((board.grace, board.heartbeat))
        return board

    monkeypatch.setattr(run_mod.claims.Board, "for_store", spy)
    migrated_db(tmp_path)
    assert run_mod.run_experiment(config.load_experiment(str(p))).ran == 1
    assert seen == [(9.0, 2.25)]  # the YAML's grace (the default heartbeat follows it), not the environment's 30
    assert claims.settings() == (30.0, 5.0)  # without the YAML keys: the environment
    d["claims"] = {"grace_s": 3, "heartbeat_s": 2}
    p.write_text(yaml.safe_dump(d))
    assert cli.main(["validate", str(p)]) == 2
    d["claims"] = {"grace_s": 3}
    p.write_text(yaml.safe_dump(d))
    monkeypatch.setenv(claims.HEARTBEAT_ENV, "2")
    capsys.readouterr()
    assert cli.main(["run", str(p), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "claims.heartbeat_s (or STRBENCH_HEARTBEAT) 2 s" in err, err


def test_store_key_names_the_store_and_experiment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    k = claims.store_key("sqlite:///mlflow.db", "exp")
    assert k == claims.store_key(f"sqlite:///{tmp_path}/mlflow.db", "exp")  # relative = absolute path
    assert len({k, claims.store_key("sqlite:///other.db", "exp"), claims.store_key("sqlite:///mlflow.db", "x"),
                claims.store_key("http://host:5000", "exp")}) == 4
    assert claims.store_key("http://host:5000/", "exp") == claims.store_key("http://host:5000", "exp")


# ---------------------------------------------------------------------------------------------- the board


def test_one_claim_per_cell_until_its_heartbeat_stops(tmp_path):
    b = board(tmp_path)
    mine, prev = b.claim("c1", "cell one")
    assert mine is not None and prev is None
    other, holder = b.claim("c1")
    assert other is None and holder.token == mine.token and f"pid {os.getpid()}" in holder.holder
    assert b.claim("c2")[0] is not None  # other cells are free
    age_claim(b, "c1", 61)  # the holder went silent for longer than the grace period
    taker, prev = b.claim("c1")
    assert taker is not None and prev.token == mine.token and prev.age() > 60
    assert not mine.still_mine() and mine.lost  # the old holder finds out at its next beat
    mine.release()  # a lost claim's release leaves the taker's claim alone
    assert b.read("c1").token == taker.token
    taker.release()
    assert b.read("c1") is None and b.claim("c1")[0] is not None


def test_the_heartbeat_thread_keeps_a_claim_and_its_run_alive(tmp_path):
    migrated_db(tmp_path)
    t = tracking.Tracker(f"sqlite:///{tmp_path}/mlflow.db", "exp", str(tmp_path / "art"))
    parent = t.parent_run("h", run_name="p", tags={}, params={}, cell_hashes=["c1"])
    b = board(tmp_path, grace=1.2, heartbeat=0.1)
    claim, _ = b.claim("c1")
    with claim:
        run = claim.watch(t).start_cell(parent, "c1", run_name="c1", tags={}, params={})
        tags = t.client.get_run(run).data.tags
        first = float(tags[contract.HEARTBEAT_TAG])
        assert tags[contract.CLAIM_TAG] == claim.token and b.read("c1").run_id == run
        time.sleep(1.5)  # longer than the grace: only the heartbeat keeps the claim
        assert b.claim("c1")[0] is None
        assert float(t.client.get_run(run).data.tags[contract.HEARTBEAT_TAG]) > first
        assert t.fail_stale_runs(["c1"], grace_s=1.2) == ([], ["c1"])
    assert b.read("c1") is None  # released on exit


def test_a_run_whose_claim_was_taken_over_does_not_end_finished(tmp_path):
    migrated_db(tmp_path)
    t = tracking.Tracker(f"sqlite:///{tmp_path}/mlflow.db", "exp", str(tmp_path / "art"))
    parent = t.parent_run("h", run_name="p", tags={}, params={}, cell_hashes=["c1"])
    b = board(tmp_path)
    claim, _ = b.claim("c1")
    watched = claim.watch(t)
    run = watched.start_cell(parent, "c1", run_name="c1", tags={}, params={})
    age_claim(b, "c1", 61)
    assert b.claim("c1")[0] is not None  # taken over (e.g. this process was suspended for minutes)
    watched.end(run, "FINISHED")
    r = t.client.get_run(run)
    assert r.info.status == "FAILED" and "claim lost" in r.data.tags[contract.ERROR_TAG]


def test_claim_cell_takes_over_a_stale_claim_and_fails_its_running_run(tmp_path):
    migrated_db(tmp_path)
    t = tracking.Tracker(f"sqlite:///{tmp_path}/mlflow.db", "exp", str(tmp_path / "art"))
    parent = t.parent_run("h", run_name="p", tags={}, params={}, cell_hashes=["c1", "c2", "c3"])
    b = board(tmp_path)
    # a holder that died mid-cell: its claim file and RUNNING run both stopped beating 90 s ago
    dead, _ = b.claim("c1", "cell one")
    run = dead.watch(t).start_cell(parent, "c1", run_name="c1", tags={}, params={})
    t.set_tags(run, {contract.HEARTBEAT_TAG: int((time.time() - 90) * 1000)})
    age_claim(b, "c1", 90)
    live, _ = b.claim("c2")  # a live holder
    turn = claims.claim_cell(b, t, "c1", "cell one")
    assert turn.claim is not None and turn.stale == 1
    r = t.client.get_run(run)
    assert r.info.status == "FAILED" and "heartbeat" in r.data.tags[contract.ERROR_TAG]
    assert b.read("c1").token == turn.claim.token
    turn.claim.release()
    skipped = claims.claim_cell(b, t, "c2")
    assert skipped.claim is None and "claimed by" in skipped.why and b.read("c2").token == live.token
    # finished by another process meanwhile: skipped, nothing left claimed
    done = t.start_cell(parent, "c3", run_name="c3", tags={}, params={})
    t.end(done, "FINISHED")
    turn = claims.claim_cell(b, t, "c3")
    assert turn.claim is None and turn.finished_elsewhere and b.read("c3") is None
    # a RUNNING run beating now in MLflow without a claim here (a process not sharing this cache folder)
    t.start_cell(parent, "c4", run_name="c4", tags={contract.HEARTBEAT_TAG: int(time.time() * 1000)}, params={})
    turn = claims.claim_cell(b, t, "c4")
    assert turn.claim is None and "live heartbeat" in turn.why and b.read("c4") is None
    # failed in another process of this sweep (started after us): not retried here; a later sweep retries it
    since = time.time() - 1
    bad = t.start_cell(parent, "c5", run_name="c5", tags={}, params={})
    t.end(bad, "FAILED", error="ValueError: boom")
    turn = claims.claim_cell(b, t, "c5", since=since)
    assert turn.claim is None and "failed in another process" in turn.why and b.read("c5") is None
    turn = claims.claim_cell(b, t, "c5", since=time.time() + 1)
    assert turn.claim is not None
    turn.claim.release()


def test_free_first_keeps_out_of_the_way_of_other_processes(tmp_path):
    class M:
        def __init__(self, h):
            self.hash = h

    class C:
        def __init__(self, name, *models):
            self.hash, self.models = name, [M(h) for h in models]

    b = board(tmp_path)
    cells = [C("a1", "A"), C("a2", "A"), C("b1", "B"), C("b2", "B"), C("c1", "C")]

    def order(busy=(), ready=()):
        return [c.hash for c in claims.free_first(cells, b, busy=lambda m: m.hash in busy,
                                                  ready=lambda m: m.hash in ready)]

    assert order() == ["a1", "a2", "b1", "b2", "c1"]  # alone: unchanged
    other, _ = b.claim("a1")  # another process runs a1, so it is about to train model A
    assert order() == ["b1", "b2", "c1", "a2", "a1"]
    assert order(ready={"A"}) == ["a2", "b1", "b2", "c1", "a1"]  # A is trained already: nothing to wait for
    assert order(busy={"B"}) == ["c1", "a2", "b1", "b2", "a1"]  # B's train lock is held (e.g. a tune worker)
    other.release()


# ---------------------------------------------------------------------------------------------- the model lock


def test_a_model_being_trained_elsewhere_is_waited_for_then_loaded(tmp_path, monkeypatch):
    """train.lock is held (another process trains the model): Resources.model says `waiting`, blocks, then
    loads what the holder finished instead of training it again."""
    import torch
    from filelock import FileLock

    import strbench.train as T
    from strbench import config as C
    from strbench import experiment
    from strbench.experiment.cache import Resources

    def irsde_model(d):
        return next(m for m in experiment.unique_models(experiment.expand(C.load_experiment(d))) if m.role == "irsde")

    spec = irsde_model(tiny(tmp_path))
    loaded, trained, events = [], [], []
    monkeypatch.setattr(T, "load_model", lambda path, **kw: loaded.append(path) or torch.nn.Identity())
    monkeypatch.setattr(Resources, "_train", lambda self, s, deps, **kw: trained.append(s.hash) or torch.nn.Identity())

    class Events:
        def event(self, kind, **d):
            events.append(kind)

    res = Resources(tmp_path / "cache", "cpu", progress=Events())
    d = res.model_dir(spec)
    d.mkdir(parents=True)
    holder = FileLock(str(d / "train.lock"))
    holder.acquire()
    assert res.model_busy(spec)
    th = threading.Thread(target=res.model, args=(spec, {}))
    th.start()
    for _ in range(200):
        if events:
            break
        time.sleep(0.02)
    assert events == ["waiting"] and th.is_alive()
    (d / "complete.json").write_text("{}")  # the holder finished training
    holder.release()
    th.join(10)
    assert not th.is_alive() and trained == [] and len(loaded) == 1 and not res.model_busy(spec)
    other = irsde_model(tiny(tmp_path, **{"train.lr": 3e-4}))
    Resources(tmp_path / "cache", "cpu").model(other, {})  # nobody holds its lock: trained here
    assert trained == [other.hash]


# ---------------------------------------------------------------------------------------------- two processes


def six_cells_two_models(tmp_path: Path) -> dict:
    """6 cells (IR-SDE x 3 bins x 2 learning rates) needing 2 models; trains and samples in seconds."""
    d = tiny(tmp_path)
    d["methods"] = {"IR-SDE": {"method": "irsde"}}
    d["masks"]["bins"] = [[0.1, 0.3], [0.3, 0.5], [0.5, 0.7]]
    d["sweep"] = {"train.lr": [1e-4, 2e-4]}
    return d


def start_run(path: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "strbench.cli", "run", path], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_runs_started_together_on_a_fresh_folder_split_the_cells(tmp_path):
    """Issue 12.5: no sqlite schema traceback, every cell FINISHED exactly once, every model trained exactly
    once, one parent run. The wall times are printed (pytest -s), not asserted: the CI machine is shared."""
    d = six_cells_two_models(tmp_path)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    t0 = time.time()
    procs = [start_run(str(path), tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    wall = time.time() - t0
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and "Traceback" not in err, err
    df = runs(tmp_path)
    cells = df[df["tags.strbench.role"] == "cell"]
    assert len(cells) == 6 and (cells["status"] == "FINISHED").all() and cells["tags.strbench.cell_hash"].nunique() == 6
    parents = df[df["tags.strbench.role"] == "experiment"]
    assert len(parents) == 1 and parents["status"].iloc[0] == "FINISHED"
    trained = cells["tags.strbench.trained.irsde"].dropna()
    models = sorted(p.name for p in (tmp_path / "cache" / "models").iterdir())
    assert len(models) == 2 and sorted(trained) == models  # each model trained in exactly one cell
    assert sum(out.count("train irsde model") for out, _ in outs) == 2
    assert claims.Board.for_store(d["cache_dir"], d["tracking"]["uri"], "tiny").holders() == []  # all released
    ran = [sum(line.startswith("[") for line in out.splitlines()) for out, _ in outs]
    assert sum(ran) == 6
    print(f"\ntwo processes: {wall:.1f} s wall, cells run {ran}, models trained 2 "
          f"(waits: {sum(out.count('wait for model') for out, _ in outs)})")
