"""Launchers: --slurm.* options are checked and become submitit parameters whose defaults follow the experiment;
a job's outcome is told honestly (its function raises, the launcher names job, cells, log and cause); USR2 is
handled as SIGTERM and requeues through submitit's checkpoint; submitit's local executor runs one job per group
of cells that share models and still has work, all into one tracking store. The real scheduler: test_slurm.py."""
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from strbench import cli
from strbench.errors import ConfigError
from strbench.experiment import launch as L
from strbench.experiment.launch import NodeShape, check_slurm_options, slurm_parameters, split_slurm_args


def test_slurm_options_become_submitit_parameters():
    rest, opts = split_slurm_args(["run", "x.yaml", "--slurm.partition", "gpu", "--slurm.gpus_per_node=4",
                                   "--slurm.timeout_min", "90", "--slurm.exclusive", "true", "-q"])
    assert rest == ["run", "x.yaml", "-q"] and opts == {"partition": "gpu", "gpus_per_node": 4, "timeout_min": 90,
                                                          "exclusive": True}
    p = slurm_parameters(check_slurm_options(opts))
    assert p["gpus_per_node"] == 4 and p["timeout_min"] == 90 and p["slurm_partition"] == "gpu"
    assert p["slurm_additional_parameters"] == {"exclusive": True} and p["tasks_per_node"] == 1  # any sbatch option
    with pytest.raises(ConfigError, match="give a value"):
        split_slurm_args(["--slurm.partition"])


SMALL = NodeShape(cpus=2, mem_mb=24105, gpus=0)  # this machine's `slurmd -C`
GPU_NODE = NodeShape(cpus=64, mem_mb=512000, gpus=4)


@pytest.mark.parametrize("device, shape, nproc, want", [
    ("cpu", SMALL, None, (0, 2, 23)),  # a small CPU node: no GPU, its 2 CPUs, its memory less a little
    ("auto", SMALL, None, (0, 2, 23)),  # auto on a CPU partition: no GPU
    ("auto", GPU_NODE, None, (1, 8, 32)),  # auto on a GPU partition: one GPU, 8 CPUs and 32 GB per GPU
    ("cuda", GPU_NODE, 4, (4, 32, 128)),  # --nproc 4: a GPU per rank
    ("cuda", None, None, (1, 8, 32)),  # sinfo could not say: the GPU-node defaults
    ("cpu", NodeShape(cpus=16, mem_mb=1, gpus=0), None, (0, 8, None)),  # Slurm told no memory: none asked
])
def test_resource_defaults_follow_the_experiment(device, shape, nproc, want):
    p = slurm_parameters({}, device=device, shape=shape, nproc=nproc)
    assert (p["gpus_per_node"], p["cpus_per_task"], p.get("mem_gb")) == want
    assert p["timeout_min"] == 240 and p["nodes"] == 1 and p["stderr_to_stdout"] is True
    mine = slurm_parameters(check_slurm_options({"gpus_per_node": 2, "cpus_per_task": 3, "mem_gb": 5.5}),
                            device=device, shape=shape)
    assert (mine["gpus_per_node"], mine["cpus_per_task"], mine["mem_gb"]) == (2, 3, 5.5)  # the user's win


