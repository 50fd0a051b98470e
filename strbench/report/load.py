"""Reports' runs from MLflow, through strbench.tracking (imported lazily: reports never import mlflow
themselves): where to read (an experiment YAML's tracking settings, or the defaults of strbench.contract), the
selected cell runs (strbench.selection), their per_image.csv and kl_trajectory.csv artifacts, and the assembled
data of each report: a table with its paired comparisons, the claims, the frontier points.

Default experiments: Table 1 `table1_places2`, falling back to `quickstart` when that has no runs (the
quickstart has Table 1's shape: methods x mask bins); Table 2 `ablation_resampling`; Table 3 `table3_celeba`;
Fig. 8 `structure_variants`; the frontier `nfe_frontier`, falling back to `quickstart`. An experiment given
(by name or through its YAML) replaces them all.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from strbench import contract as K
from strbench.errors import StrbenchError
from strbench.report.build import (VARIANT, ReportTable, build_table, cell_keys, frontier_frame, logged_ci,
                                   paired_for_table, paired_notes)
from strbench.report.reference import (CLAIM_SOURCES, FIGURE8_EXPERIMENT, FIGURE8_HINT, FRONTIER_EXPERIMENT,
                                       FRONTIER_FALLBACKS, FRONTIER_HINT, TABLES, TableSpec, run_hint)
from strbench.selection import Selection, SelectionError, empty_selection, select_runs
from strbench.selection import as_str as _str


def _tracking():
    from strbench import tracking  # the only module that imports mlflow

    return tracking


def resolve_source(config: str | os.PathLike | None = None, experiment: str | None = None,
                   tracking_uri: str | None = None, profile: str | None = None) -> tuple[str, str | None]:
    """(tracking URI, experiment) a report reads: `tracking_uri`, else the YAML's `tracking.uri`, else
    strbench.contract.DEFAULT_URI; `experiment`, else the YAML's MLflow experiment (`tracking.experiment`, else
    its `name`), else None (each table's and figure's default). The YAML is read by config.load_experiment."""
    if config is None:
        return tracking_uri or K.DEFAULT_URI, experiment
    from strbench import config as C

    exp = C.load_experiment(config, profile=profile)
    return tracking_uri or exp.tracking.uri, experiment or exp.experiment_name


def _sqlite_missing(uri: str) -> bool:
    """A local sqlite store that does not exist holds no runs (and searching it would create it)."""
    if not uri.startswith("sqlite:///"):
        return False
    path = uri[len("sqlite:///"):]
    return path not in ("", ":memory:") and not Path(path).exists()


def load_selection(tracking_uri: str, experiment: str, *, run: str | None = None, profile: str | None = None,
                   since=None) -> Selection:
    """The selected cell runs of an experiment (see select_runs); empty when there are none."""
    if _sqlite_missing(tracking_uri):
        return empty_selection(experiment)
    cells, parents = _tracking().search_experiment_runs(tracking_uri, experiment)
    return select_runs(cells, parents, experiment=experiment, run=run, profile=profile, since=since)


def load_per_image(tracking_uri: str, runs: pd.DataFrame, axis: str = "mask_bin", *, everything: bool = False
                   ) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """per_image.csv of the runs whose interval must be computed here (runs without a logged interval and
    runs that share a table cell with others: seeds (two levels: seeds x images), pooled runs), or of every
    run (`everything`, for paired comparisons). Returns (frames by run_id, notes)."""
    frames, failed = {}, []
    if runs.empty:
        return frames, []
    runs = runs.reset_index(drop=True)
    keys = cell_keys(runs, axis)
    shared = keys.map(keys.value_counts()) > 1
    tracking = _tracking()
    for i, run in runs.iterrows():
        if not everything and not shared[i] and logged_ci(run, "psnr") is not None \
                and logged_ci(run, "ssim") is not None:
            continue
        try:
            frames[run["run_id"]] = tracking.read_csv_artifact(tracking_uri, run["run_id"], "per_image.csv")
        except Exception:  # noqa: BLE001 - reported as a note: that cell's interval shows as missing
            failed.append(str(run["run_id"]))
    notes = [f"per_image.csv unreadable for {len(failed)} run(s) ({', '.join(f[:8] for f in failed)}): "
             f"their intervals are missing."] if failed else []
    return frames, notes


def load_kl_trajectories(tracking_uri: str, experiment: str, **select) -> pd.DataFrame:
    """The KL trajectories (kl_trajectory.csv) of the experiment's structure-variant runs: Fig. 8 compares the
    variants, so runs of methods without a structure (variant `none`: IR-SDE, the floor methods, whose
    "trajectory" may be a single step) are left out of the figure and of its claims."""
    sel = load_selection(tracking_uri, experiment, **select)
    runs = sel.runs
    if not runs.empty and VARIANT in runs.columns:
        runs = runs[runs[VARIANT].map(_str) != "none"]
    if runs.empty:
        hint = FIGURE8_HINT if experiment == FIGURE8_EXPERIMENT else run_hint(experiment)
        raise StrbenchError(f"no finished cell runs in MLflow experiment '{experiment}' at {tracking_uri}; make "
                            f"them with `{hint}`")
    tracking = _tracking()
    frames = []
    for _, run in runs.iterrows():
        try:
            df = tracking.read_csv_artifact(tracking_uri, run["run_id"], "kl_trajectory.csv")
        except Exception:  # noqa: BLE001 - a run without trajectories is reported below, not fatal
            continue
        df = df.copy()
        df["variant"] = run.get(VARIANT) or "?"
        df["run_id"] = run["run_id"]
        frames.append(df)
    if not frames:
        raise StrbenchError(f"runs of '{experiment}' have no kl_trajectory.csv artifact; run with "
                            f"`metrics.trajectories: true` (as in experiments/structure_variants.yaml)")
    return pd.concat(frames, ignore_index=True)


def _select_first(names: Sequence[str], uri: str, select: dict) -> tuple[Selection | None, list[str]]:
    """The first experiment of `names` with selected runs (notes say when it is not the first)."""
    error = None
    for name in names:
        try:
            sel = load_selection(uri, name, **select)
        except SelectionError as e:
            error = e
            continue
        if not sel.runs.empty:
            notes = [f"No runs in `{names[0]}`: showing experiment `{name}` instead."] if name != names[0] else []
            return sel, notes
    if error is not None:
        raise error
    return None, []


def _runs_for_table(spec: TableSpec, experiment: str | None, uri: str, select: dict | None = None
                    ) -> tuple[Selection, list[str]]:
    names = [experiment] if experiment else [spec.experiment, *spec.fallbacks]
    sel, notes = _select_first(names, uri, select or {})
    if sel is not None:
        return sel, notes
    tried = " nor ".join(f"'{n}'" for n in names)
    hint = f"`{run_hint(experiment or spec.experiment)}`"
    extra = " (CPU-sized: `strbench run experiments/quickstart.yaml`)" \
        if "quickstart" in names and names[0] != "quickstart" else ""
    narrowed = " matching the selection" if select and any(v is not None for v in select.values()) else ""
    raise StrbenchError(f"no finished cell runs{narrowed} in MLflow experiment {tried} at {uri}; make them with "
                        f"{hint}{extra}, or pick another with --experiment")


# ----------------------------------------------------------------------------------------------- assembled
@dataclass
class TableReport:
    """Everything one table's report needs: the selection, the table and (when asked) the paired comparisons."""

    selection: Selection
    table: ReportTable
    per_image: dict[str, pd.DataFrame]
    pairs: pd.DataFrame | None = None


