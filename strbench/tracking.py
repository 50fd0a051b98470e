"""MLflow tracking: the only module of strbench that imports mlflow.

Layout (docs/INTERFACES.md, "MLflow layout"): one MLflow experiment per strbench experiment name; one
parent run (tag ``strbench.role=experiment``) per resolved experiment, reused when the same experiment
is run again; one nested run per cell (tag ``strbench.role=cell``, ``mlflow.parentRunId``) carrying
``strbench.cell_hash``, and one per model training (``strbench.role=training``, ``strbench.model_hash``) that
every cell using the model links (``strbench.training_run.<role>``). A cell counts as done when a FINISHED cell run with its hash exists in the
experiment. A RUNNING cell run is alive while its tag ``strbench.heartbeat`` (ms, refreshed by the holder's
heartbeat thread, strbench.experiment.claims) is younger than the grace period; an older one is stale and
marked FAILED. A local store (sqlite, file) is created, and a parent run looked up or created, under a file
lock beside it (``<db>.lock``), so processes starting together make one store and one parent run.
Everything goes through ``MlflowClient`` with explicit run ids (no global active run).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from strbench.contract import (CELL_HASH_TAG, CELLS_TAG, CLAIM_TAG, DEFAULT_ARTIFACTS, DEFAULT_URI,  # noqa: F401
                               ERROR_TAG, EXPERIMENT_HASH_TAG, HEARTBEAT_TAG, HOST_TAG, LAST_INVOKED_TAG,
                               MODEL_HASH_TAG, MODEL_ROLE_TAG, PID_TAG, ROLE_TAG)
from strbench.errors import DataError

DEFAULT_TRACKING_URI = DEFAULT_URI
TRAINING_RUN_TAG = "strbench.training_run"  # on cell runs: strbench.training_run.<role> = run id
STORE_LOCK_TIMEOUT_S = 600.0  # creating a sqlite store runs MLflow's migrations (seconds)
SHORT = 12  # characters of a cell hash kept in the parent's cell list
PARAM_MAX = 500  # truncate long parameter values (MLflow limits vary by version/backend)
TAG_MAX = 5000


def _quiet_mlflow() -> None:
    for name in ("mlflow", "alembic", "alembic.runtime.migration", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # reports read CSVs silently
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # -q means quiet with a server too


def _mlflow():
    _quiet_mlflow()
    import mlflow  # noqa: F401  (the one import of mlflow in strbench)

    return mlflow


def sqlite_path(uri: str) -> Optional[Path]:
    """The database file of a sqlite:/// URI, else None."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):])
    return None


def absolute_uri(uri: str) -> str:
    """The URI handed to MLflow: a sqlite:/// URI with a relative path made absolute. MLflow keeps one store per
    URI string for the whole process, so a relative one would keep pointing at the folder it was first opened
    from (after a chdir: a notebook, tests running the CLI in several folders); other URIs (and in-memory
    SQLite, URIs with a query) unchanged."""
    p = sqlite_path(uri)
    if p is None or p.is_absolute() or str(p) in ("", ".", ":memory:") or "?" in uri:
        return uri
    return f"sqlite:///{p.expanduser().resolve()}"


def is_local(uri: str) -> bool:
    return uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri


def tracking_exists(uri: str) -> bool:
    """False when a local backend has never been created (so a read would create it)."""
    p = sqlite_path(uri)
    if p is not None:
        return p.is_file()
    if uri.startswith("file:") or "://" not in uri:
        return Path(uri.removeprefix("file://").removeprefix("file:")).exists()
    return True


