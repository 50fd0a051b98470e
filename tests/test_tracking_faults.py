"""Tracking under faults, without a server: the outage bound (strbench.tracking.patience), orphaned RUNNING runs,
one claims folder per MLflow experiment, the parent's status computed from its cells, database URLs.
(The real server killed mid-run: tests/test_tracking_server.py.)"""
from __future__ import annotations

import time

import pytest
import requests

from helpers import migrated_db
from strbench import contract as K
from strbench import dburl, tracking
from strbench.errors import ConfigError
from strbench.experiment import claims
from strbench.experiment.run import RunSummary, end_parent
from strbench.tracking.patience import Patient, TrackingUnavailable, is_transient


class FlakyClient:
    """Fails `fails` times with `error`, then answers."""

    def __init__(self, fails: int, error: Exception):
        self.fails, self.error, self.calls = fails, error, 0

    def get_run(self, run_id):
        self.calls += 1
        if self.calls <= self.fails:
            raise self.error
        return f"run {run_id}"


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def patient(client, bound, said):
    clock = Clock()
    return Patient(client, "http://store", bound, say=said.append, sleep=clock.sleep, clock=clock), clock


def test_an_outage_within_the_bound_is_waited_out_and_said():
    said = []
    p, clock = patient(FlakyClient(3, requests.exceptions.ConnectionError("Connection refused")), 60, said)
    assert p.get_run("r1") == "run r1"
    assert clock.t == pytest.approx(6.0) and p.waited_s == pytest.approx(6.0) and not p.down
    assert "not answering" in said[0] and "answers again" in said[-1]


def test_an_outage_past_the_bound_raises_one_line_then_fails_fast_until_the_store_answers():
    said = []
    client = FlakyClient(100, requests.exceptions.ConnectionError("Max retries exceeded"))
    p, clock = patient(client, 5, said)
    with pytest.raises(TrackingUnavailable, match=r"tracking store http://store did not answer for 5 s "
                                                  r"\(tracking.outage_s; get_run: ConnectionError"):
        p.get_run("r1")
    assert p.down and clock.t == pytest.approx(5.0)
    calls = client.calls
    with pytest.raises(TrackingUnavailable):
        p.get_run("r2")
    assert client.calls == calls + 1 and clock.t == pytest.approx(5.0)  # one try, no waiting
    client.fails = 0
    assert p.get_run("r3") == "run r3" and not p.down


def test_an_error_the_store_answered_with_is_raised_at_once():
    said = []
    p, clock = patient(FlakyClient(1, ValueError("RESOURCE_ALREADY_EXISTS: run exists")), 60, said)
    with pytest.raises(ValueError, match="RESOURCE_ALREADY_EXISTS"):
        p.get_run("r")
    assert clock.t == 0 and said == []


@pytest.mark.parametrize("error, transient", [
    (requests.exceptions.ConnectionError("x"), True), (requests.exceptions.ReadTimeout("x"), True),
    (ConnectionRefusedError(111, "Connection refused"), True),
    (RuntimeError("API request to http://h/api failed with exception HTTPConnectionPool: Max retries exceeded"), True),
    (RuntimeError("503 Server Error: Service Unavailable"), True),
    (RuntimeError("INVALID_PARAMETER_VALUE: bad key"), False), (KeyError("x"), False)])
def test_transient_errors_are_lost_connections_only(error, transient):
    assert is_transient(error) is transient


@pytest.fixture
def uri(tmp_path):
    migrated_db(tmp_path)
    return f"sqlite:///{tmp_path}/mlflow.db"


def test_one_claims_folder_per_experiment_another_is_refused_in_one_line_unless_taking_over(tmp_path, uri):
    a = claims.Board(tmp_path / "cache-a" / "claims" / "k")
    b = claims.Board(tmp_path / "cache-b" / "claims" / "k")
    assert a.id != b.id and a.id == claims.Board(a.folder).id  # made once, kept in the folder
    t = tracking.Tracker(uri, "exp", board=a.id)
    assert t.client.get_experiment(t.experiment_id).tags[K.BOARD_TAG] == a.id
    tracking.Tracker(uri, "exp", board=a.id)  # the same folder: fine
    with pytest.raises(ConfigError) as e:
        tracking.Tracker(uri, "exp", board=b.id)
    msg = str(e.value)
    assert "\n" not in msg and "another claims folder" in msg and "claims.take_over=true" in msg
    t2 = tracking.Tracker(uri, "exp", board=b.id, take_over=True)
    assert t2.client.get_experiment(t2.experiment_id).tags[K.BOARD_TAG] == b.id
    with pytest.raises(ConfigError):
        tracking.Tracker(uri, "exp", board=a.id)


