"""Readers: runs of an experiment as mlflow.search_runs DataFrames (reports, rescore, ``strbench ls``) and
artifacts of a run. A read creates nothing: a never-created local store, or one without the experiment, reads
empty; `tracking_uri` None reads the default store (contract.DEFAULT_URI)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional

from strbench.contract import CELL_HASH_TAG, CELLS_TAG, LAST_INVOKED_TAG, ROLE_TAG, SHORT_HASH, Kind, column
from strbench.errors import DataError
from strbench.tracking.store import (_all_pages, _mlflow, _store_error, absolute_uri, role_filter, tag_filter,
                                     tracking_exists, uri_or_default)


def _find_experiment(tracking_uri: Optional[str], experiment: str):
    """(mlflow, the MLflow experiment) for reading `experiment`, with mlflow's tracking URI set to the store;
    None when the local store was never created or holds no such experiment (a read creates nothing)."""
    uri = uri_or_default(tracking_uri)
    if not tracking_exists(uri):
        return None
    mlflow = _mlflow()
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(tracking_uri=absolute_uri(uri)).get_experiment_by_name(experiment)
    if exp is None:
        return None
    mlflow.set_tracking_uri(absolute_uri(uri))
    return mlflow, exp


def search_cell_runs(tracking_uri: Optional[str], experiment: str, *, latest_only: bool = True):
    """FINISHED cell runs of `experiment` as mlflow.search_runs' DataFrame (columns run_id, status,
    params.*, metrics.*, tags.*), one row per cell hash (the latest run of each).

    latest_only: keep only the cells of the most recently invoked parent run (the experiment's
    current configuration); False returns every finished cell ever logged in the experiment.
    An unknown experiment (or a never-created local backend) gives an empty DataFrame.
    """
    import pandas as pd

    found = _find_experiment(tracking_uri, experiment)
    if found is None:
        return pd.DataFrame()
    mlflow, exp = found
    df = mlflow.search_runs(experiment_ids=[exp.experiment_id],
                            filter_string=f"{role_filter(Kind.CELL)} and attributes.status = 'FINISHED'",
                            output_format="pandas")
    if df.empty:
        return df
    col = column(CELL_HASH_TAG)
    df = df.sort_values("start_time").drop_duplicates(col, keep="last")
    if latest_only:
        parents = mlflow.search_runs(experiment_ids=[exp.experiment_id],
                                     filter_string=role_filter(Kind.EXPERIMENT), output_format="pandas")
        ctag, itag = column(CELLS_TAG), column(LAST_INVOKED_TAG)
        if not parents.empty and ctag in parents and itag in parents:
            parents = parents.assign(_inv=pd.to_numeric(parents[itag], errors="coerce"))
            latest = parents.sort_values("_inv").iloc[-1]
            if isinstance(latest.get(ctag), str) and latest[ctag]:
                short = set(latest[ctag].split(","))
                df = df[df[col].str[:SHORT_HASH].isin(short)]
    return df.reset_index(drop=True)


def search_experiment_runs(tracking_uri: Optional[str], experiment: str):
    """Every cell run and every parent run of `experiment`, for `strbench report`'s run selection.

    Returns (cells, parents), two mlflow.search_runs DataFrames (columns run_id, status, start_time,
    tags.*, params.*, metrics.*): `cells` holds every FINISHED cell run (tag strbench.role=cell), several
    per cell hash when a cell was logged more than once; `parents` every parent run (strbench.role=experiment)
    whatever its status (a parent of an interrupted invocation is KILLED while its finished cells count).
    An unknown experiment (or a never-created local backend) gives two empty DataFrames.
    """
    import pandas as pd

    found = _find_experiment(tracking_uri, experiment)
    if found is None:
        return pd.DataFrame(), pd.DataFrame()
    mlflow, exp = found

    def runs(flt: str):
        return mlflow.search_runs(experiment_ids=[exp.experiment_id], filter_string=flt, output_format="pandas")

    cells = runs(f"{role_filter(Kind.CELL)} and attributes.status = 'FINISHED'")
    parents = runs(role_filter(Kind.EXPERIMENT))
    return cells.reset_index(drop=True), parents.reset_index(drop=True)


def read_artifact_bytes(tracking_uri: Optional[str], run_id: str, path: str) -> bytes:
    """The bytes of one artifact of a run (e.g. samples.png)."""
    mlflow = _mlflow()
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                tracking_uri=absolute_uri(uri_or_default(tracking_uri)))
    return Path(local).read_bytes()


def read_csv_artifact(tracking_uri: Optional[str], run_id: str, path: str):
    """A CSV artifact of a run (e.g. per_image.csv, kl_trajectory.csv) as a DataFrame."""
    import pandas as pd

    mlflow = _mlflow()
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                tracking_uri=absolute_uri(uri_or_default(tracking_uri)))
    return pd.read_csv(local)


def download_artifacts(tracking_uri: Optional[str], run_id: str, path: str, dst: str | os.PathLike) -> Path:
    """A run's artifact file or folder, downloaded under `dst`; returns the local path."""
    mlflow = _mlflow()
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst),
                                                    tracking_uri=absolute_uri(uri_or_default(tracking_uri))))


