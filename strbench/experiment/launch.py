"""Launchers: where the cells of an experiment run. ``local`` (default): in this process (or under torchrun).
``slurm``: one Slurm job per group of cells that share models (so each model is trained by one job), each
job itself ``strbench run ... --cells <its cells> [--nproc G]`` (a torchrun on its node), submitted through
submitit, the launcher Hydra users know. ``submitit-local``: the same jobs as local processes (submitit's
local executor), for a laptop check of the multi-job path.

Several jobs write one tracking store and one model cache: on several machines that means an MLflow
tracking server (e.g. ``mlflow server --backend-store-uri postgresql://...``) and a shared ``cache_dir``.
The store and the experiment are created here, once, before any job starts.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from strbench.errors import ConfigError
from strbench.experiment.progress import SILENT, Progress

LAUNCHERS = ("local", "slurm", "submitit-local")
SLURM_DEFAULTS = {"partition": None, "gpus_per_node": 1, "timeout_min": 240, "cpus_per_task": 8, "mem_gb": 64,
                  "nodes": 1, "account": None, "qos": None, "constraint": None}


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


def slurm_parameters(opts: Mapping[str, Any]) -> dict:
    """submitit's `update_parameters` keywords from --slurm.* options (known keys mapped, others passed as
    slurm_<key> so that any sbatch option can be given)."""
    o = {**SLURM_DEFAULTS, **opts}
    g = int(o.pop("gpus_per_node"))
    params = {"gpus_per_node": g, "tasks_per_node": 1, "nodes": int(o.pop("nodes")),
              "timeout_min": int(o.pop("timeout_min")), "cpus_per_task": int(o.pop("cpus_per_task")),
              "mem_gb": o.pop("mem_gb")}
    for k, v in o.items():
        if v is not None:
            params[f"slurm_{k}"] = v
    return params


@dataclass
class Launched:
    """What `launch` did: the submitted jobs and, when it waited, which of them failed."""

    launcher: str
    job_ids: list  # one per group of cells sharing models
    logs: Path  # <cache_dir>/jobs: one folder per job id
    waited: bool = False
    failed: list = field(default_factory=list)  # (job id, its error's last line); a job's log has the traceback

    @property
    def ok(self) -> bool:
        return not self.failed


def launch(exp, cells: list, argv: list[str], *, launcher: str, slurm: Mapping[str, Any], wait: bool = True,
           progress: Progress = SILENT) -> Launched:
    """Submit one job per model group (`strbench run <argv> --cells ...`) and, with `wait`, wait for them.
    Events: ``jobs_submitted`` (experiment, launcher, job_ids, logs) once the jobs are submitted."""
    if launcher not in ("slurm", "submitit-local"):
        raise ConfigError(f"--launcher {launcher!r}: choose one of {', '.join(LAUNCHERS)}")
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher slurm needs submitit (pip install submitit; it is in strbench's dependencies)") \
            from None
    from strbench import tracking
    from strbench.experiment.plan import model_groups

    tracking.Tracker(exp.tracking.uri, exp.experiment_name, exp.tracking.artifact_location)  # create the store once
    groups = list(model_groups(cells).values())
    folder = Path(exp.cache_dir) / "jobs" / "%j"
    executor = submitit.AutoExecutor(folder=str(folder), cluster="local" if launcher == "submitit-local" else None)
    params = slurm_parameters(slurm)
    g = params["gpus_per_node"]
    if launcher == "submitit-local":
        params = {"timeout_min": params["timeout_min"], "gpus_per_node": 0}
    executor.update_parameters(name=f"strbench-{exp.name}", **params)
    jobs = []
    env_keep = {k: v for k, v in os.environ.items() if k.startswith(("STRBENCH_", "MLFLOW_"))}
    for grp in groups:
        job_argv = [*argv, "--cells", ",".join(c.short for c in grp), "-q"]
        if launcher == "slurm" and g > 1:
            job_argv += ["--nproc", str(g)]
        jobs.append(executor.submit(_with_env, env_keep, job_argv))
    done = Launched(launcher=launcher, job_ids=[j.job_id for j in jobs], logs=folder.parent)
    progress.event("jobs_submitted", experiment=exp.name, launcher=launcher, job_ids=done.job_ids, logs=done.logs)
    if not wait:
        return done
    done.waited = True
    for j in jobs:
        try:
            code = j.result()
            err = None if code == 0 else f"exit status {code}"
        except Exception as e:  # a job that crashed: its own log has the traceback
            err = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        if err is not None:
            done.failed.append((j.job_id, err))
    return done


def _with_env(env: Mapping[str, str], argv: list[str]) -> int:
    """What a job runs: `python -m strbench <argv>` (the command line, as a user would type it on the node)."""
    import subprocess

    return subprocess.call([sys.executable, "-m", "strbench", *argv], env={**os.environ, **env})
