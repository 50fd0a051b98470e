"""Which tracked runs a report uses (pure): every FINISHED cell run of an experiment, pooled over invocations
(parent runs) by cell identity (tag `strbench.cell_hash`, the latest FINISHED run of each), narrowed by
parent run, profile or start date, and a record of what was used (parent ids, names, profiles, dates).

Configurations: runs of one case on one table column that differ in more than the seed (another sampler
setting, test masks, schedule, or other trained models) are told apart by their logged params: each
configuration gets its own row label (`RePaint* [jump_n_sample=5]`) and a warning names the differences;
designed differences (structure variant, ablation, swept axes) get labels but no warning.

Inputs are `tracking.search_experiment_runs` frames (mlflow.search_runs layout, column names from
strbench.contract); every report shows `Selection.lines()`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from strbench import contract as K
from strbench.errors import StrbenchError

PAR = K.PARAM_COLUMN
SPLIT_TAGS = ("ablation", "variant")  # appended to a row label when they vary within one case
# params that are not the cell's configuration: seeds (pooled as repeats), model hashes (seed-dependent),
# what is measured (metrics.*), the experiment's list of bins/sets (and a bin's position in it), bookkeeping
_NOT_CONFIG = ("case", "models.", "metrics.", "sample.batch", "device", "tracking.", "cache_dir", "shard.",
               "mask.bins", "mask.sets", "mask.index")
_BOOKKEEPING = ("checkpoint_every", "log_every", "images_every")
# experiment-level training settings, logged with every cell: they matter to a cell only through its models
_MODEL_LEVEL = ("train.", "nets.", "structure.")
MODEL_COLUMN = K.column(K.MODEL_PREFIX)  # tags.strbench.model.<role>
MODELS = "models"  # pseudo-key: the cell's model hashes (tags strbench.model.<role>)


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
    pid = _col(runs, K.column(K.PARENT_RUN_TAG)).map(_str)
    hashes = _col(runs, K.column(K.CELL_HASH_TAG)).map(_str)
    hashes = hashes.where(hashes != "", _col(runs, "run_id").map(_str))
    if run or profile:
        chosen = parents
        if run:
            chosen = parents[_col(parents, "run_id").map(_str).str.startswith(run)] if len(parents) else parents
            if len(chosen) != 1:
                known = ", ".join(f"{r[:8]} ({_str(n)})" for r, n in zip(_col(parents, "run_id"),
                                                                       _col(parents, K.column(K.RUN_NAME_TAG))))
                what = "no" if len(chosen) == 0 else f"{len(chosen)}"
                raise SelectionError(f"--run {run}: {what} parent run(s) of experiment `{experiment}` match; "
                                     f"its parent runs: {known or 'none'}")
            filters.append(f"parent run {run}")
        if profile:
            prof = _col(chosen, K.column(K.PROFILE_TAG)).map(_str)
            if not (prof == profile).any():
                have = sorted(set(_col(parents, K.column(K.PROFILE_TAG)).map(_str)))
                raise SelectionError(f"--profile {profile}: no parent run of experiment `{experiment}` has it "
                                     f"(profiles: {', '.join(p or '(none)' for p in have) or 'none'})")
            chosen = chosen[prof == profile]
            filters.append(f"profile {profile}")
        ids = set(_col(chosen, "run_id").map(_str))
        short = set()
        for s in _col(chosen, K.column(K.CELLS_TAG)).map(_str):
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
        info[_str(p.get("run_id"))] = (_str(p.get(K.column(K.RUN_NAME_TAG))), _str(p.get(K.column(K.PROFILE_TAG))))
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


# ----------------------------------------------------------------------------------------------- configurations
def _param_keys(runs: pd.DataFrame, model_level: bool) -> list[str]:
    out = []
    for c in runs.columns:
        if not c.startswith(PAR):
            continue
        k = c[len(PAR):]
        last = k.split(".")[-1]
        if "seed" in last or last in _BOOKKEEPING or any(k == x or k.startswith(x) for x in _NOT_CONFIG):
            continue
        if any(k.startswith(x) for x in _MODEL_LEVEL) == model_level:
            out.append(c)
    return out


def models_of(runs: pd.DataFrame) -> pd.Series:
    """'role:hash8,...' of each run's models (tags strbench.model.<role>); '' without any."""
    cols = sorted(c for c in runs.columns if c.startswith(MODEL_COLUMN))
    if not cols:
        return pd.Series("", index=runs.index)
    return runs[cols].apply(lambda r: ",".join(f"{c[len(MODEL_COLUMN):]}:{_str(v)[:8]}" for c, v in r.items() if _str(v)),
                            axis=1)