@pytest.mark.parametrize("opts, says", [
    ({"gpus_per_node": -1}, "--slurm.gpus_per_node -1: give a whole number >= 0"),
    ({"cpus_per_task": "many"}, "--slurm.cpus_per_task 'many': give a whole number >= 1"),
    ({"mem_gb": True}, "--slurm.mem_gb True: give a number"),
    ({"nodes": 2}, "--slurm.nodes 2: each job is one torchrun on one node"),
    ({"mem": "4G"}, "--slurm.mem: the launcher writes this sbatch option itself; give --slurm.mem_gb instead"),
    ({"time": 30}, "give --slurm.timeout_min instead"),
    ({"partition": None}, "--slurm.partition: give a value"),
    ({"Partition": "x"}, "--slurm.Partition: not an option name"),
])
def test_bad_slurm_options_are_refused_in_one_line(tmp_path, monkeypatch, capsys, opts, says):
    with pytest.raises(ConfigError, match=None) as e:
        check_slurm_options(opts)
    assert says in str(e.value) and "\n" not in str(e.value)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.yaml").write_text("name: x\n")
    argv = [x for k, v in opts.items() for x in (f"--slurm.{k}", "" if v is None else str(v))]
    assert cli.main(["run", "x.yaml", "--launcher", "slurm", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("strbench: error: --slurm.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.yaml"]  # nothing created


def test_slurm_launcher_without_slurm_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no srun, sbatch, sacct: not a Slurm node
    (tmp_path / "x.yaml").write_text("name: x\n")
    assert cli.main(["run", "x.yaml", "--launcher", "slurm"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sbatch, srun, squeue, sacct, scancel not on PATH" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.yaml"]


def test_exit_cause_is_strbench_own_words():
    said = ["strbench: cell failed: IR-SDE 10-30% seed=0 [abc]: RuntimeError: boom",
            "strbench: 1 of 2 cells failed; fix the cause and run the same command again"]
    assert L.exit_cause(1, said) == "strbench exited with status 1: cell failed: IR-SDE 10-30% seed=0 [abc]: " \
                                    "RuntimeError: boom"
    assert L.exit_cause(2, ["strbench: error: x.yaml: no such file"]) == \
        "strbench exited with status 2: error: x.yaml: no such file"
    assert L.exit_cause(-9, []) == "strbench was killed by SIGKILL"
    assert L.exit_cause(130, ["strbench: interrupted"]).startswith("strbench was interrupted (scancel")


def test_a_job_whose_strbench_fails_raises(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    with pytest.raises(L.JobFailed, match=r"strbench exited with status 2: error: .*missing.yaml"):
        L.StrbenchJob({}, ["run", "missing.yaml"])()  # submitit records the job FAILED, not ('success', 2)


def test_checkpoint_stops_strbench_and_hands_submitit_the_same_job():
    job = L.StrbenchJob({"STRBENCH_X": "1"}, ["run", "x.yaml", "--cells", "abc"])
    job._proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    again = job.checkpoint()  # what submitit calls on USR2 (time limit, preemption) before it requeues
    assert job._proc.returncode == -signal.SIGTERM  # strbench got SIGTERM: cells KILLED, claims released
    again = pickle.loads(pickle.dumps(again))  # submitit pickles it for the requeued job
    assert isinstance(again.function, L.StrbenchJob) and again.function.argv == job.argv
    assert again.function.env == {"STRBENCH_X": "1"} and again.function._proc is None


@pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="POSIX signals")
def test_usr2_interrupts_a_run_like_sigterm_once():
    from strbench.experiment.run import _sigterm_as_interrupt

    for sig in (signal.SIGUSR2, signal.SIGTERM):
        with pytest.raises(KeyboardInterrupt, match=signal.Signals(sig).name):
            with _sigterm_as_interrupt():
                try:
                    os.kill(os.getpid(), sig)
                    for _ in range(100):
                        pass
                finally:  # the cleanup a first signal started is not broken by a second one
                    os.kill(os.getpid(), signal.SIGTERM)
                    os.kill(os.getpid(), signal.SIGUSR2)
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL


class FakeJob:
    """Listed by squeue for `polls` polls (or until cancelled); then sacct (done) says it ended."""

    paths = type("P", (), {"result_pickle": Path("/nonexistent/result.pkl")})()  # no result while listed

    def __init__(self, job_id, polls):
        self.job_id, self.polls, self.cancelled = job_id, polls, False

    @property
    def listed(self) -> bool:
        self.polls -= 1
        return self.polls > 0 and not self.cancelled

    def done(self, force_check=False):
        return True

    def cancel(self, check=True):
        self.cancelled = True


class Cell:
    def __init__(self, label):
        self.label = label


def test_pending_jobs_are_reported_with_slurms_reason(monkeypatch):
    jobs = [FakeJob("11", 3), FakeJob("12", 50)]
    queue = {"11": ("PENDING", "Resources"), "12": ("PENDING", "PartitionConfig")}
    by_id = {j.job_id: j for j in jobs}
    monkeypatch.setattr(L, "_squeue", lambda ids: {i: queue[i] for i in ids if by_id[i].listed})
    monkeypatch.setattr(L, "job_outcome", lambda j, cells: L.JobOutcome(j.job_id, "CANCELLED", cells, Path("log"),
                                                                        "cancelled") if j.cancelled else None)
    said = []
    failed = L.wait_jobs(jobs, [[Cell("A 10-30%")], [Cell("B 10-30%")]], bound_s=0, say=said.append, poll_s=0.001)
    assert [o.job_id for o in failed] == ["12"] and jobs[1].cancelled and not jobs[0].cancelled
    assert any(m.startswith("job 11 still PENDING after 0 s: Slurm's reason: Resources (cells: A 10-30%)")
               for m in said), said
    assert any(m.startswith("job 12 cannot start: Slurm says PartitionConfig") for m in said), said
    assert failed[0].line() == "job 12 CANCELLED (cells: B 10-30%): cancelled; its log: log"


def test_a_job_squeue_still_lists_is_not_over_whatever_sacct_says(monkeypatch, tmp_path):
    """A requeued job (USR2 before its time limit) stays in squeue, PENDING, while sacct's record of its first run
    can read CANCELLED: the launcher waits for it to leave the queue, or for its result."""
    class Requeued(FakeJob):
        paths = type("P", (), {"result_pickle": tmp_path / "13_result.pkl"})()

        def done(self, force_check=False):  # sacct: the first run's record, over already
            return True

    job = Requeued("13", 5)
    polled = []

    def squeue(ids):
        polled.append(1)
        if len(polled) == 4:  # the requeued run ends and writes its result while squeue still lists it
            job.paths.result_pickle.write_bytes(b"")
        return {"13": ("PENDING", "BeginTime")}

    monkeypatch.setattr(L, "_squeue", squeue)
    monkeypatch.setattr(L, "job_outcome", lambda j, cells: None)
    assert L.wait_jobs([job], [[Cell("A 10-30%")]], bound_s=-1, say=lambda m: None, poll_s=0.001) == []
    assert len(polled) == 4  # not done at the first poll (sacct's CANCELLED), done once the result is there


def test_a_failed_jobs_cause_is_its_exception_not_a_log_path(tmp_path):
    import submitit

    class Done(FakeJob):
        paths = type("P", (), {"stdout": tmp_path / "12_0_log.out"})()

        def result(self):
            raise submitit.core.utils.FailedJobError(
                "Job (task=0) failed during processing with trace:\n----------------------\nTraceback ...\n"
                "strbench.experiment.launch.JobFailed: strbench exited with status 1: cell failed: A [abc]: boom\n"
                "----------------------\nYou can check full logs with 'job.stderr(0)' and 'job.stdout(0)'or at "
                f"paths:\n  - {tmp_path}/12_0_log.err\n  - {tmp_path}/12_0_log.out")

    o = L.job_outcome(Done("12", 0), ["A 10-30%"])
    assert o.cause == "strbench exited with status 1: cell failed: A [abc]: boom" and o.state == "FAILED"
    assert o.log == tmp_path / "12_0_log.out"


def test_slurm_options_without_the_slurm_launcher_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.yaml").write_text("name: x\n")
    assert cli.main(["run", "x.yaml", "--slurm.partition", "gpu"]) == 2
    assert "need --launcher slurm" in capsys.readouterr().err


@pytest.mark.slow
def test_submitit_local_runs_two_cell_groups_into_one_store(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    cfg = {"name": "jobs", "dataset": {"type": "builtin", "size": 16}, "masks": {"bins": [[0.1, 0.3], [0.3, 0.5]],
           "per_bin": 2}, "schedule": {"texture": {"T": 3}}, "nets": {"arch": "authors", "preset": "tiny"},
           "models": {"irsde": "random:0"}, "floors": False,  # IR-SDE and one floor (biharmonic): 2 model groups
           "methods": {"IR-SDE": {"method": "irsde"}, "biharmonic": {"method": "biharmonic"}},
           "sample": {"batch": 2}, "metrics": {"fid": False, "kid": False, "bootstrap": 0}, "device": "cpu"}
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(cfg))
    from strbench import config, experiment

    floor = [c.short for c in experiment.expand(config.load_experiment("x.yaml")) if c.axes["case"] == "biharmonic"]
    assert cli.main(["run", "x.yaml", "--launcher", "submitit-local", "--cells", ",".join(floor)]) == 0  # 1 job
    assert cli.main(["run", "x.yaml", "--launcher", "submitit-local"]) == 0  # the floor's group is not submitted
    c = sqlite3.connect(tmp_path / "mlflow.db")
    rows = c.execute("""select t.value, r.status from runs r join tags t on t.run_uuid = r.run_uuid
                        and t.key = 'strbench.case'""").fetchall()
    assert sorted(rows) == [("IR-SDE", "FINISHED")] * 2 + [("biharmonic", "FINISHED")] * 2
    jobs = [p for p in (tmp_path / ".strbench" / "jobs").iterdir() if p.is_dir() and p.name.isdigit()]
    assert len(jobs) == 2  # one job per model group: the network-free floor's (--cells), then the IR-SDE model's
    logs = "".join(p.read_text() for p in (tmp_path / ".strbench" / "jobs").rglob("*_log.*"))
    assert "[1/2] IR-SDE" in logs and "[2/2] IR-SDE" in logs  # jobs run without -q: their logs show progress
    capsys.readouterr()
    assert cli.main(["run", "x.yaml", "--launcher", "submitit-local"]) == 0
    out = capsys.readouterr().out
    assert "all 4 cells already finished" in out and "nothing to submit" in out
    assert len([p for p in (tmp_path / ".strbench" / "jobs").iterdir() if p.name.isdigit()]) == 2


def test_a_launch_sbatch_refuses_halfway_cancels_what_it_submitted(tmp_path, monkeypatch, capsys):
    import submitit

    monkeypatch.chdir(tmp_path)
    cfg = {"name": "half", "dataset": {"type": "builtin", "size": 16}, "masks": {"bins": [[0.1, 0.3]], "per_bin": 2},
           "schedule": {"texture": {"T": 3}}, "nets": {"arch": "authors", "preset": "tiny"},
           "models": {"irsde": "random:0"}, "floors": False,  # IR-SDE and one floor: 2 groups
           "methods": {"IR-SDE": {"method": "irsde"}, "biharmonic": {"method": "biharmonic"}},
           "metrics": {"fid": False, "kid": False, "bootstrap": 0}, "device": "cpu"}
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(cfg))
    submitted = []

    def submit(self, fn):
        if submitted:
            raise submitit.core.utils.FailedJobError(
                "sbatch: error: QOSMaxSubmitJobPerUserLimit\nsbatch: error: Batch job submission failed: Job "
                "violates accounting/QOS policy (job submit limit, user's size and/or time limits)")
        submitted.append((FakeJob("41", 1), fn))
        return submitted[-1][0]

    monkeypatch.setattr(submitit.AutoExecutor, "submit", submit)
    assert cli.main(["run", "x.yaml", "--launcher", "submitit-local", "--nproc", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sbatch refused job 2 of 2: Batch job submission failed: Job violates" in err
    assert "cancelled the 1 job(s) already submitted (41)" in err and submitted[0][0].cancelled
    assert submitted[0][1].argv.count("--nproc") == 1 and "-q" not in submitted[0][1].argv  # the user's --nproc, once
