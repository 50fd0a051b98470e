"""Test-only event markers for tests/test_faults.py (never imported by strbench itself).

`python -m strbench.cli ...` imports this module at start-up when this folder is on PYTHONPATH; if the
environment variable STRBENCH_TEST_MARKERS names a folder, a few calls create an empty file
`<n>-<event>` there *before* they do their work, so that the test can kill -9 the process inside that
step (sampling, Inception features, MLflow logging), or, for an event named in STRBENCH_TEST_HOLD, stop
there until the test releases it (tests/test_tracking_server.py kills the tracking server meanwhile). Nothing else changes: the wrapped calls get the same
arguments and return the same values.
"""
import itertools
import os

_DIR = os.environ.get("STRBENCH_TEST_MARKERS")

if _DIR:
    import functools

    import strbench.metrics
    import strbench.sample
    import strbench.tracking

    _n = itertools.count()
    _cells: set = set()

    _HOLD = set(filter(None, os.environ.get("STRBENCH_TEST_HOLD", "").split(",")))

    def mark(event: str) -> None:
        """Create the marker; if STRBENCH_TEST_HOLD names this event, wait there (once per event name) until
        the test creates `<markers>/release-<event>` (it kills a server meanwhile, say)."""
        open(os.path.join(_DIR, f"{next(_n):04d}-{event}"), "w").close()
        if event in _HOLD:
            _HOLD.discard(event)
            import time

            while not os.path.exists(os.path.join(_DIR, f"release-{event}")):
                time.sleep(0.05)

    def _before(obj, name, event):
        real = getattr(obj, name)

        @functools.wraps(real)
        def wrapper(*a, **kw):
            mark(event(*a, **kw) if callable(event) else event)
            return real(*a, **kw)

        setattr(obj, name, wrapper)

    _sample = strbench.sample.sample

    @functools.wraps(_sample)
    def sample(method, models, image, known, *, sdes, callback=None, **kw):
        """Mark once the reverse process of this batch is half way down (level <= T // 2)."""
        half, seen = sdes.texture.T // 2, []

        def cb(d):
            if not seen and d.get("phase", "step") == "step" and int(d["t"]) <= half:
                seen.append(True)
                mark(f"sample-{method}")
            if callback is not None:
                callback(d)

        return _sample(method, models, image, known, sdes=sdes, callback=cb, **kw)

    strbench.sample.sample = sample
    _before(strbench.metrics, "inception_features", "features")
    T = strbench.tracking.Tracker
    _start_cell = T.start_cell

    @functools.wraps(_start_cell)
    def start_cell(self, *a, **kw):
        run_id = _start_cell(self, *a, **kw)
        _cells.add(run_id)
        mark("start_cell")
        return run_id

    T.start_cell = start_cell
    _before(T, "log_metrics", "log_metrics")
    _before(T, "log_artifacts", "log_artifacts")
    _before(T, "end", lambda self, run_id, status="FINISHED", error=None:
            f"end-{'cell' if run_id in _cells else 'parent'}-{status}")
