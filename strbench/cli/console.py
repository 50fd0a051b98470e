"""The console side of commands: a run's progress events (tqdm bars, one line per cell) and the dry-run
table."""
from __future__ import annotations


def add_config_options(p, *, prefix: str = "") -> None:
    """--set, --set-from and --profile: how every command that reads an experiment YAML changes it."""
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=prefix + "override a key by path")
    p.add_argument("--set-from", default=None, metavar="YAML", help=prefix + "apply an overlay file (e.g. tune --export)")
    p.add_argument("--profile", default=None, help=prefix + "profile of the experiment to use (e.g. cpu, paper)")


def fmt(v, spec: str) -> str:
    """A number as `spec`, or n/a."""
    return "n/a" if v is None else format(v, spec)


def cell_summary(i: int, n: int, cell, m: dict, seconds: float) -> str:
    return (f"[{i}/{n}] {cell.label}: PSNR {fmt(m.get('psnr'), '.2f')} SSIM {fmt(m.get('ssim'), '.3f')} "
            f"FID {fmt(m.get('fid'), '.2f')} | {int(m['n_images'])} img, {m['nfe_per_image']:.0f} NFE/img, "
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
        elif kind == "tracking":
            self.say(d["message"])
        elif kind == "jobs_submitted":
            self.say(f"{d['experiment']}: submitted {len(d['job_ids'])} job(s) ({d['launcher']}), one per group of "
                     f"cells sharing models: {', '.join(d['job_ids'])}; logs in {d['logs']}")


def format_plan(st) -> str:
    """The dry-run table: cells, the models they need and what is cached / finished."""
    exp, mine, all_cells = st.exp, st.mine, st.all_cells
    status = {m.hash: s for m, s, _ in st.models}
    lines = [f"{exp.name}" + (f" (profile {exp.profile})" if exp.profile else "") +
             f": {len(mine)} cells" + (f" of {len(all_cells)} (--cells)" if len(mine) != len(all_cells) else "") +
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