def clean_key(key: str) -> str:
    """MLflow keys allow alphanumerics, _ - . space / ; replace anything else by _."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", key)[:250]


def flatten(d: Any, prefix: str = "") -> dict[str, str]:
    """Nested mappings/lists -> {'a.b.0': 'value'} with string values truncated to PARAM_MAX."""
    out: dict[str, str] = {}
    if isinstance(d, Mapping) and d:
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(d, (list, tuple)) and d and all(isinstance(x, Mapping) for x in d):
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        s = str(list(d) if isinstance(d, tuple) else d)
        out[clean_key(prefix.rstrip("."))] = s if len(s) <= PARAM_MAX else s[:PARAM_MAX - 3] + "..."
    return out


def local_lock_path(uri: str) -> Optional[Path]:
    """The lock file beside a local store (``<db>.lock``, ``<folder>.lock``); None for a server."""
    p = sqlite_path(uri)
    if p is not None:
        return p.with_name(p.name + ".lock")
    if uri.startswith("file:") or "://" not in uri:
        d = Path(uri.removeprefix("file://").removeprefix("file:"))
        return d.with_name(d.name + ".lock")
    return None


@contextlib.contextmanager
def _file_lock(path: Path):
    """An OS file lock (filelock: released by the OS if its holder dies), with a one-line error on timeout."""
    from filelock import FileLock, Timeout

    from strbench.errors import StrbenchError

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=STORE_LOCK_TIMEOUT_S)
    except Timeout:
        raise StrbenchError(f"tracking: {path} stayed locked for {STORE_LOCK_TIMEOUT_S:g} s by another strbench "
                            "process creating the MLflow store or its parent run; wait for it, or stop it") from None
    try:
        yield
    finally:
        lock.release()


def _all_pages(search, **kw) -> list:
    """Every item of a paged MLflow search (search_runs, search_experiments), following page tokens."""
    items, token = [], None
    while True:
        page = search(max_results=1000, page_token=token, **kw)
        items.extend(page)
        token = page.token
        if not token:
            return items


def _store_error(uri: str, e: Exception, *, verb: str, fix: str, key: str = "") -> DataError:
    """One line for a store MLflow cannot open or read: the key, the URI, the error's first line, the fix."""
    first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
    return DataError(f"{key + ': ' if key else ''}cannot {verb} the MLflow store {uri} ({type(e).__name__}: "
                     f"{first[:300]}); {fix}")


def _heartbeat_ms(run) -> float:
    """The last sign of life of a run: its heartbeat tag, else its start time (runs of older versions)."""
    raw = run.data.tags.get(HEARTBEAT_TAG, "")
    try:
        return float(raw)
    except ValueError:
        return float(run.info.start_time or 0)


