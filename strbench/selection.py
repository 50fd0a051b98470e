"""Which tracked runs a report uses (pure): every FINISHED cell run of an experiment, pooled over invocations
(parent runs) by cell identity (tag `strbench.cell_hash`, the latest FINISHED run of each), narrowed by
parent run, profile or start date, and a record of what was used (parent ids, names, profiles, dates).

Inputs are `tracking.search_experiment_runs` frames (mlflow.search_runs layout); `strbench.report` prints
`Selection.lines()` with every output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from strbench.errors import StrbenchError

TAG = "tags.strbench."


def column(runs: pd.DataFrame, name: str) -> pd.Series:
    """runs[name], or a column of None when the frame has no such column."""
    return runs[name] if name in runs.columns else pd.Series([None] * len(runs), index=runs.index, dtype=object)


def as_str(x) -> str:
    """A cell value as text ("" for None/NaN)."""
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else str(x)


_col, _str = column, as_str


class SelectionError(StrbenchError):
    """--run/--profile match nothing in an experiment."""


@dataclass
class Selection:
    """The cell runs a report uses and where they come from."""

    experiment: str
    runs: pd.DataFrame  # one row per cell hash: the latest FINISHED run
    used: pd.DataFrame  # parent runs used: parent, name, profile, first, last, cells
    filters: list[str] = field(default_factory=list)
    replaced: int = 0  # older FINISHED runs of the same cells, not used

    def lines(self) -> list[str]:
        """What was used, for the report's notes (and stderr)."""
        f = f" ({'; '.join(self.filters)})" if self.filters else " (all FINISHED cell runs, latest per cell hash)"
        out = [f"Runs used: {len(self.runs)} cell run(s) of MLflow experiment `{self.experiment}`{f}"
               + (f"; {self.replaced} older run(s) of the same cells not used" if self.replaced else "") + "."]
        for p in self.used.itertuples(index=False):
            dates = p.first if p.first == p.last else f"{p.first} to {p.last}"
            out.append(f"  parent {p.parent} `{p.name}`, profile {p.profile or '(none)'}: {p.cells} cell(s), "
                       f"{dates}")
        return out



def _dates(s: pd.Series) -> pd.Series:
    return pd.to_datetime(s, utc=True, errors="coerce") if len(s) else s


def _parse_since(since) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(since)
    except (ValueError, TypeError):
        raise StrbenchError(f"--since {since!r}: not a date; give e.g. 2024-05-01 or '2024-05-01 14:30'") from None
    if ts is pd.NaT:
        raise StrbenchError(f"--since {since!r}: not a date; give e.g. 2024-05-01 or '2024-05-01 14:30'")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def select_runs(cells: pd.DataFrame, parents: pd.DataFrame | None = None, *, experiment: str = "",
                run: str | None = None, profile: str | None = None, since=None) -> Selection:
    """The cell runs a report uses: FINISHED cell runs, narrowed by parent run / profile / start date, then
    the latest run per cell hash. A cell belongs to a parent when it was logged under it or when the parent's
    configuration lists its hash (tag strbench.cells; a re-run skips cells done elsewhere)."""
    parents = parents if parents is not None else pd.DataFrame()
    filters = []
    if cells is None or cells.empty:
        return Selection(experiment, pd.DataFrame(), _used(pd.DataFrame(), parents), filters)
    runs = cells[_col(cells, "status").fillna("FINISHED") == "FINISHED"].copy()
    pid = _col(runs, "tags.mlflow.parentRunId").map(_str)
    hashes = _col(runs, TAG + "cell_hash").map(_str)
    hashes = hashes.where(hashes != "", _col(runs, "run_id").map(_str))
    if run or profile:
        chosen = parents
        if run:
            chosen = parents[_col(parents, "run_id").map(_str).str.startswith(run)] if len(parents) else parents
            if len(chosen) != 1:
                known = ", ".join(f"{r[:8]} ({_str(n)})" for r, n in zip(_col(parents, "run_id"),
                                                                       _col(parents, "tags.mlflow.runName")))
                what = "no" if len(chosen) == 0 else f"{len(chosen)}"
                raise SelectionError(f"--run {run}: {what} parent run(s) of experiment `{experiment}` match; "
                                     f"its parent runs: {known or 'none'}")
            filters.append(f"parent run {run}")
        if profile:
            prof = _col(chosen, TAG + "profile").map(_str)
            if not (prof == profile).any():
                have = sorted(set(_col(parents, TAG + "profile").map(_str)))
                raise SelectionError(f"--profile {profile}: no parent run of experiment `{experiment}` has it "
                                     f"(profiles: {', '.join(p or '(none)' for p in have) or 'none'})")
            chosen = chosen[prof == profile]
            filters.append(f"profile {profile}")
        ids = set(_col(chosen, "run_id").map(_str))
        short = set()
        for s in _col(chosen, TAG + "cells").map(_str):
            short |= {h for h in s.split(",") if h}
        keep = pid.isin(ids) | hashes.map(lambda h: h[:12] in short)
        runs, pid, hashes = runs[keep], pid[keep], hashes[keep]
    if since is not None:
        ts = _parse_since(since)
        start = _dates(_col(runs, "start_time"))
        keep = start >= ts
        runs, pid, hashes = runs[keep], pid[keep], hashes[keep]
        filters.append(f"started since {ts:%Y-%m-%d %H:%M} UTC")
    runs = runs.assign(_hash=hashes, _parent=pid)
    if "start_time" in runs.columns:
        runs = runs.sort_values("start_time", kind="stable")
    latest = runs.drop_duplicates("_hash", keep="last")
    replaced = len(runs) - len(latest)
    latest = latest.drop(columns=["_hash"]).reset_index(drop=True)
    return Selection(experiment, latest.drop(columns=["_parent"]), _used(latest, parents), filters, replaced)


def _used(runs: pd.DataFrame, parents: pd.DataFrame) -> pd.DataFrame:
    cols = ["parent", "name", "profile", "first", "last", "cells"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    info = {}
    for _, p in parents.iterrows() if len(parents) else []:
        info[_str(p.get("run_id"))] = (_str(p.get("tags.mlflow.runName")), _str(p.get(TAG + "profile")))
    start = _dates(_col(runs, "start_time"))
    recs = []
    for parent, idx in runs.groupby(runs["_parent"].map(_str)).groups.items():
        name, prof = info.get(parent, ("?", ""))
        st = start[idx].dropna()
        first = f"{st.min():%Y-%m-%d %H:%M}" if len(st) else "date unknown"
        last = f"{st.max():%Y-%m-%d %H:%M}" if len(st) else first
        recs.append({"parent": parent[:8] or "?", "name": name, "profile": prof, "first": first, "last": last,
                     "cells": len(idx)})
    return pd.DataFrame(recs, columns=cols).sort_values("first", kind="stable").reset_index(drop=True)


def empty_selection(experiment: str) -> Selection:
    """No runs (an experiment that was never tracked)."""
    return Selection(experiment, pd.DataFrame(), _used(pd.DataFrame(), pd.DataFrame()))