def table_report(number: int, experiment: str | None, uri: str, *, select: dict | None = None,
                 paired: bool = False, n_resamples: int = 2000) -> TableReport:
    """Table `number` of the runs found (the first of its default experiments with runs, or `experiment`)."""
    if number not in TABLES:
        raise StrbenchError(f"unknown table {number}; choose one of {sorted(TABLES)}")
    spec = TABLES[number]
    sel, notes = _runs_for_table(spec, experiment, uri, select)
    per_image, more = load_per_image(uri, sel.runs, spec.axis, everything=paired)
    rt = build_table(sel.runs, number, per_image=per_image, experiment=sel.experiment,
                     notes=notes + more + sel.lines())
    pairs = paired_for_table(sel.runs, per_image, spec.axis, n_resamples=n_resamples) if paired else None
    return TableReport(sel, rt, per_image, pairs)


def frontier_report(experiment: str | None, uri: str, select: dict | None = None
                    ) -> tuple[Selection, pd.DataFrame, list[str]]:
    """The quality-against-compute points (build.frontier_frame) of the runs found, and notes."""
    names = [experiment] if experiment else [FRONTIER_EXPERIMENT, *FRONTIER_FALLBACKS]
    sel, notes = _select_first(names, uri, select or {})
    if sel is None:
        hint = FRONTIER_HINT if experiment is None else run_hint(experiment)
        raise StrbenchError(f"no finished cell runs in MLflow experiment {' nor '.join(repr(n) for n in names)} at "
                            f"{uri}; make them with `{hint}`")
    points, more = frontier_frame(sel.runs)
    return sel, points, notes + more