class Tracker:
    """One MLflow experiment on one tracking URI.

    lock_path: a lock file serialising the parent run's creation when the store is a server (several
    machines: a file in the shared cache folder); a local store always locks the file beside it."""

    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None, *,
                 lock_path: str | os.PathLike | None = None):
        mlflow = _mlflow()
        from mlflow.tracking import MlflowClient

        self.uri, self.name = uri, experiment
        p = sqlite_path(uri)
        if p is not None and p.parent and not p.parent.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
        local = local_lock_path(absolute_uri(uri))
        self.lock_path = local if local is not None else (Path(lock_path) if lock_path else None)
        self._mlflow = mlflow
        with self._creation_lock():  # the first process creates the store (migrations) and the experiment
            try:
                self.client = MlflowClient(tracking_uri=absolute_uri(uri))
                exp = self.client.get_experiment_by_name(experiment)
            except Exception as e:  # noqa: BLE001 - an unreadable store, a server that fails: one line, nothing run
                raise _store_error(uri, e, verb="open", key="tracking.uri",
                                   fix="fix or move the store, or point tracking.uri elsewhere") from None
            self._open_experiment(exp, experiment, artifact_location)

    def _creation_lock(self):
        """The store lock while a local store may still be in the making: its file does not exist yet, or it was
        made under the lock (whose file appears before the store's). An existing store made without one
        (copied, older versions) is opened without creating anything beside it; a server makes its own schema
        and a duplicate experiment is retried."""
        local = local_lock_path(absolute_uri(self.uri))
        p = sqlite_path(absolute_uri(self.uri))
        store = p if p is not None else (local.with_name(local.name[:-len(".lock")]) if local else None)
        if local is None or (store.exists() and not local.exists()):
            return contextlib.nullcontext()
        return _file_lock(local)

    def store_lock(self):
        """Held while the store, the experiment or a parent run is looked up and created (a no-op for a
        server without lock_path: MLflow answers a duplicate experiment with an error, retried below)."""
        if self.lock_path is None:
            return contextlib.nullcontext()
        return _file_lock(self.lock_path)

    def _open_experiment(self, exp, experiment: str, artifact_location: str | None) -> None:
        if exp is None:
            loc = None
            if artifact_location and is_local(self.uri):
                loc = Path(artifact_location).expanduser().resolve().as_uri()
            elif artifact_location and "://" in artifact_location:
                loc = artifact_location
            try:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=loc)
            except Exception:  # created meanwhile by another process
                exp = self.client.get_experiment_by_name(experiment)
                if exp is None:
                    raise
                self.experiment_id = exp.experiment_id
        else:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            self.experiment_id = exp.experiment_id

    # ------------------------------------------------------------------ queries
    def _search(self, filter_string: str, experiment_ids: Optional[list[str]] = None) -> list:
        """Every run matching `filter_string` in this experiment (or in `experiment_ids`)."""
        ids = [self.experiment_id] if experiment_ids is None else experiment_ids
        return [r for i in range(0, len(ids), 100)  # MLflow searches at most 100 experiments at once
                for r in _all_pages(self.client.search_runs, experiment_ids=ids[i:i + 100], filter_string=filter_string)]

    def _latest_finished_cells(self) -> dict:
        """cell hash -> its latest FINISHED cell run (whichever invocation or process ran it)."""
        runs = self._search(f"tags.`{ROLE_TAG}` = 'cell' and attributes.status = 'FINISHED'")
        runs.sort(key=lambda r: r.info.start_time or 0)
        return {r.data.tags[CELL_HASH_TAG]: r for r in runs if CELL_HASH_TAG in r.data.tags}

    def finished_cells(self) -> dict[str, str]:
        """cell hash -> run id of its FINISHED cell run (the latest when there are several)."""
        return {h: r.info.run_id for h, r in self._latest_finished_cells().items()}

    def is_finished(self, cell_hash: str) -> bool:
        """A FINISHED cell run with this hash exists (asked again just before a claimed cell runs)."""
        return bool(self._search(f"tags.`{ROLE_TAG}` = 'cell' and tags.`{CELL_HASH_TAG}` = '{cell_hash}' "
                                 "and attributes.status = 'FINISHED'"))

    def failed_since(self, cell_hash: str, since: float) -> bool:
        """A FAILED run of this cell started at or after `since` (time.time()), other than one marked stale."""
        runs = self._search(f"tags.`{ROLE_TAG}` = 'cell' and tags.`{CELL_HASH_TAG}` = '{cell_hash}' "
                            f"and attributes.status = 'FAILED' and attributes.start_time >= {int(since * 1000)}")
        return any(not r.data.tags.get(ERROR_TAG, "").startswith("stale:") for r in runs)

    def running_cells(self) -> list:
        return self._search(f"tags.`{ROLE_TAG}` = 'cell' and attributes.status = 'RUNNING'")

    def fail_run(self, run_id: str, error: str) -> int:
        """Mark one run FAILED with `error` if it is still RUNNING; 1 if it was, else 0."""
        try:
            if self.client.get_run(run_id).info.status != "RUNNING":
                return 0
        except Exception:  # deleted meanwhile
            return 0
        self.end(run_id, "FAILED", error=error)
        return 1

    def fail_stale_runs(self, cell_hashes: Iterable[str], grace_s: float,
                        now: Optional[float] = None) -> tuple[list[str], list[str]]:
        """Mark RUNNING cell runs of `cell_hashes` whose heartbeat (tag strbench.heartbeat, else the
        start time) is older than `grace_s` seconds FAILED. Returns (failed hashes, hashes with a RUNNING
        run whose heartbeat is live). Host and pid are never looked at: only the heartbeat."""
        wanted = set(cell_hashes)
        now_ms = (time.time() if now is None else now) * 1000
        failed, live = [], []
        for r in self.running_cells():
            h = r.data.tags.get(CELL_HASH_TAG)
            if h not in wanted:
                continue
            age = (now_ms - _heartbeat_ms(r)) / 1000
            if age > grace_s:
                who = " ".join(x for x in (r.data.tags.get(HOST_TAG), r.data.tags.get(PID_TAG)) if x) or "its process"
                self.end(r.info.run_id, "FAILED", error=f"stale: {who} gave no heartbeat for {age:.0f} s (more than "
                                                        f"{grace_s:g}) without finishing this cell; it was run again")
                failed.append(h)
            else:
                live.append(h)
        return failed, live

    # ------------------------------------------------------------------ runs
    def parent_run(self, experiment_hash: str, *, run_name: str, tags: Mapping[str, Any],
                   params: Mapping[str, Any], cell_hashes: list[str], artifacts: Optional[str] = None) -> str:
        """The experiment's parent run for this resolved experiment: reused if it exists, else created.
        Looked up and created under the store lock, so processes starting together share one."""
        with self.store_lock():
            return self._parent_run(experiment_hash, run_name=run_name, tags=tags, params=params,
                                    cell_hashes=cell_hashes, artifacts=artifacts)

    def _parent_run(self, experiment_hash: str, *, run_name: str, tags: Mapping[str, Any],
                    params: Mapping[str, Any], cell_hashes: list[str], artifacts: Optional[str]) -> str:
        runs = self._search(f"tags.`{ROLE_TAG}` = 'experiment' and tags.`{EXPERIMENT_HASH_TAG}` = '{experiment_hash}'")
        now = str(int(time.time() * 1000))
        if runs:
            run_id = sorted(runs, key=lambda r: r.info.start_time or 0)[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, LAST_INVOKED_TAG, now)
            return run_id
        cells = ",".join(h[:SHORT] for h in cell_hashes)
        all_tags = {ROLE_TAG: "experiment", EXPERIMENT_HASH_TAG: experiment_hash, LAST_INVOKED_TAG: now,
                    HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), **{k: str(v) for k, v in tags.items()}}
        if len(cells) <= TAG_MAX:
            all_tags[CELLS_TAG] = cells
        run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=run_name)
        run_id = run.info.run_id
        self.log_params(run_id, params)
        if artifacts:
            self.client.log_artifacts(run_id, artifacts)
        return run_id

    def close_parent(self, experiment_hash: str) -> list[str]:
        """Mark the experiment's parent run(s) FINISHED where still open: a run killed after its last cell
        left it RUNNING (call only when every cell is FINISHED and none runs elsewhere). Returns their ids."""
        runs = self._search(f"tags.`{ROLE_TAG}` = 'experiment' and tags.`{EXPERIMENT_HASH_TAG}` = '{experiment_hash}'")
        open_ = [r.info.run_id for r in runs if r.info.status != "FINISHED"]
        for run_id in open_:
            self.client.set_terminated(run_id, "FINISHED")
        return open_

    def start_cell(self, parent_id: str, cell_hash: str, *, run_name: str, tags: Mapping[str, Any],
                   params: Mapping[str, Any]) -> str:
        all_tags = {ROLE_TAG: "cell", CELL_HASH_TAG: cell_hash, "mlflow.parentRunId": parent_id,
                    HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()),
                    **{clean_key(k): str(v)[:TAG_MAX] for k, v in tags.items()}}
        run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=run_name)
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    # ------------------------------------------------------------------ training runs
    def start_training(self, parent_id: str, model_hash: str, role: str, *, params: Mapping[str, Any],
                       tags: Mapping[str, Any]) -> str:
        """A run of its own for training one model (tag strbench.role=training, strbench.model_hash), nested
        under the parent run of the experiment that trains it. Call it holding the model's train lock: any
        other RUNNING training run of the same model, in any experiment of the store, is then a dead process's
        and is marked FAILED (its loss history is replayed into this run from the checkpoint)."""
        for r in self._training_runs(model_hash, "RUNNING"):
            self.end(r.info.run_id, "FAILED", error=f"stale: its process stopped; training resumed by "
                                                    f"{socket.gethostname()} pid {os.getpid()}")
        all_tags = {ROLE_TAG: "training", MODEL_HASH_TAG: model_hash, MODEL_ROLE_TAG: role,
                    "mlflow.parentRunId": parent_id, HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()),
                    **{clean_key(k): str(v)[:TAG_MAX] for k, v in tags.items()}}
        run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=f"train {role} {model_hash[:12]}")
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def _training_runs(self, model_hash: str, status: str) -> list:
        """Training runs of one model with `status`, in every experiment of the store (a model in the shared
        cache may have been trained by another experiment)."""
        from mlflow.entities import ViewType

        ids = [e.experiment_id for e in _all_pages(self.client.search_experiments, view_type=ViewType.ACTIVE_ONLY)]
        runs = self._search(f"tags.`{ROLE_TAG}` = 'training' and tags.`{MODEL_HASH_TAG}` = '{model_hash}' "
                            f"and attributes.status = '{status}'", ids)
        return sorted(runs, key=lambda r: r.info.start_time or 0)

    def training_run(self, model_hash: str) -> Optional[tuple[str, str]]:
        """(experiment id, run id) of the latest FINISHED training run of a model in this store, else None."""
        runs = self._training_runs(model_hash, "FINISHED")
        return (runs[-1].info.experiment_id, runs[-1].info.run_id) if runs else None

    def link_models(self, run_id: str, models: Mapping[str, tuple[str, str]]) -> None:
        """Tag a cell run with the training run of each model it uses (role -> (model hash, how it was
        obtained: 'pretrained ...' or '')) and write the links into its description (Markdown in the
        MLflow UI), so every cell reaches its models' loss curves whichever cell trained them."""
        tags, lines = {}, []
        for role, (model_hash, pretrained) in sorted(models.items()):
            if pretrained:
                lines.append(f"- {role}: pretrained weights, {pretrained} (no training run)")
                continue
            found = self.training_run(model_hash)
            if found is None:
                tags[f"{TRAINING_RUN_TAG}.{role}"] = "not in this store"
                lines.append(f"- {role} model `{model_hash[:12]}`: trained outside this tracking store "
                             "(or before strbench logged trainings as runs)")
                continue
            exp_id, rid = found
            tags[f"{TRAINING_RUN_TAG}.{role}"] = rid
            lines.append(f"- {role} model `{model_hash[:12]}`: [training run {rid[:8]}]"
                         f"(#/experiments/{exp_id}/runs/{rid}) (loss curves: train/loss, train/lr)")
        if lines:
            tags["mlflow.note.content"] = "Models used by this cell:\n\n" + "\n".join(lines)
        self.set_tags(run_id, tags)

    # ------------------------------------------------------------------ parent summary
    def cell_runs_of(self, cell_hashes: Iterable[str]) -> list:
        """The latest FINISHED cell run of each of `cell_hashes` (whichever invocation or process ran it)."""
        latest = self._latest_finished_cells()
        return [latest[h] for h in dict.fromkeys(cell_hashes) if h in latest]

    def log_image(self, run_id: str, image, artifact_file: str) -> None:
        """An image (numpy HxWx3 uint8 or PIL image) as an artifact through MLflow's log_image."""
        self.client.log_image(run_id, image, artifact_file=artifact_file)

    def log_artifact(self, run_id: str, local_file: str | os.PathLike, artifact_path: Optional[str] = None) -> None:
        self.client.log_artifact(run_id, str(local_file), artifact_path)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(clean_key(k), str(v)[:PARAM_MAX]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        self.log_metric_rows(run_id, [(k, v, step) for k, v in metrics.items()])

    def log_metric_rows(self, run_id: str, rows: Iterable[tuple[str, float, int]]) -> None:
        """Batched metric logging: rows of (key, value, step)."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(clean_key(k), float(v), ts, int(s)) for k, v, s in rows]
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[i:i + 1000])

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(clean_key(k), str(v)[:TAG_MAX]) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, tags=items[i:i + 100])

    def log_artifacts(self, run_id: str, local_dir: str | os.PathLike) -> None:
        self.client.log_artifacts(run_id, str(local_dir))

    def end(self, run_id: str, status: str = "FINISHED", error: Optional[str] = None) -> None:
        if error:
            self.client.set_tag(run_id, ERROR_TAG, " ".join(str(error).split())[:TAG_MAX])
        self.client.set_terminated(run_id, status)


class MetricBuffer:
    """Collects (key, value, step) rows and logs them in batches (low overhead for training losses)."""

    def __init__(self, tracker: Tracker, run_id: str, every: int = 200, seconds: float = 15.0):
        self.tracker, self.run_id, self.every, self.seconds = tracker, run_id, every, seconds
        self.rows: list[tuple[str, float, int]] = []
        self.last = time.monotonic()

    def add(self, key: str, value: float, step: int) -> None:
        self.rows.append((key, value, step))
        if len(self.rows) >= self.every or time.monotonic() - self.last > self.seconds:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.tracker.log_metric_rows(self.run_id, self.rows)
            self.rows = []
        self.last = time.monotonic()


# ---------------------------------------------------------------------- readers (strbench.report)


def _find_experiment(tracking_uri: Optional[str], experiment: str):
    """(mlflow, the MLflow experiment) for reading `experiment`, with mlflow's tracking URI set to the store;
    None when the local store was never created or holds no such experiment (a read creates nothing)."""
    uri = tracking_uri or DEFAULT_URI
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
                            filter_string=f"tags.`{ROLE_TAG}` = 'cell' and attributes.status = 'FINISHED'",
                            output_format="pandas")
    if df.empty:
        return df
    col = f"tags.{CELL_HASH_TAG}"
    df = df.sort_values("start_time").drop_duplicates(col, keep="last")
    if latest_only:
        parents = mlflow.search_runs(experiment_ids=[exp.experiment_id],
                                     filter_string=f"tags.`{ROLE_TAG}` = 'experiment'", output_format="pandas")
        ctag = f"tags.{CELLS_TAG}"
        if not parents.empty and ctag in parents and f"tags.{LAST_INVOKED_TAG}" in parents:
            parents = parents.assign(_inv=pd.to_numeric(parents[f"tags.{LAST_INVOKED_TAG}"], errors="coerce"))
            latest = parents.sort_values("_inv").iloc[-1]
            if isinstance(latest.get(ctag), str) and latest[ctag]:
                short = set(latest[ctag].split(","))
                df = df[df[col].str[:SHORT].isin(short)]
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

    cells = runs(f"tags.`{ROLE_TAG}` = 'cell' and attributes.status = 'FINISHED'")
    parents = runs(f"tags.`{ROLE_TAG}` = 'experiment'")
    return cells.reset_index(drop=True), parents.reset_index(drop=True)


def read_artifact_bytes(tracking_uri: Optional[str], run_id: str, path: str) -> bytes:
    """The bytes of one artifact of a run (e.g. samples.png)."""
    mlflow = _mlflow()
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                tracking_uri=absolute_uri(tracking_uri or DEFAULT_URI))
    return Path(local).read_bytes()


def read_csv_artifact(tracking_uri: Optional[str], run_id: str, path: str):
    """A CSV artifact of a run (e.g. per_image.csv, kl_trajectory.csv) as a DataFrame."""
    import pandas as pd

    mlflow = _mlflow()
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                tracking_uri=absolute_uri(tracking_uri or DEFAULT_URI))
    return pd.read_csv(local)


def download_artifacts(tracking_uri: Optional[str], run_id: str, path: str, dst: str | os.PathLike) -> Path:
    """A run's artifact file or folder, downloaded under `dst`; returns the local path."""
    mlflow = _mlflow()
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst),
                                                    tracking_uri=absolute_uri(tracking_uri or DEFAULT_URI)))


