"""Riding out a tracking store's outage: every MLflow client call of a :class:`~strbench.tracking.Tracker` is
retried while the store does not answer, for at most ``tracking.outage_s`` seconds (README "Scaling out").

MLflow's own HTTP client already retries a failed request a few times (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``); this bound comes on top of those retries, counted from the first
failure of a call. Only a lost connection is retried (connection refused or reset, a timeout, a gateway's
502/503/504, a database server that went away); any other error (a bad request, a duplicate) is raised at
once. When the bound is spent the call raises :class:`TrackingUnavailable` (one line) and the store is taken
for down: later calls try once, without waiting, until one succeeds again, so a sweep that has to stop does
not wait the bound again for every run it still has to close.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

from strbench.errors import StrbenchError

DEFAULT_OUTAGE_S = 300.0
PAUSE_S = 2.0  # between two tries of one call
_MARKERS = ("max retries exceeded", "connection refused", "connection reset", "connection aborted",
            "remotedisconnected", "read timed out", "connect timeout", "connecttimeout", "temporarily unavailable",
            "bad gateway", "service unavailable", "gateway timeout", "server closed the connection",
            "could not connect to server", "connection to server", "terminating connection",
            "name or service not known", "broken pipe")


class TrackingUnavailable(StrbenchError):
    """The tracking store did not answer within the outage bound."""


def is_transient(e: BaseException) -> bool:
    """A lost connection to the store (worth retrying), as opposed to an error the store answered with."""
    if isinstance(e, (ConnectionError, TimeoutError)):
        return True
    try:
        import requests

        if isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return True
    except ImportError:  # pragma: no cover - requests comes with mlflow
        pass
    try:
        from sqlalchemy.exc import DBAPIError

        if isinstance(e, DBAPIError) and e.connection_invalidated:
            return True
    except ImportError:  # pragma: no cover - sqlalchemy comes with mlflow
        pass
    text = " ".join(str(e).split()).lower()
    return any(m in text for m in _MARKERS)


def first_line(e: BaseException) -> str:
    return next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)[:300]


class Patient:
    """An MLflow client whose calls wait out an outage of at most `bound_s` seconds (see the module docstring).
    `say(message)` is told once per outage when the waiting starts and when the store answers again."""

    def __init__(self, client, uri: str, bound_s: float = DEFAULT_OUTAGE_S, *,
                 say: Optional[Callable[[str], None]] = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self._client, self._uri, self._bound = client, uri, float(bound_s)
        self._say, self._sleep, self._clock = say, sleep, clock
        self.down = False  # the bound was spent and no call has succeeded since
        self.waited_s = 0.0  # seconds spent waiting for the store, all outages together

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            return self._call(name, attr, args, kwargs)

        return call

    def _tell(self, message: str) -> None:
        if self._say is not None:
            self._say(message)

    def _call(self, name: str, fn, args, kwargs):
        start = None
        while True:
            try:
                out = fn(*args, **kwargs)
            except Exception as e:
                if not is_transient(e):
                    raise
                now = self._clock()
                if self.down or (start is not None and now - start >= self._bound):
                    self.down = True
                    raise TrackingUnavailable(
                        f"tracking store {self._uri} did not answer for {self._bound:g} s (tracking.outage_s; "
                        f"{name}: {type(e).__name__}: {first_line(e)}); run the same command again once it "
                        "answers: finished cells are kept, the rest run then") from None
                if start is None:
                    start = now
                    self._tell(f"tracking store {self._uri} not answering ({type(e).__name__}); waiting up to "
                               f"{self._bound:g} s (tracking.outage_s)")
                pause = min(PAUSE_S, max(0.0, self._bound - (now - start)))
                self._sleep(pause)
                self.waited_s += pause
                continue
            if start is not None or self.down:
                self._tell(f"tracking store {self._uri} answers again")
            self.down = False
            return out