def _param_text(col: pd.Series) -> pd.Series:
    """A param's values as text; not logged and logged as None are the same ('')."""
    return col.map(lambda v: "" if _str(v) == "None" else _str(v))


def value_of(runs: pd.DataFrame, key: str) -> pd.Series:
    """The values of a differing key (a params.* column or MODELS) as text, 'unset' when not logged."""
    vals = models_of(runs) if key == MODELS else _param_text(runs[key])
    return vals.map(lambda v: v or "unset")


def short_key(key: str) -> str:
    """params.settings.jump_n_sample -> jump_n_sample (settings.* / method.* are the sampler's settings)."""
    k = key[len(PAR):] if key.startswith(PAR) else key
    for p in ("settings.", "method."):
        if k.startswith(p):
            return k[len(p):]
    return k


def differing(sub: pd.DataFrame) -> list[str]:
    """Keys whose values differ among runs of one table cell, seeds aside: cell-level params (sampler settings,
    test masks, schedule, ...) and, when runs of one seed use different models, the training params that
    differ (or MODELS when none of those was logged)."""
    out = [k for k in _param_keys(sub, False) if _param_text(sub[k]).nunique() > 1]
    seeds = _col(sub, K.column(K.SEED_TAG)).map(_str)
    if (models_of(sub).groupby(seeds.to_numpy()).nunique() > 1).any():
        out += [k for k in _param_keys(sub, True) if _param_text(sub[k]).nunique() > 1] or [MODELS]
    seen, unique = set(), []
    for k in out:  # one key per short name (settings.x and method.x are the same setting)
        if short_key(k) not in seen:
            seen.add(short_key(k))
            unique.append(k)
    # keys set in every run first: a value against "unset" may only be a key that older runs did not log
    return sorted(unique, key=lambda k: bool((value_of(sub, k) == "unset").any()))


def _case(runs: pd.DataFrame) -> pd.Series:
    return _col(runs, K.column(K.CASE_TAG)).fillna(_col(runs, K.column(K.METHOD_TAG))).fillna("?").astype(str)


def row_labels(runs: pd.DataFrame, cols: pd.Series) -> pd.Series:
    """Case, plus the ablation/variant when those vary within the case, plus the keys that differ between runs
    of the case on one column (`cols`: each run's table column): configurations are never silently pooled."""
    case = _case(runs)
    labels = case.copy()
    for c in case.unique():
        sel = case == c
        extra, used = [], set()
        for tag in SPLIT_TAGS:
            vals = _col(runs, K.column(K.tag(tag)))[sel].map(_str)
            if vals.nunique() > 1:
                extra.append(vals)
                used.add(tag)
        keys = []
        for _, idx in runs[sel].groupby(cols[sel]).groups.items():
            keys += [k for k in differing(runs.loc[idx]) if k not in keys and short_key(k).split(".")[-1] not in used]
        for k in keys[:2]:
            extra.append(short_key(k) + "=" + value_of(runs[sel], k))
        if len(keys) > 2:
            extra.append(pd.Series(f"+{len(keys) - 2} more", index=runs.index[sel]))
        if extra:
            suffix = extra[0].str.cat(extra[1:], sep=", ") if len(extra) > 1 else extra[0]
            labels[sel] = case[sel] + " [" + suffix + "]"
    return labels


def _designed(runs: pd.DataFrame, key: str) -> bool:
    """A difference the experiment asked for: a structure variant / ablation (own row labels) or a swept key
    (tag strbench.axis.<key>)."""
    k = key[len(PAR):]
    return k.split(".")[-1] in SPLIT_TAGS or K.column(K.AXIS_PREFIX + k) in runs.columns


def mixed_configurations(runs: pd.DataFrame, cols: pd.Series, what: str = "") -> list[str]:
    """Warnings for every (case, column) that holds runs of more than one configuration (cell hashes that
    differ in more than the seed). With params logged the rows are split (see row_labels); without them they
    cannot be told apart and are pooled."""
    if runs.empty:
        return []
    hashes = _col(runs, K.column(K.CELL_HASH_TAG)).map(_str)
    hashes = hashes.where(hashes != "", _col(runs, "run_id").map(_str))
    seeds = _col(runs, K.column(K.SEED_TAG)).map(_str)
    out = []
    for (c, col), idx in runs.groupby([_case(runs), cols]).groups.items():
        sub = runs.loc[idx]
        every = differing(sub)
        diff = [k for k in every if k == MODELS or not _designed(runs, k)]
        n = len(set(hashes[idx]))
        if diff:
            vals = "; ".join(f"{short_key(k)} = {' | '.join(sorted(value_of(sub, k).unique()))}" for k in diff[:4])
            more = f" (+{len(diff) - 4} more keys)" if len(diff) > 4 else ""
            out.append(f"{what}{c} at {col}: {len(sub)} runs of {n} configurations ({vals}{more}): shown as "
                       f"separate rows. Narrow with --run, --profile or --since.")
        elif not every and (hashes[idx].groupby(seeds[idx].to_numpy()).nunique() > 1).any():
            out.append(f"{what}{c} at {col}: {n} cell hashes with the same seed and no logged params to tell them "
                       f"apart: their values are pooled. Narrow with --run, --profile or --since.")
    return out



