"""`strbench ls`: the store overview (experiments, parents, distinct cells per state, tuning studies), one
experiment's cells, a YAML's planned cells with their state and models' cache status, csv/json that pandas
reads back, nothing created for a missing store, exit 2 for an unknown experiment name.

The store is made directly with strbench.tracking.Tracker (parent_run / start_cell / end) on the hashes of a
tiny config's real cells: fast, and every state (finished after a failed try, failed, stale running, killed)."""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from strbench import cli, contract, listing, tracking
from strbench import config as C
from strbench import experiment
from helpers import migrated_db, tiny

ERROR = "RuntimeError: the structure net diverged at step 3 " + "x" * 300


def small(tmp_path: Path) -> dict:
    d = tiny(tmp_path)
    d["methods"] = {"IR-SDE": {"method": "irsde"}, "C": {"method": "strdiffusion", "ablation": "C"}}
    return d  # 2 methods x 2 bins = 4 cells


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Cells 0-3 of the tiny config: 0 failed then finished, 1 failed, 2 running without a heartbeat for an
    hour (stale), 3 never run; one killed cell of another configuration; a tuning study with 2 trials."""
    tmp = tmp_path_factory.mktemp("ls")
    d = small(tmp)
    cfg = tmp / "exp.yaml"
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    cells = experiment.expand(C.load_experiment(d))
    assert len(cells) == 4
    migrated_db(tmp)
    uri = d["tracking"]["uri"]
    tr = tracking.Tracker(uri, "tiny", d["tracking"]["artifact_location"])
    parent = tr.parent_run(experiment.experiment_hash(cells), run_name="tiny [cpu]", tags={"strbench.profile": "cpu"},
                           params={}, cell_hashes=[c.hash for c in cells])

    def cell_run(c, status, *, metrics=None, error=None, tags=None, label=None, h=None):
        rid = tr.start_cell(parent, h or c.hash, run_name=label or c.label,
                            tags={"strbench.cell_index": c.index, **(tags or {})}, params={})
        if metrics:
            tr.log_metrics(rid, metrics)
        if status != "RUNNING":
            tr.end(rid, status, error=error)
        return rid

    cell_run(cells[0], "FAILED", error="OSError: disk full")
    time.sleep(0.01)
    ids = {"finished": cell_run(cells[0], "FINISHED", metrics={"psnr": 21.5, "ssim": 0.81, "n_images": 2})}
    ids["failed"] = cell_run(cells[1], "FAILED", error=ERROR)
    ids["running"] = cell_run(cells[2], "RUNNING", tags={contract.HEARTBEAT_TAG: int((time.time() - 3600) * 1000)})
    ids["killed"] = cell_run(cells[3], "KILLED", error="interrupted", label="IR-SDE 60-70% seed=0", h="e" * 64)
    spec = cells[0].models[0]
    tr.end(tr.start_training(parent, spec.hash, spec.role, params={}, tags={}), "KILLED")  # not counted
    tr.end(tr.start_training(parent, spec.hash, spec.role, params={}, tags={}), "FINISHED")
    study = tracking.StudyRuns(uri, "tiny-tune", "schedules", str(tmp / "mlartifacts"))
    sp = study.parent(params={}, tags={})
    study.log_trial(sp, 0, params={"x": 1}, metrics={"psnr": 10.0})
    study.log_trial(sp, 1, params={"x": 2}, metrics={}, state="PRUNED")
    study.finish_parent(sp, {})
    return {"tmp": tmp, "uri": uri, "cfg": str(cfg), "cells": cells, "ids": ids, "d": d}


def _run(capsys, *args):
    rc = cli.main(["ls", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_overview_counts_parents_distinct_cells_per_state_and_studies(store, capsys):
    rc, out, err = _run(capsys, "--tracking-uri", store["uri"], "--format", "csv")
    assert rc == 0
    t = pd.read_csv(io.StringIO(out)).set_index("experiment")
    assert list(t.reset_index().columns) == listing.OVERVIEW_COLUMNS
    assert set(t.index) == {"tiny", "tiny-tune"}  # MLflow's "Default" and the template experiment hold no runs
    tiny_ = t.loc["tiny"]
    assert (tiny_.parents, tiny_.profiles, tiny_.cells) == (1, "cpu", 4)  # cell 0's two runs count once
    assert (tiny_.finished, tiny_.failed, tiny_.running, tiny_.killed, tiny_.stale) == (1, 1, 1, 1, 1)
    assert tiny_.trainings == 1  # finished training runs only; they are not cells
    assert tiny_.artifact_location.startswith("file://") and "mlartifacts" in tiny_.artifact_location
    assert pd.Timestamp(tiny_.last_activity) > pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=1)
    tune = t.loc["tiny-tune"]
    assert (tune.studies, tune.trials, tune.cells, tune.parents) == (1, 2, 0, 0)
    rc, text, _ = _run(capsys, "--tracking-uri", store["uri"])
    assert rc == 0 and f"tracking store {store['uri']}: 2 experiment(s)" in text
    assert "tiny-tune" in text and "Default" not in text and "1 (1 stale)" in text


def test_experiment_name_lists_its_cells_with_states_errors_and_metrics(store, capsys):
    rc, out, _ = _run(capsys, "tiny", "--tracking-uri", store["uri"], "--format", "csv")
    assert rc == 0
    t = pd.read_csv(io.StringIO(out), keep_default_na=False)
    assert list(t.columns) == listing.CELL_COLUMNS + listing.key_metrics()
    by = t.set_index("state")
    assert sorted(t.state) == ["failed", "finished", "killed", "running"]
    fin = by.loc["finished"]
    assert fin.runs == 2 and fin.history == "finished,failed" and fin.run_id == store["ids"]["finished"]
    assert float(fin.psnr) == 21.5 and fin.error == ""
    failed = by.loc["failed"]
    assert failed.error.startswith("RuntimeError: the structure net diverged") and len(failed.error) <= 100
    assert failed.psnr == ""  # no metric shown for a cell that did not finish
    assert by.loc["running"].stale in (True, "True") and by.loc["finished"].stale in (False, "False")
    assert by.loc["killed"].label == "IR-SDE 60-70% seed=0"
    assert list(t["index"][:3]) == [0, 1, 2]  # the parent's cells in plan order
    rc, text, _ = _run(capsys, "tiny", "--tracking-uri", store["uri"])
    assert "4 cells in" in text and "1 finished, 1 failed, 1 running, 1 killed" in text
    assert "running (stale)" in text and "no heartbeat for 1 h" in text and "profiles cpu" in text
    assert "21.50" in text and "0.810" in text and store["ids"]["finished"] in text


def test_yaml_lists_every_planned_cell_with_state_and_model_cache(store, capsys):
    cells = store["cells"]
    cache = Path(store["d"]["cache_dir"]) / "models"
    irsde = cells[0].model("irsde")
    c_models = {m.role: m for m in cells[2].models}
    (cache / irsde.hash).mkdir(parents=True, exist_ok=True)
    (cache / irsde.hash / "complete.json").write_text("{}")
    (cache / c_models["texture"].hash).mkdir(parents=True, exist_ok=True)
    (cache / c_models["texture"].hash / "model.pt").write_bytes(b"")
    rc, out, err = _run(capsys, store["cfg"], "--format", "json")
    assert rc == 0
    rows = json.loads(out)
    t = pd.DataFrame(rows)
    assert list(t.cell_hash) == [c.hash for c in cells] and list(t["index"]) == [0, 1, 2, 3]
    assert list(t.state) == ["finished", "failed", "running", "not run"]  # the killed cell is another config's
    assert t.label.tolist() == [c.label for c in cells]
    assert rows[0]["psnr"] == 21.5 and rows[3]["psnr"] is None and rows[3]["run_id"] == ""  # JSON null, not NaN
    assert t.models[0] == f"irsde:{irsde.short}=cached"
    assert f"texture:{c_models['texture'].short}=partial" in t.models[2]
    assert f"structure:{c_models['structure'].short}=missing" in t.models[2]
    assert "1 more cell(s) of experiment 'tiny'" in err  # the killed one, which this config does not plan
    rc, text, _ = _run(capsys, store["cfg"])
    assert "4 cells planned: 1 finished, 1 failed, 1 running, 1 not run" in text
    assert f"irsde:{irsde.short[:8]}(c)" in text and f"texture:{c_models['texture'].short[:8]}(p)" in text
    rc, out, _ = _run(capsys, store["cfg"], "--set", "masks.per_bin=3", "--format", "csv")
    assert set(pd.read_csv(io.StringIO(out)).state) == {"not run"}  # other cells: other hashes


def test_missing_store_says_so_and_creates_nothing(tmp_path, capsys, monkeypatch):
    d = small(tmp_path / "w")
    (tmp_path / "w").mkdir()
    cfg = tmp_path / "w" / "exp.yaml"
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    monkeypatch.chdir(tmp_path / "w")
    rc, out, _ = _run(capsys)  # the default store, sqlite:///mlflow.db here
    assert rc == 0 and out.startswith("no tracking store at sqlite:///mlflow.db (") and "/w/mlflow.db)" in out
    rc, out, _ = _run(capsys, "tiny")
    assert rc == 0 and "no tracking store" in out
    rc, out, err = _run(capsys, str(cfg), "--format", "csv")
    assert rc == 0 and "no tracking store" in err and "nothing has run yet" in err
    t = pd.read_csv(io.StringIO(out))
    assert len(t) == 4 and set(t.state) == {"not run"} and t.models.str.contains("=missing").all()
    rc, out, _ = _run(capsys, "--tracking-uri", f"sqlite:///{tmp_path}/none/mlflow.db", "--format", "json")
    assert rc == 0 and json.loads(out) == []
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["exp.yaml", "w"]  # no store, lock, cache or folder


def test_unknown_experiment_is_one_line_exit_2_naming_the_known_ones(store, capsys):
    rc, out, err = _run(capsys, "tinny", "--tracking-uri", store["uri"])
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "no experiment 'tinny'" in err and ("tiny, tiny-tune" in err or "tiny-tune, tiny" in err)
    rc, _, err = _run(capsys, "tiny", "--tracking-uri", store["uri"], "--profile", "cpu")
    assert rc == 2 and "experiment YAML" in err


def test_tune_config_and_study_experiment(store, capsys):
    tune_cfg = store["tmp"] / "tune.yaml"
    space = {"schedule.texture.eps": {"type": "float", "low": 0.001, "high": 0.05}}
    tune_cfg.write_text(yaml.safe_dump({"base": store["cfg"], "study": {"name": "schedules"}, "space": space,
                                        "mlflow": {"experiment": "tiny-tune"}}))
    rc, out, _ = _run(capsys, str(tune_cfg), "--format", "csv")  # its tracking URI: the base's
    t = pd.read_csv(io.StringIO(out))
    assert rc == 0 and list(t.experiment) == ["tiny-tune"] and t.trials[0] == 2
    rc, text, _ = _run(capsys, "tiny-tune", "--tracking-uri", store["uri"])
    assert rc == 0 and "holds no cell runs" in text


def test_cell_states_pure():
    t0 = pd.Timestamp("2024-05-01", tz="UTC")
    runs = pd.DataFrame([
        {"run_id": "a", "status": "FAILED", "start_time": t0, "tags.strbench.cell_hash": "h1",
         "tags.strbench.error": "boom\nsecond line"},
        {"run_id": "b", "status": "KILLED", "start_time": t0 + pd.Timedelta(minutes=1),
         "tags.strbench.cell_hash": "h1"},
        {"run_id": "c", "status": "RUNNING", "start_time": t0, "tags.strbench.cell_hash": "h2",
         "tags.strbench.heartbeat": str((t0 + pd.Timedelta(seconds=50)).value // 10**6)},
    ])
    def states(after_s: float):
        now = (t0 + pd.Timedelta(seconds=after_s)).timestamp()
        return listing.cell_states(runs, now=now, grace_s=60).set_index("cell_hash")

    s = states(100)
    assert (s.loc["h1", "state"], s.loc["h1", "history"], s.loc["h1", "run_id"]) == ("killed", "killed,failed", "b")
    assert s.loc["h2", "state"] == "running" and not s.loc["h2", "stale"]  # 50 s since the beat < 60 s grace
    s = states(200)
    assert s.loc["h2", "stale"]
    assert listing.shorten_error("boom\nsecond line") == "boom"
