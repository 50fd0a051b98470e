"""strbench tune on PostgreSQL: a throwaway cluster on loopback (the `pg_url` fixture of tests/conftest.py), two worker
processes on one study. Skipped (with the reason) when the PostgreSQL server binaries or psycopg2 are missing."""
from __future__ import annotations

from tune_helpers import HB, load, run_two_workers

from strbench import tune


def test_two_workers_on_postgresql(tmp_path, pg_url):
    run_two_workers(tmp_path, pg_url)  # 2 x 3 trials: none lost, duplicated or left RUNNING
    study = load(tune.load_spec(tmp_path / "tune.yaml"), pg_url)
    assert study._storage.get_heartbeat_interval() == HB  # RDB heartbeats are on