# ----------------------------------------------------------------------------------------------- pairs counted once
# params that cannot change a cell's per-image outputs: the other bins/sets the experiment lists (a generated
# mask depends on its bin's position, logged as mask.index, not on the list), batching, where it ran; the
# experiment-level training settings count through the model hashes (tags strbench.model.<role>)
_NOT_OUTPUT = ("mask.bins", "mask.sets", "mask.index", "sample.batch", "device", "tracking.", "cache_dir", "shard.")
FULL_CONFIG = PAR + "method.method"  # logged by every cell run since cells log their configuration


def _output_params(runs: pd.DataFrame) -> list[str]:
    out = []
    for c in runs.columns:
        if not c.startswith(PAR):
            continue
        k = c[len(PAR):]
        if k.split(".")[-1] in _BOOKKEEPING or any(k == x or k.startswith(x) for x in _NOT_OUTPUT):
            continue
        if any(k.startswith(x) for x in _MODEL_LEVEL):  # they reach a cell through its models' hashes
            continue
        out.append(c)
    return out


def _position(bins: str, lo: str, hi: str) -> str:
    """Position of the bin (lo, hi] in a logged bin list ("[[0.1, 0.2], [0.2, 0.3]]"), "" when not found."""
    import ast

    try:
        pairs = [tuple(float(x) for x in b) for b in ast.literal_eval(bins)]
        return str(pairs.index((float(lo), float(hi))))
    except (ValueError, SyntaxError, TypeError):
        return ""


def mask_position(runs: pd.DataFrame) -> pd.Series:
    """The bin's position in its mask set's list, which seeds generated masks: the logged mask.index, else
    (runs logged before it) found from mask.bins and mask.lo/hi; "" for masks from a folder (no position)."""
    index = _col(runs, PAR + "mask.index").map(_str)
    source = _col(runs, PAR + "mask.source").map(_str)
    bins, lo, hi = (_col(runs, PAR + k).map(_str) for k in ("mask.bins", "mask.lo", "mask.hi"))
    found = pd.Series([_position(b, l, h) if b else "" for b, l, h in zip(bins, lo, hi)], index=runs.index)
    return index.where(index != "", found).where(source != "folder", "")


def pair_identity(runs: pd.DataFrame, keys: list[str]) -> pd.Series:
    """What a run's image-mask pairs are: the `keys` columns (e.g. row label, table column), mask set, bin,
    training seed, model hashes and every logged param that can change its outputs. Runs that did not log
    their configuration (no params.method.method) get their run id: never taken for one another."""
    if runs.empty:
        return pd.Series([], dtype=object)
    parts = [runs[k].map(_str) for k in keys]
    parts += [_col(runs, K.column(t)).map(_str) for t in (K.MASK_SET_TAG, K.MASK_BIN_TAG, K.SEED_TAG)]
    parts.append(models_of(runs))
    for c in _output_params(runs):
        parts.append(_param_text(runs[c]))
    parts.append(mask_position(runs))
    ident = pd.concat(parts, axis=1).apply(lambda r: "\x00".join(r), axis=1)
    full = _col(runs, FULL_CONFIG).map(_str) != ""
    return ident.where(full, "run:" + _col(runs, "run_id").map(_str))


def drop_repeated_pairs(runs: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, int]:
    """Each (configuration, seed, image, mask) pair counted once: of runs with the same pair_identity (e.g. a
    cell re-run under another cell hash by an older strbench, or with a setting that cannot change it), the
    latest is kept. Returns (runs, how many were left out)."""
    if runs.empty:
        return runs, 0
    ident = pair_identity(runs, keys).to_numpy()
    start = _dates(_col(runs, "start_time")).reset_index(drop=True)
    order = start.sort_values(kind="stable").index.to_numpy()  # positions, oldest first (no date: last)
    keep = np.zeros(len(runs), dtype=bool)
    keep[order[~pd.Series(ident[order]).duplicated(keep="last").to_numpy()]] = True
    return runs[keep], int((~keep).sum())