def test_a_running_run_claimed_through_this_folder_is_an_orphan_whatever_its_heartbeat(tmp_path, uri):
    board = claims.Board(tmp_path / "claims", grace=60, heartbeat=5)
    other = claims.Board(tmp_path / "other", grace=60, heartbeat=5)
    t = tracking.Tracker(uri, "exp")
    parent = t.parent_run("e", run_name="p", tags={}, params={}, cell_hashes=["a" * 64, "b" * 64])
    now = str(int(time.time() * 1000))
    mine = t.start_cell(parent, "a" * 64, run_name="a", params={},
                        tags={K.HEARTBEAT_TAG: now, K.BOARD_TAG: board.id})
    theirs = t.start_cell(parent, "b" * 64, run_name="b", params={},
                          tags={K.HEARTBEAT_TAG: now, K.BOARD_TAG: other.id})
    failed, live = t.fail_stale_runs(["a" * 64, "b" * 64], 60, board=board.id)
    assert failed == ["a" * 64] and live == ["b" * 64]
    assert t.client.get_run(mine).info.status == "FAILED"
    assert t.client.get_run(mine).data.tags[K.ERROR_TAG].startswith("stale: no claim holds this run")
    assert t.client.get_run(theirs).info.status == "RUNNING"  # another folder's live run: its heartbeat decides


class _Cell:
    def __init__(self, h, label):
        self.hash, self.label = h, label


def test_parent_status_comes_from_its_cells_and_a_clean_rerun_clears_the_old_error(tmp_path, uri):
    board = claims.Board(tmp_path / "claims", grace=60, heartbeat=5)
    t = tracking.Tracker(uri, "exp")
    cells = [_Cell("a" * 64, "A"), _Cell("b" * 64, "B")]
    parent = t.parent_run("e", run_name="p", tags={}, params={}, cell_hashes=[c.hash for c in cells])
    t.end(t.start_cell(parent, "a" * 64, run_name="A", tags={}, params={}), "FINISHED")
    t.end(t.start_cell(parent, "b" * 64, run_name="B", tags={}, params={}), "FAILED", error="boom")
    failed = RunSummary("exp", 2, failed=[("B", "b" * 64, "boom")])
    assert end_parent(t, parent, cells, board, failed) == "FAILED"
    assert t.client.get_run(parent).data.tags[K.ERROR_TAG] == "1 cell(s) failed: B"
    # another process holds a live claim on B: the parent stays open for it to close
    claim, _ = board.claim("b" * 64, "B")
    assert end_parent(t, parent, cells, board, RunSummary("exp", 2)) == "RUNNING"
    claim.release()
    # B finished by a later run: the parent is FINISHED and its stale error is gone
    t.parent_run("e", run_name="p", tags={}, params={}, cell_hashes=[c.hash for c in cells])
    t.end(t.start_cell(parent, "b" * 64, run_name="B", tags={}, params={}), "FINISHED")
    assert end_parent(t, parent, cells, board, RunSummary("exp", 2)) == "FINISHED"
    run = t.client.get_run(parent)
    assert run.info.status == "FINISHED" and K.ERROR_TAG not in run.data.tags


def test_a_bare_postgresql_url_gets_the_installed_driver_for_tracking_too(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda m, *a: object() if m == "psycopg2" else None if m == "psycopg" else real(m, *a))
    assert tracking.absolute_uri("postgresql://u:pw@h/db") == "postgresql+psycopg2://u:pw@h/db"
    assert tracking.absolute_uri("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert dburl.redact("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m in ("psycopg", "psycopg2") else real(m, *a))
    with pytest.raises(ConfigError, match="tracking.uri postgresql://u:\\*\\*\\*@h/db: PostgreSQL needs a driver"):
        tracking.absolute_uri("postgresql://u:secret@h/db")


def test_an_artifact_folder_is_honoured_for_every_kind_of_store(tmp_path, uri):
    t = tracking.Tracker(uri, "exp")  # not set: ./mlartifacts beside a local store
    assert t._artifact_uri(None).endswith("/mlartifacts")
    t.uri = "http://127.0.0.1:5000"  # a server: its own default unless given; a folder as a file:// URI
    assert t._artifact_uri(None) is None
    assert t._artifact_uri(str(tmp_path / "shared")) == (tmp_path / "shared").as_uri()
    assert t._artifact_uri("s3://bucket/x") == "s3://bucket/x"
