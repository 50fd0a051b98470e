"""Progress of a run as events: the library says what happens, the caller decides what to show.

The default :class:`Progress` shows nothing (a notebook or tune gets no output); the command line
passes its console implementation (``strbench.cli``: progress bars and one line per cell).
"""
from __future__ import annotations


class Bar:
    """A progress bar handle: `update_to(n)` and `close()`; this one does nothing."""

    def update_to(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class Progress:
    """Run events. Bars: ``bar(kind, total, desc)`` with kind ``cells`` | ``train`` | ``sample``.
    Events: ``event(kind, **data)`` with kind
      ``started``        experiment, n_cells, done_before, todo, device, tracking_uri, mlflow_experiment
      ``nothing_to_do``  experiment, n_cells, tracking_uri, mlflow_experiment
      ``skipped``        label, why (e.g. claimed by another live process, or finished by one meanwhile)
      ``waiting``        what ("model"), spec (ModelSpec), why: another process holds its train lock;
                         this one waits, then loads what that process trained
      ``training``       spec (ModelSpec), label (the cell that needs it)
      ``cell_finished``  i, n, cell, metrics, seconds
      ``cell_failed``    i, n, cell, error
      ``jobs_submitted`` experiment, launcher, job_ids, logs (strbench.experiment.launch)
      ``tracking``       message: the tracking store stopped answering, or answers again
    """

    def bar(self, kind: str, total: int, desc: str) -> Bar:
        return Bar()

    def event(self, kind: str, **data) -> None:
        pass


SILENT = Progress()
