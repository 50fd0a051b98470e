"""`strbench ls`: the tracking store's experiments, an experiment's cells, or the cells a YAML plans, as
text (or one tidy CSV/JSON table)."""
from __future__ import annotations

import sys

from strbench.cli import console
from strbench.cli.console import fmt
from strbench.contract import DEFAULT_URI


def add_ls(sub):
    p = sub.add_parser("ls", help="list experiments in the tracking store, their cells, states and where results are",
                       description="No argument: every MLflow experiment of the store holding strbench runs. "
                                   "NAME: the cells of that experiment in the store. X.yaml: every cell the config "
                                   "plans, with its state in the store and its models' cache status. Reads only.")
    p.add_argument("target", nargs="?", default=None, metavar="EXPERIMENT|YAML",
                   help="an MLflow experiment name, or an experiment YAML")
    p.add_argument("--tracking-uri", default=None,
                   help=f"MLflow tracking URI (default: the YAML's tracking.uri, else {DEFAULT_URI})")
    console.add_config_options(p, prefix="with a YAML: ")
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
        vals = [fmt(None if v is None or v != v else v, f".{m.digits}f") if r.state == "finished" else ""
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
