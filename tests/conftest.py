"""Fixtures shared by the test modules (plain helper functions are in ``helpers.py``).

``one_thread``: torch single-threaded for a whole module, restored afterwards. It is opt-in, per module:
``pytestmark = pytest.mark.usefixtures("one_thread")``. Tiny tensors gain nothing from threads, and on a
shared 2-core machine OpenMP spinning makes 2 threads several times slower than 1; modules that do not ask
for it keep torch's default thread count (their numbers and timings are unchanged).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def one_thread():
    """torch.set_num_threads(1) for the module that uses it (restored after its last test)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True, scope="session")
def empty_torch_hub_cache(tmp_path_factory):
    """LPIPS looks for its backbone in torch.hub's cache ($TORCH_HOME/hub/checkpoints): the suite runs with an
    empty one (and no STRBENCH_LPIPS_WEIGHTS), so no result depends on what a machine has cached; tests that need
    a backbone bring a fixture file (tests/test_lpips.py). Set in os.environ so subprocesses see it too."""
    import os

    keys = ("TORCH_HOME", "STRBENCH_LPIPS_WEIGHTS")
    old = {k: os.environ.get(k) for k in keys}
    os.environ["TORCH_HOME"] = str(tmp_path_factory.mktemp("torch_home"))
    os.environ.pop("STRBENCH_LPIPS_WEIGHTS", None)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# ------------------------------------------------------------------ PostgreSQL on loopback
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
    """A throwaway PostgreSQL cluster on loopback for one test module (Debian's server binaries; as root the server
    runs as the `postgres` user through runuser). Skipped with the reason when binaries or psycopg2 are missing."""
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


def pytest_collection_modifyitems(config, items):
    """The long end-to-end modules (marked slow) first: under `make test` (pytest-xdist, -n 2 --dist loadfile) each
    module runs whole on one worker, and starting the longest first keeps one of them from being the last tail."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
