"""strbench tune on PostgreSQL: a throwaway cluster on loopback, two worker processes on one study.

Skipped (with the reason) when the PostgreSQL server binaries or psycopg2 are missing. As root the
server runs as the `postgres` user (runuser); otherwise as the current user.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tune_helpers import HB, load, run_two_workers

from strbench import tune

PG_BIN = Path(os.environ.get("STRBENCH_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as the postgres user")
    return [runuser, "-u", "postgres", "--", *cmd]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pg_url():
    if not (PG_BIN / "initdb").is_file() or not (PG_BIN / "pg_ctl").is_file():
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN} (Debian: apt install postgresql; "
                    f"or set STRBENCH_PG_BIN)")
    pytest.importorskip("psycopg2", reason="psycopg2 missing (pip install psycopg2-binary, the dev extra)")
    if os.geteuid() == 0:
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no `postgres` user exists to run the server")
    root = Path(tempfile.mkdtemp(prefix="strbench-pg-"))
    os.chmod(root, 0o755)
    if os.geteuid() == 0:
        os.chown(root, pw.pw_uid, pw.pw_gid)
    data, port = root / "data", _free_port()
    run = dict(check=True, capture_output=True, text=True, timeout=120)
    try:
        subprocess.run(_as_server_user([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                                        "-E", "UTF8", "--no-sync"]), **run)
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        subprocess.run(_as_server_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts,
                                        "-l", str(root / "server.log"), "-w", "-t", "60", "start"]), **run)
    except subprocess.CalledProcessError as e:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start a throwaway PostgreSQL: {e.stderr or e.stdout}\n{log}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"  # psycopg2 driver picked by tune
    finally:
        subprocess.run(_as_server_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_on_postgresql(tmp_path, pg_url):
    run_two_workers(tmp_path, pg_url)  # 2 x 3 trials: none lost, duplicated or left RUNNING
    study = load(tune.load_spec(tmp_path / "tune.yaml"), pg_url)
    assert study._storage.get_heartbeat_interval() == HB  # RDB heartbeats are on