def claims_report(uri: str, experiment: str | None = None, select: dict | None = None, *,
                  n_resamples: int = 2000, tables: dict[int, TableReport] | None = None
                  ) -> tuple[pd.DataFrame, list[str]]:
    """The paper's claims (strbench.paired.CLAIMS) checked on the runs found. Returns (claims, notes).
    `tables`: table reports already built with paired comparisons (the HTML report passes its own)."""
    from strbench import paired

    out, notes = [], []
    for source, number in CLAIM_SOURCES.items():
        claims = [c for c in paired.CLAIMS if c.source == source]
        spec = TABLES[number]  # the hint names the experiment made for these claims, whatever was read
        hint = spec.run_hint + (" (or, CPU-sized, strbench run experiments/quickstart.yaml)" if number == 1 else "")
        try:
            tr = (tables or {}).get(number)
            if tr is None or tr.pairs is None:
                tr = table_report(number, experiment, uri, select=select, paired=True, n_resamples=n_resamples)
        except StrbenchError as e:  # no runs, or --run/--profile not in this experiment
            name = experiment or " / ".join([spec.experiment, *spec.fallbacks])
            why = str(e) if isinstance(e, SelectionError) else f"no finished cell runs in `{name}`; run `{hint}`"
            out += [paired.missing_claim(c, name, why) for c in claims]
            continue
        rows = [r.name for r in tr.table.rows if r.source == "measured"]
        out += paired.claims_from_pairs(claims, tr.pairs, rows, experiment=tr.selection.experiment, hint=hint)
        notes += [f"Claims from Table {number}: " + tr.selection.lines()[0]] + tr.table.warnings
    claims = [c for c in paired.CLAIMS if c.source == "fig8"]
    name = experiment or FIGURE8_EXPERIMENT
    try:
        kl = load_kl_trajectories(uri, name, **(select or {}))
    except StrbenchError:  # reported as missing runs below
        kl = None
    out += paired.claims_from_kl(claims, kl, experiment=name, hint=FIGURE8_HINT, n_resamples=n_resamples)
    notes += paired_notes(n_resamples) + [
        "Verdict: holds = the paired 95% interval of (better - worse) excludes 0 in the paper's direction; "
        "not shown = it contains 0; reversed = it excludes 0 the other way. With two or more training seeds the "
        "interval has two levels (seeds and image-mask pairs both random: the claim is about the method, not "
        "one trained model, nor only these test images; docs/SCIENCE.md#replicates), the seed SD and the image-level interval "
        "beside it; with one seed the verdict says `one training seed: image-level interval only`: it "
        "describes those test images and that trained model. Table claims use the comparison "
        "pooled over the table's columns (per column in `detail`). Fig. 8 claims pair the KL curves over the "
        "reverse steps (one trajectory per run, mean over images): how consistently one curve lies below the "
        "other, not a test over images."]
    return pd.DataFrame(out, columns=paired.CLAIM_COLUMNS), notes