# readers of `strbench ls` (strbench.listing): every status, every role; a never-created local store reads empty

EXPERIMENT_COLUMNS = ["experiment_id", "name", "artifact_location", "creation_time", "last_update_time"]


def _read_error(uri: str, e: Exception) -> DataError:
    return _store_error(uri, e, verb="read", fix="check --tracking-uri (or the YAML's tracking.uri)")


def list_experiments(tracking_uri: Optional[str]):
    """Every active MLflow experiment of the store: a DataFrame with EXPERIMENT_COLUMNS (times in ms since
    the epoch). Empty when a local store was never created (nothing is created); DataError when it is unreadable."""
    import pandas as pd

    uri = tracking_uri or DEFAULT_URI
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

    uri = tracking_uri or DEFAULT_URI
    ids = [str(i) for i in experiment_ids]
    if not ids or not tracking_exists(uri):
        return pd.DataFrame()
    mlflow = _mlflow()
    try:
        mlflow.set_tracking_uri(absolute_uri(uri))
        return mlflow.search_runs(experiment_ids=ids, filter_string=f"tags.`{ROLE_TAG}` LIKE '%'",
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
        raise _read_error(tracking_uri or DEFAULT_URI, e) from None
    if found is None:
        return pd.DataFrame(), pd.DataFrame()
    mlflow, exp = found

    def runs(role: str):
        return mlflow.search_runs(experiment_ids=[exp.experiment_id], filter_string=f"tags.`{ROLE_TAG}` = '{role}'",
                                  output_format="pandas").reset_index(drop=True)

    return runs("cell"), runs("experiment")


__all__ = ["Tracker", "MetricBuffer", "search_cell_runs", "search_experiment_runs", "read_csv_artifact",
           "read_artifact_bytes", "download_artifacts", "flatten", "clean_key",
           "tracking_exists", "sqlite_path", "DEFAULT_URI", "DEFAULT_TRACKING_URI", "list_experiments",
           "search_strbench_runs", "search_all_cell_runs"]


# --- tuning (strbench tune) ---
# One parent run per Optuna study (tag strbench.role=study, strbench.study=<name>), found again by tag
# when workers join; one nested run per finished trial (tag strbench.role=trial, mlflow.parentRunId),
# with the trial's overlay as params and its validation metrics, each under val_<metric> (val_psnr,
# val_ssim, ...; never the test split's names): the intermediate values at their training steps and the
# final value at the last step, so that the chart of val_psnr is the trial's learning curve. Its state is
# the tag strbench.trial_state (COMPLETE | PRUNED | FAIL); MLflow has no "pruned" status and pruning is a
# normal end, so a pruned trial's run is FINISHED too, named "trial N (pruned at step S)", with its
# intermediate curve and no final value. A failed trial's run is FAILED. The parent's summary metrics:
# n_complete, n_pruned, n_failed, best_trial, best_val_<objective>.

STUDY_TAG, TRIAL_NUMBER_TAG, TRIAL_STATE_TAG = "strbench.study", "strbench.trial_number", "strbench.trial_state"
TRIAL_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}
VAL_PREFIX = "val_"  # trial metrics are measured on the validation split


