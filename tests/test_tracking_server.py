"""A real MLflow tracking server (``mlflow server`` on SQLite, and on PostgreSQL, on localhost) killed and restarted
mid-run.

One server, one shared cache folder, two tiny experiments (IR-SDE over two bins: 2 cells, one model trained
once). MLflow's own HTTP retries are switched off (MLFLOW_HTTP_REQUEST_MAX_RETRIES=0), so every outage is longer
than MLflow's retry budget, as in the issue that asked for this test.
- `wait`: the run is held just before its first cell logs its metrics, the server is killed, the run goes on
  against the dead server, and the server comes back 5 s later: strbench waits (tracking.outage_s = 600 s), says
  so, and the sweep finishes: every cell FINISHED once, no run left RUNNING, the parent FINISHED.
- `stop`: the same with tracking.outage_s = 2 s: the sweep stops in one line (no traceback) naming the store,
  exit 1; the server restarts and the same command, run at once (well within the 60 s claim grace), fails the
  orphaned RUNNING cell run (no claim holds it), runs what is left, and ends with every cell FINISHED once, no
  run RUNNING, the parent FINISHED without an error tag.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from strbench import contract as K

ROOT = Path(__file__).resolve().parents[1]
HOOK = Path(__file__).resolve().parent / "fault_hook"

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, folder: Path, port: int, backend: str):
        self.folder, self.port, self.backend, self.proc = folder, port, backend, None
        self.uri = f"http://127.0.0.1:{port}"

    def start(self, timeout: float = 240.0) -> None:
        log = open(self.folder / "server.log", "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend,
             "--artifacts-destination", str(self.folder / "server-artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            cwd=self.folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.time()
        while time.time() - t0 < timeout:
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
            if self.proc.poll() is not None:
                break
        raise RuntimeError(f"mlflow server did not start: {(self.folder / 'server.log').read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    """`mlflow server` on a SQLite file, or on a throwaway PostgreSQL (conftest's pg_url; skipped with the reason
    where Debian's server binaries are missing)."""
    folder = tmp_path_factory.mktemp(f"server-{request.param}")
    if request.param == "sqlite":
        backend = f"sqlite:///{folder}/server.db"
    else:  # the driver named: a bare postgresql:// makes SQLAlchemy 2.1 look for psycopg 3 (README's recipe)
        backend = request.getfixturevalue("pg_url").replace("postgresql://", "postgresql+psycopg2://", 1)
    srv = Server(folder, _free_port(), backend)
    srv.start()
    yield srv
    srv.kill()


def _experiment(name: str, uri: str, outage_s: float) -> dict:
    return {
        "name": name,
        "dataset": {"type": "builtin", "size": 16, "train_limit": 8},
        "masks": {"bins": [[0.1, 0.3], [0.3, 0.5]], "per_bin": 2, "train": {"count": 4}},
        "schedule": {"texture": {"T": 6}},
        "methods": {"IR-SDE": {"method": "irsde"}},
        "nets": {"unet": {"nf": 8, "ch_mult": [1, 2]}},
        "train": {"steps": 6, "batch": 2, "log_every": 2, "checkpoint_every": 3, "workers": 0},
        "sample": {"batch": 2},
        "metrics": {"fid": False, "kid": False, "bootstrap": 20, "grid_images": 2, "strip_frames": 2},
        "device": "cpu",
        "floors": False,
        "cache_dir": "cache",
        "tracking": {"uri": uri, "outage_s": outage_s},
    }


def _start(folder: Path, config: str, hold: str = "") -> subprocess.Popen:
    markers = folder / "markers"
    markers.mkdir(exist_ok=True)
    for m in markers.iterdir():
        m.unlink()
    env = {**os.environ, "PYTHONPATH": f"{HOOK}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1",
           "STRBENCH_TEST_MARKERS": str(markers), "STRBENCH_TEST_HOLD": hold,
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    return subprocess.Popen([sys.executable, "-m", "strbench.cli", "run", config], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_marker(folder: Path, proc: subprocess.Popen, event: str, timeout: float = 600.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if any(p.name.split("-", 1)[1] == event for p in (folder / "markers").iterdir()):
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {event}: {proc.stdout.read()}\n{proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError(f"no {event} within {timeout} s")


def _runs(uri: str, name: str):
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[name])


def _check_complete(uri: str, name: str) -> None:
    df = _runs(uri, name)
    role, status = df[K.column(K.ROLE_TAG)], df["status"]
    cells = df[role == K.Kind.CELL]
    finished = cells[cells["status"] == "FINISHED"]
    assert sorted(finished[K.column(K.MASK_BIN_TAG)]) == ["10-30%", "30-50%"]  # every cell FINISHED once
    assert not (status == "RUNNING").any(), df[["status", K.column(K.ROLE_TAG)]]
    parent = df[role == K.Kind.EXPERIMENT]
    assert list(parent["status"]) == ["FINISHED"]
    err = K.column(K.ERROR_TAG)
    assert err not in parent or parent[err].isna().all(), parent[err]
    return df


def test_server_outage_is_waited_out_or_stops_in_one_line_and_a_rerun_finishes(tmp_path, server):
    for name, outage in (("wait", 600), ("stop", 2)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(_experiment(name, server.uri, outage), sort_keys=False))

    # 1. an outage shorter than tracking.outage_s: waited out, the sweep finishes
    proc = _start(tmp_path, "wait.yaml", hold="log_metrics")
    _wait_marker(tmp_path, proc, "log_metrics")
    server.kill()
    (tmp_path / "markers" / "release-log_metrics").touch()
    time.sleep(5)
    server.start()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    assert "not answering" in out + err and "answers again" in out + err
    _check_complete(server.uri, "wait")

    # 2. an outage longer than tracking.outage_s: the sweep stops in one line; a re-run at once finishes
    proc = _start(tmp_path, "stop.yaml", hold="log_metrics")
    _wait_marker(tmp_path, proc, "log_metrics")
    server.kill()
    (tmp_path / "markers" / "release-log_metrics").touch()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, out + err
    assert "Traceback" not in err, err
    stopped = [ln for ln in err.splitlines() if ln.startswith("strbench: stopped:")]
    assert len(stopped) == 1 and server.uri in stopped[0] and "tracking.outage_s" in stopped[0], err
    server.start()
    proc = _start(tmp_path, "stop.yaml")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    df = _check_complete(server.uri, "stop")
    cells = df[df[K.column(K.ROLE_TAG)] == K.Kind.CELL]
    orphans = cells[cells["status"] == "FAILED"]
    assert len(orphans) == 1, cells[["status", K.column(K.ERROR_TAG)]]
    assert orphans[K.column(K.ERROR_TAG)].iloc[0].startswith("stale: no claim holds this run")
