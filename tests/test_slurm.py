"""The Slurm launcher against a real single-node Slurm (Debian's slurm-wlm 22.05 with munge, slurmdbd and MariaDB,
so that `sacct` answers as submitit needs; started on localhost by tests/slurm_cluster.py, `.ci/engines.sh`
installs the packages). One tiny experiment (IR-SDE and the biharmonic floor on one bin: 2 cells, 2 model
groups, one model trained; T = 6, 6 training steps), the launcher's defaults plus `--slurm.partition debug`:
- first launch, no option but the partition: 2 jobs (one at a time: each takes the small node's 2 CPUs), every
  cell FINISHED once, the model trained once, the job logs show progress;
- the same command again: "nothing to submit", no job;
- 99 GPUs: refused in one line, exit 2, no job;
- `--set seed=1 --cells <its IR-SDE cell>`: one job (the floor's group is not asked for), cancelled with scancel
  half way through sampling: the launcher names the job, its state, its cells, its log and the cause (exit 1);
  meanwhile a launch of seed 2's cell waits behind it: reported PENDING with Slurm's reason ("Resources"), then
  cancelled before it ran (no result: its state comes from sacct);
- the same command again, sent USR2 (submitit's time-limit warning) at the same point: the cell is KILLED and
  its claim released, submitit requeues the job, which finishes the cell: it is FINISHED once (its two
  interrupted runs KILLED), every model's training FINISHED once, the floor of seed 1 never run; then
  "nothing to submit".
"""
from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from slurm_cluster import PARTITION, SlurmCluster, missing

ROOT = Path(__file__).resolve().parents[1]
HOOK = Path(__file__).resolve().parent / "fault_hook"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = missing()
    if why and os.name == "posix" and os.geteuid() == 0:  # root: the repository's own script installs them
        r = subprocess.run(["bash", str(ROOT / ".ci" / "engines.sh")], capture_output=True, text=True, timeout=1800)
        why = missing() and f"{missing()}; .ci/engines.sh said: {(r.stdout + r.stderr).strip()[-400:]}"
    if why:
        pytest.skip(f"no Slurm cluster can be started here: {why}")
    c = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()
    except Exception:
        c.stop()
        raise
    yield c
    c.stop()


TINY = {
    "name": "slurmtiny",
    "dataset": {"type": "builtin", "size": 16, "train_limit": 8},
    "masks": {"bins": [[0.1, 0.3]], "per_bin": 2, "train": {"count": 4}},
    "schedule": {"texture": {"T": 6}},
    # the biharmonic floor as a case of its own, the other floors off: 2 cells, 2 model groups
    "methods": {"IR-SDE": {"method": "irsde"}, "biharmonic": {"method": "biharmonic"}}, "floors": False,
    "nets": {"unet": {"nf": 8, "ch_mult": [1, 2]}},
    "train": {"steps": 6, "batch": 2, "log_every": 2, "checkpoint_every": 3, "workers": 0},
    "sample": {"batch": 2},
    "metrics": {"fid": False, "kid": False, "bootstrap": 20, "grid_images": 2, "strip_frames": 2},
    "device": "auto",
    "cache_dir": "cache",
}


def _cmd(*extra: str) -> list[str]:
    return [sys.executable, "-m", "strbench.cli", "run", "tiny.yaml", "--launcher", "slurm",
            "--slurm.partition", PARTITION, *extra]


