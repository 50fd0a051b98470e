"""MLflow layer: parent reuse, cell runs, stale RUNNING runs (heartbeat), one store and parent when processes start
together, readers for reports."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from strbench import contract, tracking
from helpers import migrated_db


@pytest.fixture
def uri(tmp_path):
    migrated_db(tmp_path)  # an empty DB with MLflow's schema (migrations cost seconds)
    return f"sqlite:///{tmp_path}/mlflow.db"


def tracker(uri, tmp_path, name="exp"):
    return tracking.Tracker(uri, name, str(tmp_path / "art"))


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_flatten_and_keys():
    flat = tracking.flatten({"a": {"b": 1, "c": [1, 2]}, "m": {"RePaint*": {"x": "y" * 600}}, "e": {}})
    assert flat["a.b"] == "1" and flat["a.c"] == "[1, 2]" and flat["e"] == "{}"
    assert flat["m.RePaint_.x"].endswith("...") and len(flat["m.RePaint_.x"]) == tracking.PARAM_MAX


def test_tracking_exists_does_not_create(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert not tracking.tracking_exists(uri)
    assert tracking.search_cell_runs(uri, "exp").empty
    assert not (tmp_path / "mlflow.db").exists()


def test_experiment_artifacts_go_to_the_given_folder(tmp_path, uri):
    t = tracker(uri, tmp_path)
    exp = t.client.get_experiment(t.experiment_id)
    assert exp.artifact_location.startswith("file://") and exp.artifact_location.endswith("/art")
    assert tracking.Tracker(uri, "exp").experiment_id == t.experiment_id  # found again by name


def test_parent_run_is_reused_for_the_same_experiment_hash(tmp_path, uri):
    t = tracker(uri, tmp_path)
    a = t.parent_run("h1", run_name="p", tags={}, params={"x": 1}, cell_hashes=["c" * 64])
    t.end(a, "FINISHED")
    b = t.parent_run("h1", run_name="p", tags={}, params={"x": 1}, cell_hashes=["c" * 64])
    c = t.parent_run("h2", run_name="p", tags={}, params={"x": 2}, cell_hashes=["d" * 64])
    assert a == b != c
    assert t.client.get_run(a).info.status == "RUNNING"  # running again


def test_finished_cells_and_stale_runs_by_heartbeat(tmp_path, uri):
    t = tracker(uri, tmp_path)
    parent = t.parent_run("h", run_name="p", tags={}, params={}, cell_hashes=["a", "b", "c"])
    done = t.start_cell(parent, "a", run_name="a", tags={}, params={})
    t.end(done, "FINISHED")
    failed = t.start_cell(parent, "b", run_name="b", tags={}, params={})
    t.end(failed, "FAILED", error="boom\nline two")
    assert t.client.get_run(failed).data.tags[contract.ERROR_TAG] == "boom line two"
    assert t.is_finished("a") and not t.is_finished("b")
    # RUNNING runs: one whose heartbeat stopped 100 s ago, one beating now. Host and pid do not matter: the
    # stale one claims to be this very process, the live one a pid that cannot exist on another host.
    now_ms = time.time() * 1000
    stale = t.start_cell(parent, "b", run_name="b", params={},
                         tags={contract.HEARTBEAT_TAG: int(now_ms - 100_000), contract.PID_TAG: os.getpid()})
    live = t.start_cell(parent, "c", run_name="c", params={},
                        tags={contract.HEARTBEAT_TAG: int(now_ms), contract.HOST_TAG: "another-host",
                              contract.PID_TAG: dead_pid()})
    assert t.finished_cells() == {"a": done}
    marked, alive = t.fail_stale_runs(["a", "b", "c"], grace_s=60)
    assert marked == ["b"] and alive == ["c"]
    assert t.client.get_run(stale).info.status == "FAILED"
    assert "no heartbeat for 100 s" in t.client.get_run(stale).data.tags[contract.ERROR_TAG]
    assert t.client.get_run(live).info.status == "RUNNING"
    assert t.fail_stale_runs(["c"], grace_s=60, now=time.time() + 30) == ([], ["c"])  # still within the grace
    assert t.fail_stale_runs(["c"], grace_s=60, now=time.time() + 61) == (["c"], [])  # a minute without a beat
    # a run of an older version has no heartbeat tag: its start time counts
    old = t.start_cell(parent, "d", run_name="d", tags={}, params={})
    assert t.fail_stale_runs(["d"], grace_s=60) == ([], ["d"])
    assert t.fail_stale_runs(["d"], grace_s=60, now=time.time() + 61) == (["d"], [])
    assert t.fail_run(old, "x") == 0 and t.client.get_run(old).info.status == "FAILED"  # not RUNNING: untouched


def _create_together(uri: str, n: int = 2) -> list[str]:
    """n processes open the same store and the same parent run at once; each prints "experiment_id parent_id"."""
    code = ("import sys; from strbench import tracking; t = tracking.Tracker(sys.argv[1], 'exp'); "
            "print(t.experiment_id, t.parent_run('h', run_name='p', tags={}, params={'x': 1}, cell_hashes=['c']))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", code, uri], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(n)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and "Traceback" not in err, err
    return [o.strip() for o, _ in outs]


def test_a_fresh_store_is_created_once_by_processes_starting_together(tmp_path):
    """Two processes on a sqlite file that does not exist yet: one creates the schema under <db>.lock, the
    other waits; both get the same experiment and the same parent run (no schema traceback)."""
    uri = f"sqlite:///{tmp_path}/new/mlflow.db"
    a, b = _create_together(uri)
    assert a == b and len(a.split()) == 2
    parents = tracking.Tracker(uri, "exp")._search(f"tags.`{contract.ROLE_TAG}` = 'experiment'")
    assert len(parents) == 1 and (tmp_path / "new" / "mlflow.db.lock").exists()


def test_search_cell_runs_latest_parent_and_csv(tmp_path, uri):
    t = tracker(uri, tmp_path)
    p1 = t.parent_run("h1", run_name="p1", tags={}, params={}, cell_hashes=["a" * 64, "b" * 64])
    for h in ("a" * 64, "b" * 64):
        r = t.start_cell(p1, h, run_name=h[:3], tags={"strbench.case": h[0]}, params={})
        t.log_metrics(r, {"psnr": 20.0})
        d = tmp_path / f"art_{h[0]}"
        d.mkdir()
        pd.DataFrame({"image_id": [0, 1], "psnr": [19.0, 21.0]}).to_csv(d / "per_image.csv", index=False)
        t.log_artifacts(r, d)
        t.end(r, "FINISHED")
    t.end(p1, "FINISHED")
    # the experiment is changed: its new parent keeps cell a and adds c
    p2 = t.parent_run("h2", run_name="p2", tags={}, params={}, cell_hashes=["a" * 64, "c" * 64])
    r = t.start_cell(p2, "c" * 64, run_name="c", tags={"strbench.case": "c"}, params={})
    t.end(r, "FINISHED")
    latest = tracking.search_cell_runs(uri, "exp")
    assert sorted(latest["tags.strbench.case"]) == ["a", "c"]
    assert len(tracking.search_cell_runs(uri, "exp", latest_only=False)) == 3
    row = latest[latest["tags.strbench.case"] == "a"].iloc[0]
    assert row["metrics.psnr"] == 20.0 and row["status"] == "FINISHED"
    df = tracking.read_csv_artifact(uri, row["run_id"], "per_image.csv")
    assert list(df["psnr"]) == [19.0, 21.0]
    assert tracking.search_cell_runs(uri, "no-such-experiment").empty


def test_metric_buffer_logs_in_batches(tmp_path, uri):
    t = tracker(uri, tmp_path)
    r = t.start_cell(t.parent_run("h", run_name="p", tags={}, params={}, cell_hashes=[]), "x",
                     run_name="x", tags={}, params={})
    buf = tracking.MetricBuffer(t, r, every=10)
    for step in range(1, 26):
        buf.add("train/irsde_loss", 1.0 / step, step)
    assert len(buf.rows) == 5  # two batches of 10 were sent
    buf.flush()
    hist = t.client.get_metric_history(r, "train/irsde_loss")
    assert sorted(m.step for m in hist) == list(range(1, 26))


def test_search_experiment_runs_returns_every_finished_cell_and_every_parent(tmp_path, uri):
    from strbench import report

    t = tracker(uri, tmp_path)
    p1 = t.parent_run("h1", run_name="exp [cpu]", tags={"strbench.profile": "cpu"}, params={},
                      cell_hashes=["a" * 64, "b" * 64])
    for h in ("a" * 64, "b" * 64):
        r = t.start_cell(p1, h, run_name=h[:3], tags={"strbench.case": h[0]}, params={})
        t.end(r, "FINISHED")
    t.end(p1, "KILLED")  # an interrupted invocation: its finished cells still count
    p2 = t.parent_run("h2", run_name="exp", tags={"strbench.profile": ""}, params={}, cell_hashes=["a" * 64])
    again = t.start_cell(p2, "a" * 64, run_name="a again", tags={"strbench.case": "a"}, params={})
    t.end(again, "FINISHED")
    failed = t.start_cell(p2, "c" * 64, run_name="c", tags={"strbench.case": "c"}, params={})
    t.end(failed, "FAILED")
    cells, parents = tracking.search_experiment_runs(uri, "exp")
    assert len(cells) == 3 and set(cells.status) == {"FINISHED"}  # both runs of cell a, not the FAILED one
    assert set(parents.run_id) == {p1, p2} and set(parents["tags.strbench.profile"].fillna("")) == {"cpu", ""}
    sel = report.select_runs(cells, parents, experiment="exp")
    assert len(sel.runs) == 2 and again in set(sel.runs.run_id) and sel.replaced == 1
    assert set(report.select_runs(cells, parents, profile="cpu").runs.run_id) == set(sel.runs.run_id)
    assert tracking.search_experiment_runs(uri, "nope")[0].empty
    d = tmp_path / "grid"
    d.mkdir()
    (d / "samples.png").write_bytes(b"\x89PNG fake")
    t.log_artifacts(again, d)
    assert tracking.read_artifact_bytes(uri, again, "samples.png") == b"\x89PNG fake"