class StudyRuns:
    """MLflow runs of one tuning study (parent + nested trial runs) in one experiment."""

    def __init__(self, uri: str, experiment: str, study_name: str, artifact_location: str | None = None):
        self.tracker = Tracker(uri, experiment, artifact_location)
        self.study = study_name

    def parent(self, run_id: Optional[str] = None, *, params: Mapping[str, Any],
               tags: Mapping[str, Any]) -> str:
        """The study's parent run: `run_id` if it still exists, else the oldest run tagged with this
        study, else a new one. Marked RUNNING while a process works on the study."""
        client = self.tracker.client
        if run_id:
            try:
                run = client.get_run(run_id)
                if run.info.lifecycle_stage != "deleted" and run.info.experiment_id == self.tracker.experiment_id:
                    client.update_run(run_id, status="RUNNING")
                    return run_id
            except Exception:  # removed from this backend: find or create another
                pass
        esc = self.study.replace("'", "\\'")
        with self.tracker.store_lock():  # workers starting together share one parent
            runs = self.tracker._search(f"tags.`{ROLE_TAG}` = 'study' and tags.`{STUDY_TAG}` = '{esc}'")
            if runs:
                run_id = sorted(runs, key=lambda r: r.info.start_time or 0)[0].info.run_id
                client.update_run(run_id, status="RUNNING")
                return run_id
            all_tags = {ROLE_TAG: "study", STUDY_TAG: self.study, HOST_TAG: socket.gethostname(),
                        PID_TAG: str(os.getpid()), **{clean_key(k): str(v)[:TAG_MAX] for k, v in tags.items()}}
            run = client.create_run(self.tracker.experiment_id, tags=all_tags, run_name=f"study {self.study}")
            self.tracker.log_params(run.info.run_id, params)
            return run.info.run_id

    def log_trial(self, parent_id: str, number: int, *, params: Mapping[str, Any], metrics: Mapping[str, float],
                  curve: Iterable[tuple[int, Mapping[str, Any]]] = (), state: str = "COMPLETE",
                  step: Optional[int] = None, retry_of: Optional[int] = None, error: Optional[str] = None) -> str:
        """One nested, already terminated run for a finished trial: `curve` ((training step, metrics) of
        its intermediate values) and, unless it was pruned, its final `metrics` at `step` (default: the
        curve's last step), each metric as val_<name>."""
        if state not in TRIAL_STATUS:
            raise ValueError(f"unknown trial state {state!r}; expected one of {sorted(TRIAL_STATUS)}")
        curve = [(int(s), m) for s, m in curve]
        last = max((s for s, _ in curve), default=None)
        tags = {ROLE_TAG: "trial", STUDY_TAG: self.study, TRIAL_NUMBER_TAG: str(number), TRIAL_STATE_TAG: state,
                "mlflow.parentRunId": parent_id, HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
        if retry_of is not None:
            tags["strbench.retry_of"] = str(retry_of)
        name = f"trial {number}" + (f" (pruned at step {last})" if state == "PRUNED" and last is not None else "")
        run = self.tracker.client.create_run(self.tracker.experiment_id, tags=tags, run_name=name)
        run_id = run.info.run_id
        self.tracker.log_params(run_id, params)
        points: dict[tuple[str, int], float] = {}  # (key, step) -> value: one point per metric and step
        final = [] if state == "PRUNED" else [((last or 0) if step is None else int(step), metrics)]
        for s, m in curve + final:
            for k, v in m.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    points[(VAL_PREFIX + k, s)] = float(v)
        if points:
            self.tracker.log_metric_rows(run_id, [(k, v, s) for (k, s), v in points.items()])
        self.tracker.end(run_id, TRIAL_STATUS[state], error=error)
        return run_id

    def finish_parent(self, parent_id: str, metrics: Mapping[str, float], status: str = "FINISHED") -> None:
        if metrics:
            self.tracker.log_metrics(parent_id, metrics)
        self.tracker.end(parent_id, status)


def search_study_runs(tracking_uri: Optional[str], experiment: str, study_name: str):
    """(parent runs, trial runs) of a study as mlflow.search_runs DataFrames (empty when none)."""
    import pandas as pd

    found = _find_experiment(tracking_uri, experiment)
    if found is None:
        return pd.DataFrame(), pd.DataFrame()
    mlflow, exp = found
    esc = study_name.replace("'", "\\'")

    def runs(role: str):
        return mlflow.search_runs(experiment_ids=[exp.experiment_id], output_format="pandas",
                                  filter_string=f"tags.`{ROLE_TAG}` = '{role}' and tags.`{STUDY_TAG}` = '{esc}'")

    return runs("study"), runs("trial")
