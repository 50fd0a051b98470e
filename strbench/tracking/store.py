"""The store: mlflow's one import, tracking URIs, the lock beside a local store, keys and values MLflow
accepts, paged searches, one-line store errors, and opening an experiment (tagged for MLflow's
model-training view)."""
from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional

from strbench.contract import DEFAULT_URI, EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, ROLE_TAG
from strbench.errors import DataError

STORE_LOCK_TIMEOUT_S = 600.0  # creating a sqlite store runs MLflow's migrations (seconds)
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
    from (after a chdir: a notebook, tests running the CLI in several folders); a bare postgresql:// URL with the
    driver strbench installs (strbench.dburl); other URIs (and in-memory SQLite, URIs with a query) unchanged."""
    from strbench.dburl import with_postgres_driver

    p = sqlite_path(uri)
    if p is None or p.is_absolute() or str(p) in ("", ".", ":memory:") or "?" in uri:
        return with_postgres_driver(uri, key="tracking.uri")
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


def tag_filter(tag: str, value: str, op: str = "=") -> str:
    """An MLflow search filter on one tag (``tags.`strbench.cell_hash` = 'ab...'``; quotes in `value` escaped)."""
    esc = str(value).replace("'", "\\'")
    return f"tags.`{tag}` {op} '{esc}'"


def role_filter(kind: str) -> str:
    """The MLflow search filter of the runs of one kind (contract.Kind)."""
    return tag_filter(ROLE_TAG, kind)


def uri_or_default(uri: Optional[str]) -> str:
    """`uri`, else the default store (contract.DEFAULT_URI)."""
    return uri or DEFAULT_URI


def open_experiment(client, name: str, *, artifact_location: Optional[str] = None,
                    tags: Optional[Mapping[str, str]] = None) -> str:
    """The id of MLflow experiment `name`, created (with `artifact_location`, a URI or None) when missing and
    restored when deleted. Created or found, it carries the experiment tag mlflow.experimentKind =
    custom_model_development, so MLflow's UI opens it in its model-training view (runs, metrics, charts)
    rather than its GenAI view (traces, judges, prompts); an experiment already marked otherwise is left so.
    `tags`: more experiment tags, set atomically with a new experiment only (an existing one keeps its own)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location,
                                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, **(tags or {})})
        except Exception:  # created meanwhile by another process
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    if EXPERIMENT_KIND_TAG not in (exp.tags or {}):  # made by an earlier version, or by another process just now
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id