# readers of `strbench ls` (strbench.listing): every status, every role; a never-created local store reads empty

EXPERIMENT_COLUMNS = ["experiment_id", "name", "artifact_location", "creation_time", "last_update_time"]


def _read_error(uri: str, e: Exception) -> DataError:
    return _store_error(uri, e, verb="read", fix="check --tracking-uri (or the YAML's tracking.uri)")


def list_experiments(tracking_uri: Optional[str]):
    """Every active MLflow experiment of the store: a DataFrame with EXPERIMENT_COLUMNS (times in ms since
    the epoch). Empty when a local store was never created (nothing is created); DataError when it is unreadable."""
    import pandas as pd

    uri = uri_or_default(tracking_uri)
    if not tracking_exists(uri):
        return pd.DataFrame(columns=EXPERIMENT_COLUMNS)
    _mlflow()
    from mlflow.tracking import MlflowClient

    try:
        exps = _all_pages(MlflowClient(tracking_uri=absolute_uri(uri)).search_experiments)
    except Exception as e:  # noqa: BLE001 - an unreadable store or a server that fails: one line
        raise _read_error(uri, e) from None
    return pd.DataFrame([{"experiment_id": x.experiment_id, "name": x.name, "artifact_location": x.artifact_location,
                          "creation_time": x.creation_time, "last_update_time": x.last_update_time} for x in exps],
                        columns=EXPERIMENT_COLUMNS)


def search_strbench_runs(tracking_uri: Optional[str], experiment_ids: Iterable[str]):
    """Every run tagged strbench.role (cell, experiment = parent, training, study, trial) of the given experiments,
    whatever its status, as one mlflow.search_runs DataFrame (column experiment_id tells them apart)."""
    import pandas as pd

    uri = uri_or_default(tracking_uri)
    ids = [str(i) for i in experiment_ids]
    if not ids or not tracking_exists(uri):
        return pd.DataFrame()
    mlflow = _mlflow()
    try:
        mlflow.set_tracking_uri(absolute_uri(uri))
        return mlflow.search_runs(experiment_ids=ids, filter_string=tag_filter(ROLE_TAG, "%", "LIKE"),
                                  output_format="pandas").reset_index(drop=True)
    except Exception as e:  # noqa: BLE001
        raise _read_error(uri, e) from None


def search_all_cell_runs(tracking_uri: Optional[str], experiment: str):
    """Every cell run of `experiment` (tag strbench.role=cell), whatever its status (FINISHED, FAILED,
    RUNNING, KILLED), several per cell hash when a cell was run more than once; and every parent run.
    Returns (cells, parents) as mlflow.search_runs DataFrames; two empty ones for an unknown experiment."""
    import pandas as pd

    try:
        found = _find_experiment(tracking_uri, experiment)
    except Exception as e:  # noqa: BLE001
        raise _read_error(uri_or_default(tracking_uri), e) from None
    if found is None:
        return pd.DataFrame(), pd.DataFrame()
    mlflow, exp = found

    def runs(role: str):
        return mlflow.search_runs(experiment_ids=[exp.experiment_id], filter_string=role_filter(role),
                                  output_format="pandas").reset_index(drop=True)

    return runs(Kind.CELL), runs(Kind.EXPERIMENT)


