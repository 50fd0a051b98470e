"""Optuna storages with heartbeats: the only module that touches Optuna's internals.

A journal file (default), SQLite, or PostgreSQL for many machines. Every storage runs with heartbeats:
a trial whose worker died (no heartbeat for ``grace_period`` seconds) is marked FAIL by the next worker
that starts a trial, and a copy with the same parameters is enqueued (``RetryHeartbeatStaleTrialCallback``).
Optuna 5.0's JournalStorage has no heartbeat of its own; :class:`HeartbeatJournalStorage` adds one
(heartbeats are trial system attributes in the journal).
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

from strbench.contract import HEARTBEAT_ATTR  # journal heartbeats: unix time of the last beat
from strbench.dburl import redact, with_postgres_driver
from strbench.errors import ConfigError, StrbenchError
from strbench.tune.spec import StudySpec

DEFAULT_STORAGE = ".strbench/optuna-journal.log"


# --------------------------------------------------------------------------------------------
# storage with heartbeats
# --------------------------------------------------------------------------------------------


def quiet_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    return optuna


def _heartbeat_journal_class():
    optuna = quiet_optuna()
    from optuna.storages import JournalStorage
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.trial import TrialState

    class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
        """JournalStorage + heartbeats (optuna 5.0's journal has none): a beat is the trial system
        attribute ``strbench:heartbeat`` (unix time); a RUNNING trial is stale when neither its last
        beat nor its start is within ``grace_period`` seconds. Clocks of the workers must agree."""

        def __init__(self, backend, *, heartbeat_interval: int, grace_period: int | None,
                     stale_trial_callback=None) -> None:
            super().__init__(backend)
            self.heartbeat_interval = heartbeat_interval
            self.grace_period = grace_period
            self.stale_trial_callback = stale_trial_callback

        def record_heartbeat(self, trial_id: int) -> None:
            try:
                self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another worker already failed this trial as stale

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            grace = self.grace_period or 2 * self.heartbeat_interval
            now = time.time()
            stale = []
            for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                last = float(t.system_attrs.get(HEARTBEAT_ATTR, 0.0))
                if t.datetime_start is not None:  # naive local time -> unix time
                    last = max(last, t.datetime_start.timestamp())
                if now - last > grace:
                    stale.append(t._trial_id)
            return stale

        def get_heartbeat_interval(self) -> int | None:
            return self.heartbeat_interval

        def get_heartbeat_stale_trial_callback(self):
            return self.stale_trial_callback

    return HeartbeatJournalStorage


RDB_SCHEMES = ("sqlite", "postgresql", "mysql")


def storage_kind(url: str) -> str:
    """'journal' for `journal:PATH` or a bare path, 'rdb' for sqlite/postgresql/mysql URLs."""
    if url.startswith("journal:"):
        return "journal"
    if "://" not in url:
        return "journal"
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme in RDB_SCHEMES:
        return "rdb"
    raise ConfigError(f"storage {url!r}: unknown scheme {scheme!r}; use a journal file path, "
                      f"sqlite:///file.db or postgresql://user@host/db")


def resolve_storage_url(url: str | None) -> str:
    """Default journal file; journal paths made absolute (`journal:/abs/path`)."""
    url = url or DEFAULT_STORAGE
    if storage_kind(url) == "journal":
        path = url.removeprefix("journal:")
        return "journal:" + str(Path(path).expanduser().resolve())
    return url


def open_storage(url: str | None, study: StudySpec):
    """Optuna storage for `url` with heartbeats and the retry-on-stale callback."""
    optuna = quiet_optuna()
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    url = resolve_storage_url(url)
    retry = RetryHeartbeatStaleTrialCallback(max_retry=study.max_retry)
    if storage_kind(url) == "journal":
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return _heartbeat_journal_class()(JournalFileBackend(str(path)),
                                          heartbeat_interval=study.heartbeat_interval,
                                          grace_period=study.grace_period, stale_trial_callback=retry)
    engine_kwargs = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}  # several workers on one file
        db = url.split(":///", 1)[-1]
        if db and db != ":memory:":
            Path(db).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("postgresql"):
        url = with_postgres_driver(url)
    try:
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=study.heartbeat_interval,
            grace_period=study.grace_period, heartbeat_stale_trial_callback=retry)
    except Exception as e:  # unreachable server, bad credentials, bad URL
        raise StrbenchError(f"storage {redact(url)}: cannot open: {str(e).splitlines()[0]}") from None
