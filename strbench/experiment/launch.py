"""Launchers: where the cells of an experiment run. ``local`` (default): in this process (or under torchrun).
``slurm``: one Slurm job per group of cells that share models (so each model is trained by one job), each
job itself ``strbench run ... --cells <its cells> [--nproc G]`` (a torchrun on its node), submitted through
submitit, the launcher Hydra users know. ``submitit-local``: the same jobs as local processes (submitit's
local executor), for a laptop check of the multi-job path.

Only what is left is submitted: the cells asked for (``--cells``) whose group has a cell not yet FINISHED in
the tracking store. Resources follow the experiment: a GPU only when the run needs one (``device: cuda``, or
``auto`` on a partition whose nodes have GPUs), CPUs and memory that fit the partition's smallest node; every
``--slurm.*`` option is checked (types, then ``sbatch --test-only`` asks Slurm itself) before a job is
submitted, and a launch that sbatch refuses halfway cancels what it submitted. A job fails as a job (its
function raises, so submitit and ``sacct`` see FAILED) when its strbench exits non-zero; the launcher names
each failed job with its cells, its log and the cause, and reports a job left PENDING with Slurm's reason.
A job warned of its time limit (submitit's USR2) stops its strbench as SIGTERM would (cells KILLED, claims
released) and is requeued through submitit's checkpoint, resuming where it stopped.

Several jobs write one tracking store and one model cache: on several machines that means an MLflow
tracking server (e.g. ``mlflow server --backend-store-uri postgresql://...``) and a shared ``cache_dir``.
The store and the experiment are created here, once, before any job starts. submitit reads job states from
``sacct``: the cluster needs Slurm accounting (slurmdbd).
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import yaml

from strbench.errors import ConfigError
from strbench.experiment.progress import SILENT, Progress

LAUNCHERS = ("local", "slurm", "submitit-local")
# --slurm.KEY: (kind, smallest value) for the keys strbench reads; any other key is an sbatch option passed on
SLURM_KEYS = {"partition": (str, None), "gpus_per_node": (int, 0), "cpus_per_task": (int, 1),
              "mem_gb": (float, 0.1), "timeout_min": (int, 1), "nodes": (int, 1), "account": (str, None),
              "qos": (str, None), "constraint": (str, None), "signal_delay_s": (int, 1), "max_num_timeout": (int, 0),
              "pending_report_min": (float, 0.0)}
DEFAULT_TIMEOUT_MIN = 240
DEFAULT_CPUS, DEFAULT_MEM_GB = 8, 32  # per GPU on a GPU job; capped by the partition's smallest node
DEFAULT_PENDING_REPORT_MIN = 10.0
# squeue reasons a job never leaves by waiting: it is cancelled and reported at once
NEVER_STARTS = ("PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints", "InvalidAccount",
                "InvalidQOS", "AccountNotAllowed", "QOSNotAllowed", "DependencyNeverSatisfied")
# sbatch options the launcher writes itself: the --slurm.* key to use instead
LAUNCHER_OWN = {"time": "timeout_min", "mem": "mem_gb", "mem_per_cpu": "mem_gb", "mem_per_gpu": "mem_gb",
                "gres": "gpus_per_node", "gpus": "gpus_per_node", "num_gpus": "gpus_per_node",
                "gpus_per_task": "gpus_per_node", "cpus_per_gpu": "cpus_per_task", "ntasks": "nodes",
                "ntasks_per_node": "nodes", "tasks_per_node": "nodes", "job_name": None, "output": None,
                "error": None, "signal": "signal_delay_s", "wrap": None, "array": None, "setup": None,
                "srun_args": None, "use_srun": None, "additional_parameters": None, "stderr_to_stdout": None}


def split_slurm_args(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """argv without its ``--slurm.KEY VALUE`` / ``--slurm.KEY=VALUE`` pairs, and those as {KEY: yaml value}."""
    rest, out, i = [], {}, 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--slurm."):
            key, eq, val = a[len("--slurm."):].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise ConfigError(f"{a}: give a value, e.g. {a} gpu (or {a}=gpu)")
                val, i = argv[i + 1], i + 1
            if not key:
                raise ConfigError(f"{a}: write --slurm.KEY VALUE, e.g. --slurm.partition gpu")
            out[key.replace("-", "_")] = yaml.safe_load(val) if val.strip() else None
        else:
            rest.append(a)
        i += 1
    return rest, out


def check_slurm_options(opts: Mapping[str, Any]) -> dict:
    """The --slurm.* options with their kinds checked (one line naming the key and the fix, else ConfigError);
    keys strbench does not read pass through as sbatch options (Slurm checks them: `sbatch --test-only`)."""
    out = {}
    for k, v in opts.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]*", k):
            raise ConfigError(f"--slurm.{k}: not an option name; write --slurm.KEY VALUE with KEY an sbatch option "
                              "in lower case, e.g. --slurm.partition gpu")
        kind, low = SLURM_KEYS.get(k, (None, None))
        if v is None:
            raise ConfigError(f"--slurm.{k}: give a value, e.g. --slurm.{k} " + ("1" if kind in (int, float) else "X"))
        if kind is int and (isinstance(v, bool) or not isinstance(v, int) or v < low):
            raise ConfigError(f"--slurm.{k} {v!r}: give a whole number >= {low}, e.g. --slurm.{k} {max(low, 1)}")
        if kind is float and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < low):
            raise ConfigError(f"--slurm.{k} {v!r}: give a number >= {low}, e.g. --slurm.{k} {max(low, 1):g}")
        if kind is str and not isinstance(v, (str, int)):
            raise ConfigError(f"--slurm.{k} {v!r}: give a name, e.g. --slurm.{k} gpu")
        if k == "nodes" and v != 1:
            raise ConfigError(f"--slurm.nodes {v}: each job is one torchrun on one node; use 1 (the jobs of a "
                              "launch spread over the nodes)")
        if k in LAUNCHER_OWN:
            use = LAUNCHER_OWN[k]
            raise ConfigError(f"--slurm.{k}: the launcher writes this sbatch option itself; "
                              + (f"give --slurm.{use} instead" if use else "leave it out"))
        out[k] = str(v) if kind is str else v
    return out


@dataclass
class NodeShape:
    """The smallest node of a partition: CPUs, memory (MB; <= 1 when Slurm was told none) and GPUs."""

    cpus: int
    mem_mb: int
    gpus: int


def partition_shape(partition: Optional[str]) -> Optional[NodeShape]:
    """The smallest node of `partition` (None: the default partition) as `sinfo` sees it; None when sinfo
    cannot say (submitit-local, no sinfo). An unknown partition: ConfigError."""
    if shutil.which("sinfo") is None:
        return None
    if partition is None:
        r = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60)
        default = [p[:-1] for p in r.stdout.split() if p.endswith("*")]
        if r.returncode != 0 or not default:
            return None
        partition = default[0]
    r = subprocess.run(["sinfo", "-h", "-N", "-p", str(partition), "-o", "%c|%m|%G"], capture_output=True,
                       text=True, timeout=60)
    rows = [x.split("|") for x in r.stdout.split() if x.count("|") == 2]
    if r.returncode != 0 or not rows:
        have = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60).stdout.split()
        raise ConfigError(f"--slurm.partition {partition}: Slurm has no such partition (or no nodes in it); "
                          f"partitions: {', '.join(p.rstrip('*') for p in have) or 'none'}")

    def gpus(gres: str) -> int:  # e.g. gpu:4, gpu:a100:4(S:0-1), gpu:2,mps:100, (null)
        n = 0
        for item in re.sub(r"\([^)]*\)", "", gres).split(","):
            parts = item.split(":")
            if parts[0] == "gpu":
                n += int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
        return n

    shapes = [NodeShape(int(re.sub(r"\D", "", c) or 0), int(re.sub(r"\D", "", m) or 0), gpus(g)) for c, m, g in rows]
    return NodeShape(min(s.cpus for s in shapes), min(s.mem_mb for s in shapes), min(s.gpus for s in shapes))


def needs_gpu(device: str, shape: Optional[NodeShape]) -> bool:
    """A GPU per job: `device: cuda`, or `auto` on a partition whose nodes have GPUs."""
    d = str(device or "auto")
    return d.startswith("cuda") or (d == "auto" and shape is not None and shape.gpus > 0)


def slurm_parameters(opts: Mapping[str, Any], *, device: str = "auto", shape: Optional[NodeShape] = None,
                     nproc: Optional[int] = None) -> dict:
    """submitit's `update_parameters` keywords (AutoExecutor names) from checked --slurm.* options, defaults
    following the experiment: GPUs only when it needs them (as many as --nproc, else 1), CPUs min(8 per GPU,
    the smallest node's), memory min(32 GB per GPU, the smallest node's share for those CPUs)."""
    o = dict(opts)
    o.pop("pending_report_min", None)
    g = o.pop("gpus_per_node", None)
    if g is None:
        g = (nproc or 1) if needs_gpu(device, shape) else 0
    per = max(1, g)
    cpus = o.pop("cpus_per_task", None) or (min(DEFAULT_CPUS * per, shape.cpus) if shape and shape.cpus
                                            else DEFAULT_CPUS * per)
    mem = o.pop("mem_gb", None)
    if mem is None:
        if shape is None:
            mem = DEFAULT_MEM_GB * per
        elif shape.mem_mb > 1:  # a node Slurm was told its memory (RealMemory)
            share = shape.mem_mb * min(1.0, cpus / max(1, shape.cpus))
            mem = max(1, min(DEFAULT_MEM_GB * per, int(share // 1024)))
    params = {"gpus_per_node": int(g), "tasks_per_node": 1, "nodes": int(o.pop("nodes", 1)),
              "timeout_min": int(o.pop("timeout_min", DEFAULT_TIMEOUT_MIN)), "cpus_per_task": int(cpus),
              "stderr_to_stdout": True}
    if mem is not None:
        params["mem_gb"] = mem
    extra = {}
    for k, v in o.items():
        if k in SLURM_KEYS:
            params[f"slurm_{k}"] = v
        else:  # any other sbatch option, as #SBATCH --key=value
            extra[k.replace("_", "-")] = True if v is True else v
    if extra:
        params["slurm_additional_parameters"] = extra
    return params


def require_slurm() -> None:
    """Slurm's client commands are here and `sacct` answers (submitit reads job states from it)."""
    gone = [c for c in ("sbatch", "srun", "squeue", "sacct", "scancel") if shutil.which(c) is None]
    if gone:
        raise ConfigError(f"--launcher slurm: {', '.join(gone)} not on PATH (not a Slurm login node?); run on a "
                          "node with Slurm's client commands, or use --launcher local / submitit-local")
    r = subprocess.run(["sacct", "-n", "-X", "-j", "1", "-o", "JobID"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        why = _last_error(r.stderr) or f"exit {r.returncode}"
        raise ConfigError(f"--launcher slurm: sacct does not answer ({why}); submitit reads job states from "
                          "Slurm accounting: the cluster needs slurmdbd (AccountingStorageType="
                          "accounting_storage/slurmdbd)")


def _last_error(text: str) -> str:
    lines = [x.strip() for x in (text or "").splitlines() if x.strip() and not x.strip().startswith("Try ")]
    errs = [x for x in lines if re.search(r"error|unrecognized|invalid|unknown", x, re.I)]
    pick = next((x for x in errs if "submission failed" in x), errs[-1] if errs else (lines[-1] if lines else ""))
    return re.sub(r"^(sbatch|sacct|srun): (error: )?", "", pick)


def _request(executor) -> str:
    """The resources a job asks for, as sbatch options (for messages)."""
    p = executor._executor.parameters
    keys = ("partition", "gpus_per_node", "cpus_per_task", "mem", "time", "account", "qos", "constraint")
    extra = p.get("additional_parameters") or {}
    return " ".join(f"--{k.replace('_', '-')}={p[k]}" for k in keys if p.get(k) not in (None, "", 0)) + \
        "".join(f" --{k}" + ("" if v is True else f"={v}") for k, v in extra.items())


def _test_only(executor) -> None:
    """`sbatch --test-only` on the script submitit would submit: Slurm's own refusal, before any job exists."""
    text = executor._executor._make_submission_file_text("true", "test-only")  # submitit's sbatch script
    with tempfile.TemporaryDirectory(prefix="strbench-sbatch-") as td:
        script = Path(td) / "test.sh"
        script.write_text(text)
        r = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise ConfigError(f"--slurm.*: sbatch refuses the job ({_request(executor)}): "
                          f"{_last_error(r.stderr + r.stdout)}; change the --slurm.* options (nothing submitted)")


@dataclass
class JobOutcome:
    """A job that did not end well: its id, Slurm's state, its cells (labels), its log and the cause."""

    job_id: str
    state: str
    cells: list
    log: Path
    cause: str

    def line(self) -> str:
        return (f"job {self.job_id} {self.state} (cells: {', '.join(self.cells)}): {self.cause}; "
                f"its log: {self.log}")


@dataclass
class Launched:
    """What `launch` did: the submitted jobs, the groups not submitted (all FINISHED) and, when it waited,
    which jobs failed."""

    launcher: str
    job_ids: list  # one per group of cells sharing models that has work left
    logs: Path  # <cache_dir>/jobs: one folder per job id
    n_cells: int = 0  # cells asked for (--cells, else the experiment's)
    finished_before: int = 0  # of those, FINISHED before the launch
    groups_done: int = 0  # groups not submitted: every cell FINISHED
    waited: bool = False
    failed: list = field(default_factory=list)  # JobOutcome

    @property
    def ok(self) -> bool:
        return not self.failed


def launch(exp, cells: list, argv: list[str], *, launcher: str, slurm: Mapping[str, Any], only=None,
           nproc: Optional[int] = None, wait: bool = True, progress: Progress = SILENT,
           say: Callable[[str], None] = lambda m: print(f"strbench: {m}", file=sys.stderr)) -> Launched:
    """Submit one job per model group with cells left (`strbench run <argv> --cells ...`) and, with `wait`,
    wait for them. Events: ``jobs_submitted`` (experiment, launcher, job_ids, logs) once they are submitted.
    Bad options, a cluster that refuses the request: ConfigError before any job stays queued."""
    if launcher not in ("slurm", "submitit-local"):
        raise ConfigError(f"--launcher {launcher!r}: choose one of {', '.join(LAUNCHERS)}")
    opts = check_slurm_options(slurm)
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher slurm needs submitit (pip install submitit; it is in strbench's dependencies)") \
            from None
    from strbench import tracking
    from strbench.experiment import claims
    from strbench.experiment.plan import experiment_hash, model_groups
    from strbench.experiment.run import select_cells

    if launcher == "slurm":
        require_slurm()
    shape = partition_shape(opts.get("partition")) if launcher == "slurm" else None
    params = slurm_parameters(opts, device=exp.device, shape=shape, nproc=nproc)
    g = params["gpus_per_node"]
    if launcher == "submitit-local":
        params = {"timeout_min": params["timeout_min"], "gpus_per_node": 0}
    folder = Path(exp.cache_dir) / "jobs" / "%j"
    executor = submitit.AutoExecutor(folder=str(folder), cluster="local" if launcher == "submitit-local" else "slurm")
    executor.update_parameters(name=f"strbench-{exp.name}", **params)
    if launcher == "slurm":
        _test_only(executor)  # Slurm's own word on the request, before anything is created or submitted
    mine = select_cells(exp, cells, only)
    board = claims.Board.for_store(exp.cache_dir, exp.tracking.uri, exp.experiment_name,
                                   grace=exp.claims.grace_s, heartbeat=exp.claims.heartbeat_s)
    tracker = tracking.Tracker(exp.tracking.uri, exp.experiment_name, exp.tracking.artifact_location,
                               lock_path=board.store_lock, outage_s=exp.tracking.outage_s, board=board.id,
                               take_over=exp.claims.take_over)  # the store and the experiment, created once
    done = tracker.finished_cells()
    groups = list(model_groups(mine).values())
    left = [grp for grp in groups if any(c.hash not in done for c in grp)]
    out = Launched(launcher=launcher, job_ids=[], logs=folder.parent, n_cells=len(mine),
                   finished_before=sum(c.hash in done for c in mine), groups_done=len(groups) - len(left))
    if not left:
        if all(c.hash in done for c in cells):  # a job killed after the last cell may have left the parent open
            with contextlib.suppress(Exception):
                tracker.close_parent(experiment_hash(cells))
        return out
    job_nproc = nproc if nproc else (g if g > 1 else None)  # the user's --nproc, else one rank per GPU
    env_keep = {k: v for k, v in os.environ.items() if k.startswith(("STRBENCH_", "MLFLOW_"))}
    jobs: list = []
    for grp in left:
        job_argv = [*argv, "--cells", ",".join(c.short for c in grp)]
        if job_nproc and job_nproc > 1:
            job_argv += ["--nproc", str(job_nproc)]
        try:
            with contextlib.redirect_stderr(io.StringIO()) as err:  # submitit prints sbatch's stderr: one line
                jobs.append(executor.submit(StrbenchJob(env_keep, job_argv)))
        except Exception as e:  # sbatch refused this one: cancel what this launch submitted, say why
            for j in jobs:
                with contextlib.suppress(Exception):
                    j.cancel(check=False)
            gone = f"; cancelled the {len(jobs)} job(s) already submitted ({', '.join(j.job_id for j in jobs)})" \
                if jobs else ""
            raise ConfigError(f"--launcher {launcher}: sbatch refused job {len(jobs) + 1} of {len(left)}: "
                              f"{_last_error(str(e) + chr(10) + err.getvalue()) or type(e).__name__}{gone}") from None
    out.job_ids = [j.job_id for j in jobs]
    progress.event("jobs_submitted", experiment=exp.name, launcher=launcher, job_ids=out.job_ids, logs=out.logs)
    if wait:
        out.waited = True
        bound = float(opts.get("pending_report_min", DEFAULT_PENDING_REPORT_MIN)) * 60
        out.failed = wait_jobs(jobs, left, bound_s=bound, say=say, squeue=launcher == "slurm")
    return out


def wait_jobs(jobs: list, groups: list, *, bound_s: float, say: Callable[[str], None], squeue: bool = True,
              poll_s: float = 2.0) -> list:
    """Wait for every job; the ones that did not end well as JobOutcome. A job PENDING longer than `bound_s`
    is reported with Slurm's reason (again every `bound_s`); one whose reason never clears is cancelled."""
    cells = {j.job_id: [c.label for c in g] for j, g in zip(jobs, groups)}
    t0 = time.time()
    reported: dict[str, float] = {}
    failed, todo = [], list(jobs)
    try:
        while todo:
            queue = _squeue([j.job_id for j in todo]) if squeue else None
            for j in list(todo):
                state, reason = (queue or {}).get(j.job_id, (None, ""))
                if state == "PENDING" and reason in NEVER_STARTS:
                    say(f"job {j.job_id} cannot start: Slurm says {reason} (the request exceeds what the partition "
                        "allows); cancelling it")
                    j.cancel(check=False)
                elif state == "PENDING" and bound_s >= 0 and time.time() - t0 >= reported.get(j.job_id, bound_s):
                    reported[j.job_id] = time.time() - t0 + max(bound_s, poll_s)
                    say(f"job {j.job_id} still PENDING after {time.time() - t0:.0f} s: Slurm's reason: "
                        f"{reason or 'none given'} (cells: {', '.join(cells[j.job_id])})")
                # a job squeue still lists is not over, whatever sacct's latest record says (a requeued job's
                # first run reads CANCELLED there for a moment), unless its result is written already
                listed = queue is not None and j.job_id in queue
                if j.paths.result_pickle.exists() if listed else j.done(force_check=queue is not None):
                    todo.remove(j)
                    o = job_outcome(j, cells[j.job_id])
                    if o is not None:
                        failed.append(o)
            if todo:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        say(f"interrupted; the jobs go on in Slurm (scancel {' '.join(j.job_id for j in todo)} stops them)")
        raise
    return failed


def _squeue(ids: list[str]) -> Optional[dict]:
    """job id -> (state, reason) for the jobs squeue still lists; None when squeue does not answer."""
    try:
        r = subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T|%r"], capture_output=True, text=True,
                           timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if r.returncode != 0 and "Invalid job id" not in r.stderr:
        return None
    return {i: (s, why) for i, s, why in (x.split("|", 2) for x in r.stdout.split() if x.count("|") == 2)}


def job_outcome(job, cells: list) -> Optional[JobOutcome]:
    """None for a job whose strbench exited 0; else what happened, from its result and Slurm's state."""
    import submitit

    log = Path(job.paths.stdout)
    try:
        job.result()
        return None
    except submitit.core.utils.FailedJobError as e:  # the job's function raised: the trace's last line says why
        m = re.search(r"with trace:\n-+\n(.*?)\n-+\n", str(e), re.S)
        lines = [x for x in (m.group(1) if m else str(e)).splitlines() if x.strip()]
        cause = re.sub(r"^[\w.]+(Error|Failed|Exception|Exit)\w*: ", "", lines[-1].strip()) if lines else "failed"
    except Exception as e:  # no result at all: killed, out of memory, node failure, time limit
        cause = f"ended without a result ({type(e).__name__})" if log.exists() else "never started (no log)"
        tail = log.read_text(errors="replace").splitlines()[-200:] if log.exists() else []
        said = [x.strip() for x in tail if x.startswith(("strbench:", "slurmstepd: error:", "srun: error:"))]
        if said:
            cause += f"; its log says: {said[-1]}"
    state = _final_state(job)
    return JobOutcome(job.job_id, state, cells, log, cause)


def _final_state(job, wait_s: float = 20.0) -> str:
    """Slurm's final state of a job (sacct; it may lag the job's result by a few seconds), e.g. FAILED,
    CANCELLED, TIMEOUT, OUT_OF_MEMORY; FAILED where it cannot say."""
    t0 = time.time()
    while True:
        info = job.get_info(mode="force") if type(job).__name__ == "SlurmJob" else {}
        state = (info.get("State") or "").split()
        state = state[0] if state else ""
        if state not in ("", "RUNNING", "COMPLETING", "PENDING", "REQUEUED", "UNKNOWN") or \
                time.time() - t0 > wait_s or type(job).__name__ != "SlurmJob":
            break
        time.sleep(1)
    return "FAILED" if state in ("", "COMPLETED", "UNKNOWN", "RUNNING", "COMPLETING") else state


class JobFailed(RuntimeError):
    """Raised in a job whose strbench exited non-zero, so that submitit and Slurm record the job as failed."""


class StrbenchJob:
    """What a job runs: `python -m strbench <argv>` (the command line, as a user would type it on the node),
    its output in the job's log. Non-zero exit: JobFailed with strbench's own last words. submitit's time-limit
    or preemption signal (USR2): `checkpoint` stops strbench as SIGTERM does (cells KILLED, claims released)
    and hands submitit the same job to requeue; the requeued job resumes (finished cells skipped)."""

    def __init__(self, env: Mapping[str, str], argv: list[str]):
        self.env, self.argv = dict(env), list(argv)
        self._proc = None

    def __getstate__(self):
        return {"env": self.env, "argv": self.argv}

    def __setstate__(self, state):
        self.env, self.argv, self._proc = state["env"], state["argv"], None

    def __call__(self) -> int:
        import threading
        from collections import deque

        said: deque = deque(maxlen=40)
        proc = subprocess.Popen([sys.executable, "-m", "strbench", *self.argv], env={**os.environ, **self.env},
                                stderr=subprocess.PIPE, text=True, bufsize=1, errors="replace")
        self._proc = proc

        def tee():  # strbench's stderr into the job's log, its own lines kept for the cause
            for line in proc.stderr:
                sys.stderr.write(line)
                sys.stderr.flush()
                if line.startswith("strbench:"):
                    said.append(line.strip())

        t = threading.Thread(target=tee, daemon=True)
        t.start()
        while proc.poll() is None:  # poll, not wait(): a signal handler may poll this process too
            time.sleep(0.5)
        t.join(10)
        if proc.returncode != 0:
            raise JobFailed(exit_cause(proc.returncode, list(said)))
        return 0

    def checkpoint(self):
        """submitit's USR2 (time limit or preemption): stop strbench (SIGTERM: cells KILLED, claims released),
        then requeue this job (submitit's checkpoint protocol)."""
        import signal

        from submitit.helpers import DelayedSubmission

        p = self._proc
        if p is not None and p.poll() is None:
            with contextlib.suppress(OSError):
                p.send_signal(signal.SIGTERM)
            t0 = time.time()
            while p.poll() is None and time.time() - t0 < 60:
                time.sleep(0.2)
            if p.poll() is None:
                p.kill()
        return DelayedSubmission(StrbenchJob(self.env, self.argv))


def exit_cause(code: int, said: list[str]) -> str:
    """One line: strbench's exit status and its own last words (the failed cells, else its last line)."""
    import signal

    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        what = f"strbench was killed by {name}"
    elif code == 130:
        what = "strbench was interrupted (scancel, preemption or the time limit: SIGTERM)"
    else:
        what = f"strbench exited with status {code}"
    keep = [x for x in said if x.startswith(("strbench: cell failed", "strbench: error", "strbench: stopped"))]
    keep = keep or [x for x in said if x != "strbench: interrupted"][-1:]
    text = "; ".join(x[len("strbench: "):] for x in keep[:3])
    text += f" (and {len(keep) - 3} more)" if len(keep) > 3 else ""
    return f"{what}: {text}" if text else what
