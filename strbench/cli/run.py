"""`strbench run` and `strbench validate`."""
from __future__ import annotations

import os
import sys

from strbench.cli import console


def add_validate(sub):
    p = sub.add_parser("validate", help="check an experiment YAML without running it")
    p.add_argument("config")
    console.add_config_options(p)
    p.set_defaults(func=_cmd_validate)


def _cmd_validate(a) -> int:
    from strbench import config, experiment, tune

    data = config.read_yaml(a.config)
    if "base" in data and "study" in data and not (a.set or a.set_from or a.profile):  # a tune config
        spec = tune.load_spec(a.config)
        n = tune.check_spec(spec)
        print(f"{a.config}: ok: tune config; base {spec.base}" + (f" (profile {spec.profile})" if spec.profile else "")
              + f" valid with each of its {n} search-space keys")
        return 0

    v = experiment.validate(a.config, overrides=a.set, overlay=a.set_from, profile=a.profile)
    others = v.other_profiles
    print(f"{a.config}: ok: {len(v.cells)} cells, {len(v.models)} models" +
          (f" (profile {v.exp.profile}" + (f"; other profiles valid: {', '.join(others)}" if others else "") + ")"
           if v.exp.profile else ""))
    for c in v.checks:
        print(f"  {c}")
    return 0


def add_run(sub):
    p = sub.add_parser("run", help="train what is missing, sample, score and log an experiment")
    p.add_argument("config")
    console.add_config_options(p)
    p.add_argument("--dry-run", action="store_true", help="list cells, the models they need and what is cached")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, only errors")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="run under torchrun with N processes on this machine (DDP training, images split)")
    p.add_argument("--launcher", default="local", choices=["local", "slurm", "submitit-local"],
                   help="local: in this process; slurm: one Slurm job per group of cells sharing models (submitit; "
                        "options --slurm.partition P --slurm.gpus_per_node G --slurm.timeout_min M --slurm.KEY V)")
    p.add_argument("--cells", default=None, metavar="HASHES",
                   help="run only these cells (comma-separated hash prefixes, as --dry-run lists them)")
    p.set_defaults(func=_cmd_run)


def _cmd_run(a) -> int:
    """0 when every cell finished, 1 when some failed (named on stderr)."""
    from strbench import config, experiment
    from strbench.errors import ConfigError

    if a.nproc is not None and a.nproc > 1 and "WORLD_SIZE" not in os.environ and not a.dry_run \
            and a.launcher == "local":
        return _torchrun(a.nproc)
    exp = config.load_experiment(a.config, overrides=a.set, overlay=a.set_from, profile=a.profile)
    only = [h.strip() for h in a.cells.split(",") if h.strip()] if a.cells else None
    if a.dry_run:
        print(console.format_plan(experiment.plan_status(exp, only=only)))
        return 0
    if a.slurm and a.launcher != "slurm":
        raise ConfigError(f"--slurm.{next(iter(a.slurm))}: Slurm options need --launcher slurm")
    if a.launcher != "local":
        return _launch(a, exp, only)
    summary = experiment.run_experiment(exp, progress=console.ConsoleProgress(a.quiet), only=only)
    uri = exp.tracking.uri
    if int(os.environ.get("RANK", "0")) == 0:  # the final summary (also with -q), once under torchrun
        ui = f"mlflow ui --backend-store-uri {uri}" if experiment.tracking_is_local(uri) else f"open {uri}"
        others = f"{len(summary.elsewhere)} by other processes, " if summary.elsewhere else ""
        print(f"{exp.name}: {summary.n_cells} cells: {summary.done_before} finished before, {summary.ran} run, "
              f"{others}{len(summary.failed)} failed ({summary.seconds:.0f} s). Browse: {ui}")
    for label, h, err in summary.failed:
        print(f"strbench: cell failed: {label} [{h[:12]}]: {err}", file=sys.stderr)
    if summary.stopped:
        left = f"; not tried: {', '.join(summary.not_tried)}" if summary.not_tried else ""
        print(f"strbench: stopped: {summary.stopped}{left}", file=sys.stderr)
        return 1
    if summary.failed:
        print(f"strbench: {len(summary.failed)} of {summary.n_cells} cells failed; fix the cause and run the "
              "same command again (finished cells are skipped)", file=sys.stderr)
        return 1
    return 0


def _launch(a, exp, only) -> int:
    """--launcher slurm / submitit-local: one job per group of cells sharing models, only those with work left;
    0 when every job ended well, 1 naming each failed job (its cells, its log, the cause)."""
    from strbench import experiment
    from strbench.experiment.launch import check_slurm_options, launch, require_slurm

    check_slurm_options(a.slurm)  # bad options and a missing Slurm: one line before anything is read or made
    if a.launcher == "slurm":
        require_slurm()
    cells = experiment.expand(exp)
    experiment.preflight(exp, cells)
    argv = ["run", a.config, *[x for s in a.set for x in ("--set", s)]]
    argv += (["--set-from", a.set_from] if a.set_from else []) + (["--profile", a.profile] if a.profile else [])
    done = launch(exp, cells, argv, launcher=a.launcher, slurm=a.slurm, only=only, nproc=a.nproc,
                  progress=console.ConsoleProgress(a.quiet))
    asked = f"{done.n_cells} cells" + (" (--cells)" if only else "")
    if not done.job_ids:
        print(f"{exp.name}: all {asked} already finished in {exp.tracking.uri} (experiment "
              f"{exp.experiment_name!r}); nothing to submit")
        return 0
    print(f"{exp.name}: {asked}: {done.finished_before} finished before; {len(done.job_ids)} job(s) submitted"
          + (f", {done.groups_done} group(s) already finished not submitted" if done.groups_done else "")
          + (f"; {len(done.failed)} failed" if done.failed else (", all ended well" if done.waited else "")))
    for o in done.failed:
        print(f"strbench: {o.line()}", file=sys.stderr)
    if done.failed:
        print(f"strbench: {len(done.failed)} of {len(done.job_ids)} job(s) failed; fix the cause and run the same "
              "command again (finished cells are skipped, only what is left is submitted)", file=sys.stderr)
        return 1
    return 0


def _torchrun(nproc: int) -> int:
    """`strbench run --nproc N ...` = `torchrun --standalone --nproc_per_node=N -m strbench run ...`."""
    import subprocess

    args = sys.argv[1:]
    keep, skip = [], False
    for x in args:
        if skip:
            skip = False
        elif x == "--nproc":
            skip = True
        elif not x.startswith("--nproc="):
            keep.append(x)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "strbench", *keep]
    return subprocess.call(cmd)
