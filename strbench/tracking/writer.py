"""The writer: :class:`Tracker` (one MLflow experiment on one store: parent, cell and training runs, stale
runs by heartbeat, batched logging) and :class:`MetricBuffer`."""
from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from strbench.contract import (BOARD_TAG, CELL_HASH_TAG, CELLS_TAG, DEFAULT_ARTIFACTS, ERROR_TAG, EXPERIMENT_HASH_TAG, HEARTBEAT_TAG, HOST_TAG,
                               LAST_INVOKED_TAG, MODEL_HASH_TAG, MODEL_ROLE_TAG, NOTE_TAG, PARENT_RUN_TAG, PID_TAG,
                               ROLE_TAG, SHORT_HASH, TRAINING_RUN_PREFIX, Kind, ui_link)
from strbench.tracking.store import (PARAM_MAX, TAG_MAX, _all_pages, _file_lock, _mlflow, _store_error, absolute_uri,
                                     clean_key, is_local, local_lock_path, open_experiment, role_filter, sqlite_path,
                                     tag_filter)
from strbench.tracking.patience import DEFAULT_OUTAGE_S, Patient

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
    machines: a file in the shared cache folder); a local store always locks the file beside it.
    outage_s: how long every call waits out a store that does not answer (strbench.tracking.patience); `say`
    hears when the waiting starts and ends.
    board: the id of the claims folder this process claims cells through (strbench.experiment.claims): a new
    experiment is created carrying it, and an experiment that carries another one is refused (processes writing
    to one experiment must share one claims folder, or they could run a cell twice), unless `take_over`."""

    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None, *,
                 lock_path: str | os.PathLike | None = None, outage_s: float = DEFAULT_OUTAGE_S,
                 say=None, board: Optional[str] = None, take_over: bool = False):
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
                client = MlflowClient(tracking_uri=absolute_uri(uri))
                client.get_experiment_by_name(experiment)  # an unreadable store fails here, with one line
            except Exception as e:  # noqa: BLE001 - an unreadable store, a server that fails: one line, nothing run
                raise _store_error(uri, e, verb="open", key="tracking.uri",
                                   fix="fix or move the store, or point tracking.uri elsewhere") from None
            self.client = Patient(client, uri, outage_s, say=say)
            self.experiment_id = open_experiment(self.client, experiment,
                                                 artifact_location=self._artifact_uri(artifact_location),
                                                 tags={BOARD_TAG: board} if board else None)
            if board:
                self._check_board(board, take_over)

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

    def _artifact_uri(self, artifact_location: str | None) -> str | None:
        """Where a new experiment keeps its artifacts: a folder as a file:// URI (with a server, a folder every
        machine sees at that path), a URI as given; not set: ./mlartifacts beside a local store, the server's
        default (its --artifacts-destination) for a server or database."""
        if not artifact_location:
            if not is_local(self.uri):
                return None
            artifact_location = DEFAULT_ARTIFACTS
        if "://" in artifact_location:
            return artifact_location
        return Path(artifact_location).expanduser().resolve().as_uri()

    def _check_board(self, board: str, take_over: bool) -> None:
        """The experiment's claims folder is `board` (set now if it has none, or with `take_over`); another one
        refuses the run in one line."""
        from strbench.errors import ConfigError

        have = (self.client.get_experiment(self.experiment_id).tags or {}).get(BOARD_TAG)
        if have == board:
            return
        if have and not take_over:
            raise ConfigError(
                f"tracking: MLflow experiment {self.name!r} in {self.uri} is shared through another claims folder "
                f"({have[:12]}, not this cache_dir's {board[:12]}): processes writing to one experiment must use one "
                "cache_dir (a shared folder), or a cell could run twice; point cache_dir at that folder, or, if it "
                "is gone for good, run once with --set claims.take_over=true")
        self.client.set_experiment_tag(self.experiment_id, BOARD_TAG, board)

    # ------------------------------------------------------------------ queries
    def _search(self, filter_string: str, experiment_ids: Optional[list[str]] = None) -> list:
        """Every run matching `filter_string` in this experiment (or in `experiment_ids`)."""
        ids = [self.experiment_id] if experiment_ids is None else experiment_ids
        return [r for i in range(0, len(ids), 100)  # MLflow searches at most 100 experiments at once
                for r in _all_pages(self.client.search_runs, experiment_ids=ids[i:i + 100], filter_string=filter_string)]

    def _latest_finished_cells(self) -> dict:
        """cell hash -> its latest FINISHED cell run (whichever invocation or process ran it)."""
        runs = self._search(f"{role_filter(Kind.CELL)} and attributes.status = 'FINISHED'")
        runs.sort(key=lambda r: r.info.start_time or 0)
        return {r.data.tags[CELL_HASH_TAG]: r for r in runs if CELL_HASH_TAG in r.data.tags}

    def finished_cells(self) -> dict[str, str]:
        """cell hash -> run id of its FINISHED cell run (the latest when there are several)."""
        return {h: r.info.run_id for h, r in self._latest_finished_cells().items()}

    def is_finished(self, cell_hash: str) -> bool:
        """A FINISHED cell run with this hash exists (asked again just before a claimed cell runs)."""
        return bool(self._search(f"{role_filter(Kind.CELL)} and {tag_filter(CELL_HASH_TAG, cell_hash)} "
                                 "and attributes.status = 'FINISHED'"))

    def failed_since(self, cell_hash: str, since: float) -> bool:
        """A FAILED run of this cell started at or after `since` (time.time()), other than one marked stale."""
        runs = self._search(f"{role_filter(Kind.CELL)} and {tag_filter(CELL_HASH_TAG, cell_hash)} "
                            f"and attributes.status = 'FAILED' and attributes.start_time >= {int(since * 1000)}")
        return any(not r.data.tags.get(ERROR_TAG, "").startswith("stale:") for r in runs)

    def running_cells(self) -> list:
        return self._search(f"{role_filter(Kind.CELL)} and attributes.status = 'RUNNING'")

    def fail_run(self, run_id: str, error: str) -> int:
        """Mark one run FAILED with `error` if it is still RUNNING; 1 if it was, else 0."""
        try:
            if self.client.get_run(run_id).info.status != "RUNNING":
                return 0
        except Exception:  # deleted meanwhile
            return 0
        self.end(run_id, "FAILED", error=error)
        return 1

    def fail_stale_runs(self, cell_hashes: Iterable[str], grace_s: float, now: Optional[float] = None, *,
                        board: Optional[str] = None) -> tuple[list[str], list[str]]:
        """Mark RUNNING cell runs of `cell_hashes` whose heartbeat (tag strbench.heartbeat, else the
        start time) is older than `grace_s` seconds FAILED. Returns (failed hashes, hashes with a RUNNING
        run whose heartbeat is live). Host and pid are never looked at: only the heartbeat. With `board` (the
        claims folder whose claim on these cells the caller holds now), a RUNNING run claimed through that same
        folder is an orphan whatever its heartbeat (its process ended without closing it: no claim holds it)
        and is marked FAILED too."""
        wanted = set(cell_hashes)
        now_ms = (time.time() if now is None else now) * 1000
        failed, live = [], []
        for r in self.running_cells():
            h = r.data.tags.get(CELL_HASH_TAG)
            if h not in wanted:
                continue
            age = (now_ms - _heartbeat_ms(r)) / 1000
            if board is not None and r.data.tags.get(BOARD_TAG) == board:
                self.end(r.info.run_id, "FAILED", error="stale: no claim holds this run (its process ended without "
                                                        "closing it, e.g. the tracking store was unreachable); "
                                                        "it was run again")
                failed.append(h)
            elif age > grace_s:
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
        runs = self._search(f"{role_filter(Kind.EXPERIMENT)} and {tag_filter(EXPERIMENT_HASH_TAG, experiment_hash)}")
        now = str(int(time.time() * 1000))
        if runs:
            run_id = sorted(runs, key=lambda r: r.info.start_time or 0)[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, LAST_INVOKED_TAG, now)
            return run_id
        cells = ",".join(h[:SHORT_HASH] for h in cell_hashes)
        all_tags = {ROLE_TAG: Kind.EXPERIMENT, EXPERIMENT_HASH_TAG: experiment_hash, LAST_INVOKED_TAG: now,
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
        runs = self._search(f"{role_filter(Kind.EXPERIMENT)} and {tag_filter(EXPERIMENT_HASH_TAG, experiment_hash)}")
        open_ = [r.info.run_id for r in runs if r.info.status != "FINISHED"]
        for run_id in open_:
            self.client.set_terminated(run_id, "FINISHED")
        return open_

    def start_cell(self, parent_id: str, cell_hash: str, *, run_name: str, tags: Mapping[str, Any],
                   params: Mapping[str, Any]) -> str:
        all_tags = {ROLE_TAG: Kind.CELL, CELL_HASH_TAG: cell_hash, PARENT_RUN_TAG: parent_id,
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
        all_tags = {ROLE_TAG: Kind.TRAINING, MODEL_HASH_TAG: model_hash, MODEL_ROLE_TAG: role,
                    PARENT_RUN_TAG: parent_id, HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()),
                    **{clean_key(k): str(v)[:TAG_MAX] for k, v in tags.items()}}
        run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=f"train {role} {model_hash[:12]}")
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def _training_runs(self, model_hash: str, status: str) -> list:
        """Training runs of one model with `status`, in every experiment of the store (a model in the shared
        cache may have been trained by another experiment)."""
        from mlflow.entities import ViewType

        ids = [e.experiment_id for e in _all_pages(self.client.search_experiments, view_type=ViewType.ACTIVE_ONLY)]
        runs = self._search(f"{role_filter(Kind.TRAINING)} and {tag_filter(MODEL_HASH_TAG, model_hash)} "
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
                tags[TRAINING_RUN_PREFIX + role] = "not in this store"
                lines.append(f"- {role} model `{model_hash[:12]}`: trained outside this tracking store "
                             "(or before strbench logged trainings as runs)")
                continue
            exp_id, rid = found
            tags[TRAINING_RUN_PREFIX + role] = rid
            lines.append(f"- {role} model `{model_hash[:12]}`: [training run {rid[:8]}]"
                         f"({ui_link(exp_id, rid)}) (loss curves: train/loss, train/lr)")
        if lines:
            tags[NOTE_TAG] = "Models used by this cell:\n\n" + "\n".join(lines)
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

    def artifact_root(self, run_id: str) -> str:
        """Where a run's artifacts go (for messages: a full disk names it)."""
        try:
            return self.client.get_run(run_id).info.artifact_uri
        except Exception:  # noqa: BLE001 - only for a message
            return "the run's artifact location"

    def clear_error(self, run_id: str) -> None:
        """Remove a run's error tag (a parent whose cells all finished after an earlier failure)."""
        if ERROR_TAG in self.client.get_run(run_id).data.tags:
            self.client.delete_tag(run_id, ERROR_TAG)

    @property
    def unreachable(self) -> bool:
        """The store did not answer within tracking.outage_s and has not answered since."""
        return bool(getattr(self.client, "down", False))


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