def _env(cluster) -> dict:
    return {**os.environ, **cluster.env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _run(cluster, folder: Path, *extra: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(*extra), cwd=folder, env=_env(cluster), capture_output=True, text=True, timeout=timeout)


def _runs(folder: Path) -> list[tuple]:
    """(role, status, label, seed) of every MLflow run of the experiment."""
    c = sqlite3.connect(folder / "mlflow.db")
    rows = c.execute("""select r.run_uuid, r.status, r.name from runs r join experiments e
                        on e.experiment_id = r.experiment_id where e.name = 'slurmtiny'""").fetchall()
    tags = {}
    for run, key, value in c.execute("select run_uuid, key, value from tags"):
        tags.setdefault(run, {})[key] = value
    c.close()
    return [(tags[r].get("strbench.role"), status, name) for r, status, name in rows]


def _held_job(cluster, markers: Path, p: subprocess.Popen, before: list) -> str:
    """The new job, once its strbench holds half way through sampling (tests/fault_hook)."""
    t0 = time.time()
    while time.time() - t0 < 300 and p.poll() is None:
        if any(m.name.endswith("-sample-irsde") for m in markers.iterdir()):
            new = [i for i in _jobs(cluster) if i not in before]
            assert len(new) <= 1, new
            if new:  # sacct (slurmdbd) may list a running job a few seconds late
                return new[0]
        time.sleep(0.2)
    raise AssertionError(f"no job held: {p.communicate()}")


def _jobs(cluster) -> list[str]:
    return cluster.client("sacct", "-n", "-X", "-P", "-o", "JobID").split()


def test_launcher_on_a_real_slurm(cluster, tmp_path):
    t_start = time.time()
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))

    # 1. the defaults (plus the partition): one job per model group, every cell FINISHED once, one training
    r = _run(cluster, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr + cluster.tail()
    submitted = re.search(r"submitted 2 job\(s\) \(slurm\).*: (\d+), (\d+);", r.stdout)
    assert submitted, r.stdout
    ids = list(submitted.groups())
    assert "2 job(s) submitted, all ended well" in r.stdout
    states = dict(x.split("|") for x in cluster.client("sacct", "-n", "-X", "-P", "-o", "JobID,State").split())
    assert [states[i] for i in ids] == ["COMPLETED", "COMPLETED"]
    runs = _runs(tmp_path)
    assert sorted((s, n) for role, s, n in runs if role == "cell") == [
        ("FINISHED", "IR-SDE 10-30% seed=0"), ("FINISHED", "biharmonic 10-30% seed=0")]
    assert [s for role, s, _ in runs if role == "training"] == ["FINISHED"]
    assert [s for role, s, _ in runs if role == "experiment"] == ["FINISHED"]
    log = tmp_path / "cache" / "jobs" / ids[0] / f"{ids[0]}_0_log.out"
    assert "train irsde model" in log.read_text() and "[1/1] IR-SDE 10-30% seed=0: PSNR" in log.read_text()
    t_first, first = time.time() - t_start, r.stdout.strip()

    # 2. again: nothing to submit
    n_jobs = len(_jobs(cluster))
    r = _run(cluster, tmp_path)
    assert r.returncode == 0 and "nothing to submit" in r.stdout, r.stdout + r.stderr
    nothing = r.stdout.strip()
    assert len(_jobs(cluster)) == n_jobs

    # 3. an impossible request: one line, exit 2, nothing submitted
    r = _run(cluster, tmp_path, "--slurm.gpus_per_node", "99")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "sbatch refuses the job" in r.stderr and "--gpus-per-node=99" in r.stderr
    refused = r.stderr.strip()
    assert len(_jobs(cluster)) == n_jobs

    # 4. seed 1, its IR-SDE cell only (--cells), held half way through sampling (tests/fault_hook) and cancelled
    from strbench import config, experiment

    exp = config.load_experiment(str(tmp_path / "tiny.yaml"), overrides=["seed=1"])
    cell = next(c for c in experiment.expand(exp) if c.axes["case"] == "IR-SDE")
    again = ("--set", "seed=1", "--cells", cell.short)
    markers = tmp_path / "markers"
    markers.mkdir()
    hold = {"PYTHONPATH": f"{HOOK}{os.pathsep}{ROOT}", "STRBENCH_TEST_MARKERS": str(markers),
            "STRBENCH_TEST_HOLD": "sample-irsde"}
    p = subprocess.Popen(_cmd(*again), cwd=tmp_path, env={**_env(cluster), **hold}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    job = _held_job(cluster, markers, p, ids)
    # meanwhile seed 2's IR-SDE cell waits for the node: reported PENDING with Slurm's reason, then cancelled
    exp2 = config.load_experiment(str(tmp_path / "tiny.yaml"), overrides=["seed=2"])
    cell2 = next(c for c in experiment.expand(exp2) if c.axes["case"] == "IR-SDE")
    with open(tmp_path / "pending.err", "w") as err2:
        q = subprocess.Popen(_cmd("--set", "seed=2", "--cells", cell2.short, "--slurm.pending_report_min", "0.05"),
                             cwd=tmp_path, env=_env(cluster), stdout=subprocess.PIPE, stderr=err2, text=True)
        t0 = time.time()
        while time.time() - t0 < 120 and q.poll() is None and \
                "still PENDING" not in (tmp_path / "pending.err").read_text():
            time.sleep(0.3)
        # the job the launcher reports (sacct, through slurmdbd, may list a new job some seconds late)
        pending = re.findall(r"job (\d+) still PENDING", (tmp_path / "pending.err").read_text())[:1]
        assert len(pending) == 1 and pending[0] not in ids + [job], \
            (pending, q.poll(), (tmp_path / "pending.err").read_text()[-1500:])
        assert pending[0] in cluster.client("squeue", "-h", "-o", "%i").split()
        cluster.client("scancel", pending[0])
        q.communicate(timeout=120)
    said = (tmp_path / "pending.err").read_text()
    assert re.search(rf"job {pending[0]} still PENDING after \d+ s: Slurm's reason: Resources \(cells: IR-SDE "
                     r"10-30% seed=2\)", said), said
    assert q.returncode == 1, said  # it never ran, so it left no result: its state comes from sacct
    assert f"job {pending[0]} CANCELLED (cells: IR-SDE 10-30% seed=2): never started (no log)" in said, said
    cluster.client("scancel", job)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 1, out + err
    assert "1 cells (--cells): 0 finished before; 1 job(s) submitted; 1 failed" in out, out
    failed = [x for x in err.splitlines() if x.startswith(f"strbench: job {job} ")]
    assert len(failed) == 1 and "CANCELLED" in failed[0] and "(cells: IR-SDE 10-30% seed=1)" in failed[0], err
    assert f"its log: {tmp_path / 'cache' / 'jobs' / job / f'{job}_0_log.out'}" in failed[0]
    assert "SIGTERM" in failed[0]  # the cause, not a log path

    # 5. the same command again, this time warned of its time limit (USR2, as submitit's --signal sends it):
    # strbench stops (cell KILLED, claim released), submitit requeues the job, and the job finishes the cell
    for m in markers.iterdir():
        m.unlink()
    p = subprocess.Popen(_cmd(*again), cwd=tmp_path, env={**_env(cluster), **hold}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    job2 = _held_job(cluster, markers, p, ids + [job] + pending)
    cluster.client("scancel", "--signal=USR2", job2)
    (markers / "release-sample-irsde").touch()  # the requeued job passes
    t0 = time.time()
    while time.time() - t0 < 120 and "PENDING" not in cluster.client("squeue", "-h", "-j", job2, "-o", "%T"):
        time.sleep(0.3)
    cluster.client("scontrol", "update", f"JobId={job2}", "StartTime=now")  # Slurm holds a requeued job ~2 min
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, out + err
    assert "1 cells (--cells): 0 finished before; 1 job(s) submitted, all ended well" in out, out
    log = (tmp_path / "cache" / "jobs" / job2 / f"{job2}_0_log.out").read_text()
    assert "Caught signal SIGUSR2" in log and f"Requeued job {job2}" in log, log
    cells1 = sorted(s for role, s, n in _runs(tmp_path) if role == "cell" and n.endswith("seed=1"))
    assert cells1 == ["FINISHED", "KILLED", "KILLED"], _runs(tmp_path)  # the floor of seed 1 was not asked for
    assert sorted(s for role, s, _ in _runs(tmp_path) if role == "training") == ["FINISHED", "FINISHED"]
    assert not [x for x in _runs(tmp_path) if x[1] == "RUNNING"]
    r = _run(cluster, tmp_path, *again)
    assert "nothing to submit" in r.stdout, r.stdout + r.stderr
    shown = [first, nothing, refused, said.strip(), failed[0], out.strip(), r.stdout.strip()]
    print(f"\nslurm test: first launch {t_first:.0f} s, all {time.time() - t_start:.0f} s; jobs {_jobs(cluster)}\n"
          + "\n".join(shown))
