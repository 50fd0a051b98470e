"""strbench command line: parse and dispatch, nothing else (every command is one library call)."""
from __future__ import annotations

import argparse
import os
import sys

from strbench.contract import DEFAULT_URI
from strbench.errors import StrbenchError


def _add_schedule(sub):
    p = sub.add_parser("schedule", help="print or plot a theta/delta noise schedule")
    p.add_argument("--T", type=int, default=100, help="number of diffusion steps (default 100)")
    p.add_argument("--kind", default="cosine", help="cosine | linear | constant | power (default cosine)")
    p.add_argument("--lam", type=float, default=30 / 255, help="stationary std lambda (default 30/255)")
    p.add_argument("--eps", type=float, default=0.005, help="terminal mean-reversion residual (default 0.005)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="schedule family parameter, e.g. --param power=2 --param start=0.01")
    p.add_argument("--delta-kind", default=None, help="structure (delta) schedule kind; default = theta's")
    p.add_argument("--delta-param", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--every", type=int, default=0, help="table: print every k-th step (default: ~20 rows)")
    p.add_argument("--plot", default=None, metavar="PNG", help="also plot theta, delta and sigmabar to this file")
    p.set_defaults(func=_cmd_schedule)


def _cmd_schedule(a) -> int:
    from strbench import schedule_cli

    return schedule_cli.run(a.T, a.kind, a.lam, a.eps, a.param, a.delta_kind, a.delta_param,
                            fmt=a.format, every=a.every, plot=a.plot)


def _add_validate(sub):
    p = sub.add_parser("validate", help="check an experiment YAML without running it")
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key by path")
    p.add_argument("--set-from", default=None, metavar="YAML", help="apply an overlay file (e.g. tune --export)")
    p.add_argument("--profile", default=None, help="profile of the experiment to use (e.g. cpu, paper)")
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


def _add_run(sub):
    p = sub.add_parser("run", help="train what is missing, sample, score and log an experiment")
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key by path")
    p.add_argument("--set-from", default=None, metavar="YAML", help="apply an overlay file (e.g. tune --export)")
    p.add_argument("--profile", default=None, help="profile of the experiment to use (e.g. cpu, paper)")
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
        print(format_plan(experiment.plan_status(exp, only=only)))
        return 0
    if a.slurm and a.launcher != "slurm":
        raise ConfigError(f"--slurm.{next(iter(a.slurm))}: Slurm options need --launcher slurm")
    if a.launcher != "local":
        from strbench.experiment.launch import launch

        cells = experiment.expand(exp)
        experiment.preflight(exp, cells)
        argv = ["run", a.config, *[x for s in a.set for x in ("--set", s)]]
        argv += (["--set-from", a.set_from] if a.set_from else []) + (["--profile", a.profile] if a.profile else [])
        if a.nproc:
            argv += ["--nproc", str(a.nproc)]
        return launch(exp, cells, argv, launcher=a.launcher, slurm=a.slurm, say=print)
    summary = experiment.run_experiment(exp, progress=ConsoleProgress(a.quiet), only=only)
    uri = exp.tracking.uri
    if int(os.environ.get("RANK", "0")) == 0:  # the final summary (also with -q), once under torchrun
        ui = f"mlflow ui --backend-store-uri {uri}" if experiment.tracking_is_local(uri) else f"open {uri}"
        others = f"{len(summary.elsewhere)} by other processes, " if summary.elsewhere else ""
        print(f"{exp.name}: {summary.n_cells} cells: {summary.done_before} finished before, {summary.ran} run, "
              f"{others}{len(summary.failed)} failed ({summary.seconds:.0f} s). Browse: {ui}")
    if summary.failed:
        for label, h, err in summary.failed:
            print(f"strbench: cell failed: {label} [{h[:12]}]: {err}", file=sys.stderr)
        print(f"strbench: {len(summary.failed)} of {summary.n_cells} cells failed; fix the cause and run the "
              "same command again (finished cells are skipped)", file=sys.stderr)
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


# ------------------------------------------------------------------------------------------------
# printing: the console side of a run's progress events, and the dry-run table
# ------------------------------------------------------------------------------------------------


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def cell_summary(i: int, n: int, cell, m: dict, seconds: float) -> str:
    return (f"[{i}/{n}] {cell.label}: PSNR {_fmt(m.get('psnr'), '.2f')} SSIM {_fmt(m.get('ssim'), '.3f')} "
            f"FID {_fmt(m.get('fid'), '.2f')} | {int(m['n_images'])} img, {m['nfe_per_image']:.0f} NFE/img, "
            f"{m['sec_per_image']:.2f} s/img ({seconds:.0f} s)")


class _TqdmBar:
    def __init__(self, bar):
        self._bar = bar

    def update_to(self, n: int) -> None:
        self._bar.n = n
        self._bar.refresh()
        if n >= (self._bar.total or 0):
            self._bar.close()

    def close(self) -> None:
        self._bar.close()


class ConsoleProgress:
    """A run's events on the terminal: tqdm bars on stderr (off with -q, and off when stderr is not a
    terminal, so logs stay readable) and one line per cell."""

    _POSITION = {"cells": 0, "train": 1, "sample": 1}
    _UNIT = {"cells": "cell", "train": "step", "sample": "lvl"}

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def bar(self, kind: str, total: int, desc: str):
        from tqdm.auto import tqdm

        return _TqdmBar(tqdm(disable=True if self.quiet else None, dynamic_ncols=True, total=total, desc=desc,
                             unit=self._UNIT[kind], position=self._POSITION[kind], leave=kind == "cells"))

    def say(self, text: str) -> None:
        if not self.quiet:
            from tqdm.auto import tqdm

            tqdm.write(text)

    def event(self, kind: str, **d) -> None:
        if kind == "started":
            self.say(f"{d['experiment']}: {d['n_cells']} cells ({d['done_before']} already finished, {d['todo']} to "
                     f"run) on {d['device']}; tracking {d['tracking_uri']}, experiment {d['mlflow_experiment']!r}")
        elif kind == "nothing_to_do":
            self.say(f"{d['experiment']}: all {d['n_cells']} cells already finished in {d['tracking_uri']} "
                     f"(experiment {d['mlflow_experiment']!r}); nothing to do")
        elif kind == "skipped":
            self.say(f"skip {d['label']}: {d['why']}")
        elif kind == "waiting":
            self.say(f"wait for {d['what']} {d['spec'].role} {d['spec'].short}: {d['why']}")
        elif kind == "training":
            spec = d["spec"]
            self.say(f"train {spec.role} model {spec.short} ({spec.train.steps} steps) for {d['label']}")
        elif kind == "cell_finished":
            self.say(cell_summary(d["i"], d["n"], d["cell"], d["metrics"], d["seconds"]))
        elif kind == "cell_failed":
            self.say(f"[{d['i']}/{d['n']}] {d['cell'].label}: FAILED ({d['error']})")


def format_plan(st) -> str:
    """The dry-run table: cells, the models they need and what is cached / finished."""
    exp, mine, all_cells = st.exp, st.mine, st.all_cells
    status = {m.hash: s for m, s, _ in st.models}
    lines = [f"{exp.name}" + (f" (profile {exp.profile})" if exp.profile else "") +
             f": {len(mine)} cells" + (f" of {len(all_cells)} (" + (f"shard {exp.shard.index}/{exp.shard.count}"
                                                                     if exp.shard.count > 1 else "--cells") + ")"
                                        if len(mine) != len(all_cells) else "") +
             f", {len(status)} models; tracking {exp.tracking.uri}{st.note}; cache {exp.cache_dir}",
             "", "models:"]
    for m, s, users in st.models:
        what = f"from {m.source}" if m.pretrained else f"{m.train.steps:>6} steps"
        lines.append(f"  {m.role:<14} {m.short}  {s:<8} {what}  used by {users} cell(s)")
    lines += ["", "cells:", f"  {'#':>3}  {'cell':<12}  {'status':<8}  {'label':<44}  models"]
    for c in mine:
        done = "done" if c.hash in st.done else "pending"
        ms = " ".join(f"{m.role}:{m.short[:8]}({status[m.hash][0]})" for m in c.models)
        lines.append(f"  {c.index:>3}  {c.short}  {done:<8}  {c.label:<44}  {ms}")
    n_done = sum(c.hash in st.done for c in mine)
    vals = list(status.values())
    loaded = f"{vals.count('pretrained')} pretrained, " if "pretrained" in vals else ""
    lines += ["", "checks:"] + [f"  {c}" for c in st.checks] if st.checks else []
    lines += ["", f"{n_done} done, {len(mine) - n_done} to run; models: {loaded}{vals.count('cached')} cached, "
                  f"{vals.count('partial')} partial, {vals.count('missing')} to train"
                  + (f", {vals.count('diverged')} diverged before (delete models/<hash>/diverged.json to retry)"
                     if "diverged" in vals else "") + ". Nothing was trained or logged."]
    return "\n".join(lines)


def _add_report(sub):
    p = sub.add_parser("report", help="render the paper's tables/figures, paired tests, claims, HTML from tracked runs",
                       description="Reports pool every FINISHED cell run of the experiment (latest per cell hash, "
                                   "across invocations) and say which runs they used; --run/--profile/--since "
                                   "narrow that.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--table", type=int, choices=[1, 2, 3])
    g.add_argument("--figure", choices=["8", "frontier"], help="8: KL along the reverse process; frontier: PSNR "
                                                               "(and FID) against NFE per image")
    g.add_argument("--claims", action="store_true", help="the paper's claims and whether the runs support them")
    g.add_argument("--html", default=None, metavar="DIR", help="write a self-contained DIR/index.html report")
    p.add_argument("--paired", action="store_true", help="with --table: paired comparisons of its measured rows "
                                                         "(bootstrap interval, Wilcoxon p) instead of the table")
    p.add_argument("--experiment", default=None, help="MLflow experiment name (default: the table's experiment)")
    p.add_argument("--run", default=None, metavar="PARENT_ID", help="only the cells of this parent run (id or prefix)")
    p.add_argument("--profile", default=None, help="only the cells of parent runs of this profile (e.g. cpu)")
    p.add_argument("--since", default=None, metavar="DATE", help="only cell runs started at/after DATE "
                                                                 "(e.g. 2024-05-01, UTC)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///mlflow.db)")
    p.add_argument("--format", choices=["markdown", "latex", "csv"], default="markdown")
    p.add_argument("--out", default=None, help="write to this folder (e.g. reports/) as well as printing")
    p.set_defaults(func=_cmd_report)


def _cmd_report(a) -> int:
    from strbench import report

    if a.paired and a.table is None:
        raise StrbenchError("--paired compares the rows of one table: add --table 1|2|3")
    if a.html is not None:  # the HTML page is built from report's tables (report_html imports report)
        from strbench import report_html

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        print(report_html.write_report(a.html, a.tracking_uri or report.DEFAULT_TRACKING_URI,
                                       experiment=a.experiment,
                                       select={"run": a.run, "profile": a.profile, "since": a.since}))
        return 0
    return report.report_command(table=a.table, figure=a.figure, experiment=a.experiment,
                                 tracking_uri=a.tracking_uri, fmt=a.format, out=a.out, run=a.run,
                                 profile=a.profile, since=a.since, paired=a.paired, claims=a.claims)


def _add_ls(sub):
    p = sub.add_parser("ls", help="list experiments in the tracking store, their cells, states and where results are",
                       description="No argument: every MLflow experiment of the store holding strbench runs. "
                                   "NAME: the cells of that experiment in the store. X.yaml: every cell the config "
                                   "plans, with its state in the store and its models' cache status. Reads only.")
    p.add_argument("target", nargs="?", default=None, metavar="EXPERIMENT|YAML",
                   help="an MLflow experiment name, or an experiment YAML")
    p.add_argument("--tracking-uri", default=None,
                   help=f"MLflow tracking URI (default: the YAML's tracking.uri, else {DEFAULT_URI})")
    p.add_argument("--profile", default=None, help="with a YAML: the profile to plan (e.g. cpu, paper)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="with a YAML: override a key")
    p.add_argument("--set-from", default=None, metavar="YAML", help="with a YAML: apply an overlay file")
    p.add_argument("--format", choices=["text", "csv", "json"], default="text",
                   help="csv/json: one tidy table on stdout (notes on stderr)")
    p.set_defaults(func=_cmd_ls)


def _cmd_ls(a) -> int:
    from strbench import listing

    res = listing.ls(a.target, tracking_uri=a.tracking_uri, profile=a.profile, overrides=a.set, overlay=a.set_from)
    notes = ls_notes(res)
    if a.format != "text":
        if a.format == "csv":
            print(res.table.to_csv(index=False, lineterminator="\n"), end="")
        else:
            import json

            print(json.dumps(json.loads(res.table.to_json(orient="records", date_format="iso")), indent=1))
        for n in notes:
            print(n, file=sys.stderr)
        return 0
    print(format_overview(res) if isinstance(res, listing.Overview) else format_cells(res))
    return 0


def ls_notes(res) -> list[str]:
    """What `strbench ls` says besides its table (also on stderr for csv/json)."""
    from strbench import listing

    if not res.exists:
        return [f"no tracking store at {listing.store_place(res.uri)}" +
                (": nothing has run yet" if getattr(res, "planned", False) else "")] + list(getattr(res, "notes", []))
    if isinstance(res, listing.Overview):
        return res.notes or ([] if len(res.table) else [f"no strbench runs in the tracking store {res.uri}"])
    out = []
    if not res.planned and not len(res.table):
        out.append(f"experiment {res.experiment!r} holds no cell runs (tuning studies, or parents only); `strbench ls` "
                   "counts its trials")
    if res.planned and not res.found:
        out.append(f"no experiment {res.experiment!r} in {res.uri} yet: nothing has run")
    if res.unplanned:
        out.append(f"{res.unplanned} more cell(s) of experiment {res.experiment!r} in the store are not planned by "
                   f"this config (other settings or versions): strbench ls {res.experiment} lists them")
    return out


def _when(t) -> str:
    return "" if t is None or t != t else t.strftime("%Y-%m-%d %H:%M")


def _age(seconds: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= n:
            return f"{seconds / n:.0f} {unit}"
    return f"{seconds:.0f} s"


def format_overview(ov) -> str:
    from tabulate import tabulate

    if not ov.exists or not len(ov.table):
        return "\n".join(ls_notes(ov))
    t = ov.table
    heads = ["experiment", "parents", "profiles", "cells", "finished", "failed", "running", "killed", "trainings",
             "studies", "trials", "last activity (UTC)", "artifacts"]
    body = [[r.experiment, r.parents, r.profiles, r.cells, r.finished, r.failed,
             f"{r.running} ({r.stale} stale)" if r.stale else r.running, r.killed, r.trainings, r.studies, r.trials,
             _when(r.last_activity), r.artifact_location] for r in t.itertuples(index=False)]
    return "\n".join([f"tracking store {ov.uri}: {len(t)} experiment(s) with strbench runs", "",
                      tabulate(body, headers=heads, tablefmt="simple", disable_numparse=True), ""] + ls_notes(ov)
                     + ["The cells of one: strbench ls NAME; the cells a config plans: strbench ls experiments/X.yaml"])


def _cell_note(r, grace: float, now: float) -> str:
    if r.stale:
        idle = now - r.last_heartbeat.timestamp()
        return f"stale: no heartbeat for {_age(idle)} (grace {_age(grace)}); the next run marks it failed"
    if r.error:
        return r.error
    if r.runs > 1:
        return f"runs, latest first: {r.history}"
    return ""


def _plan_models(models: str) -> str:
    """'texture:1a2b3c4d5e6f=cached ...' -> 'texture:1a2b3c4d(c) ...' (like the dry run; pt = pretrained)."""
    out = []
    for m in models.split():
        name, _, st = m.partition("=")
        role, _, h = name.partition(":")
        out.append(f"{role}:{h[:8]}({'pt' if st == 'pretrained' else st[:1]})")
    return " ".join(out)


def format_cells(cl) -> str:
    """`strbench ls NAME` / `strbench ls X.yaml` as text."""
    import time

    from tabulate import tabulate

    from strbench.report import METRICS

    if not cl.exists and not cl.planned:
        return "\n".join(ls_notes(cl))
    t, counts = cl.table, cl.counts()
    said = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    where = f"tracking {cl.uri}" + (f" (experiment {cl.experiment!r})" if cl.planned else "")
    if cl.planned:
        head = (f"{cl.experiment}" + (f" (profile {cl.profile})" if cl.profile else "") + f" [{cl.source}]: "
                f"{len(t)} cells planned: {said or 'none'}; {where}; cache {cl.cache_dir}")
    else:
        profs = sorted(set(cl.parents["profile"]) - {""}) if len(cl.parents) else []
        head = (f"{cl.experiment}: {len(t)} cells in {cl.uri}: {said or 'none'}; {len(cl.parents)} parent run(s)"
                + (f" (profiles {', '.join(profs)})" if profs else ""))
    lines = [head]
    if cl.artifact_location:
        lines.append(f"artifacts: {cl.artifact_location}/<run id>/artifacts")
    if cl.planned and cl.models:
        lines += ["", "models:"] + [f"  {role:<14} {short}  {st:<10} used by {n} cell(s)"
                                    for role, short, st, n in cl.models]
    now = time.time()
    heads = ["#", "cell", "state", "label"] + [m.name for m in METRICS] + ["run id"] \
        + (["models (c cached, p partial, m missing, pt pretrained)"] if cl.planned else []) + ["note"]
    body = []
    for r in t.itertuples(index=False):
        vals = [_fmt(None if v is None or v != v else v, f".{m.digits}f") if r.state == "finished" else ""
                for m, v in zip(METRICS, (getattr(r, m.key) for m in METRICS))]
        state = r.state + (" (stale)" if r.stale else "")
        idx = "" if r.index is None or r.index != r.index else str(int(r.index))
        body.append([idx, r.cell, state, r.label, *vals, r.run_id]
                    + ([_plan_models(r.models)] if cl.planned else []) + [_cell_note(r, cl.grace_s, now)])
    lines += ["", "cells:", tabulate(body, headers=heads, tablefmt="simple", disable_numparse=True)]
    notes = ls_notes(cl)
    if notes:
        lines += [""] + notes
    lines += ["", "Every column (full hashes, times, artifact URIs): --format csv or --format json"]
    return "\n".join(lines)


def _add_tune(sub):
    p = sub.add_parser("tune", help="Optuna study over the theta/delta schedules")
    p.add_argument("config")
    p.add_argument("--storage", default=None, help="optuna storage URL (default from the YAML; sqlite/journal)")
    p.add_argument("--worker", action="store_true", help="join an existing study instead of creating it")
    p.add_argument("--n-trials", type=int, default=None, help="trials for this process (default from the YAML)")
    p.add_argument("--export", default=None, metavar="YAML", help="write the best trial's overlay and exit")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_tune)


def _cmd_tune(a) -> int:
    from strbench import tune

    return tune.tune_command(a.config, storage=a.storage, worker=a.worker, n_trials=a.n_trials,
                             export=a.export, quiet=a.quiet)


def _add_bench(sub):
    p = sub.add_parser("bench", help="overhead benchmarks (training step, samplers)")
    p.add_argument("what", choices=["train", "sample", "data", "gpu", "all"])
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, default=None, help="image size (default: preset's)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--preset", default=None, help="net preset (default: each benchmark's own)")
    p.add_argument("--repeats", type=int, default=None)
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(a) -> int:
    from strbench import bench

    return bench.bench_command(a.what, device=a.device, size=a.size, batch=a.batch, preset=a.preset,
                               repeats=a.repeats)


def _add_rescore(sub):
    p = sub.add_parser("rescore", help="compute metrics again from the saved outputs of finished cells (no sampling)")
    p.add_argument("--experiment", required=True, help="MLflow experiment name")
    p.add_argument("--tracking-uri", default=None, help=f"MLflow tracking URI (default {DEFAULT_URI})")
    p.add_argument("--run", default=None, help="one cell run id (default: every finished cell run)")
    p.add_argument("--cache-dir", default=".strbench", help="where the run's generated mask sets are (cache_dir)")
    p.add_argument("--protocol", default=None, help="PSNR/SSIM protocol (default: the run's own)")
    p.set_defaults(func=_cmd_rescore)


def _cmd_rescore(a) -> int:
    from strbench.experiment.rescore import rescore

    rows = rescore(a.tracking_uri, a.experiment, run_id=a.run, cache_dir=a.cache_dir, protocol=a.protocol)
    worst = 0.0
    for r in rows:
        parts = []
        for k, v in r.again.items():
            logged = r.logged.get(k)
            d = None if logged is None else abs(v - logged)
            worst = max(worst, d or 0.0)
            parts.append(f"{k} {v:.4f} (logged {_fmt(logged, '.4f')}, |diff| {_fmt(d, '.1e')})")
        print(f"{r.label} [{r.run_id[:8]}] {r.n} outputs: " + "; ".join(parts))
    print(f"{len(rows)} cell run(s) rescored from their saved outputs; largest |diff| from the logged value: {worst:.1e}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from strbench import __version__

    parser = argparse.ArgumentParser(prog="strbench", description=__doc__)
    parser.add_argument("--version", action="version", version=f"strbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_run, _add_validate, _add_ls, _add_report, _add_rescore, _add_tune, _add_schedule, _add_bench):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from strbench.experiment.launch import split_slurm_args

    try:
        argv, slurm = split_slurm_args(list(sys.argv[1:] if argv is None else argv))
    except StrbenchError as e:
        print(f"strbench: error: {e}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    args.slurm = slurm
    try:
        return int(args.func(args) or 0)
    except StrbenchError as e:  # user-facing errors: one line, exit 2
        print(f"strbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("strbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
