"""A `strbench tune` worker process with a cheap deterministic objective (for the storage tests).

    python tests/tune_fake_worker.py TUNE.yaml --storage URL [--worker] [--n-trials K]
        [--sleep S] [--hang] [--log FILE]

The objective is `fake_metrics(overlay)`; each evaluation appends one JSON line {pid, overlay} to
--log (O_APPEND), so a test can count evaluations per trial. --hang sleeps for an hour inside the
objective (a worker to be killed mid-trial).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from strbench import tune  # noqa: E402


def fake_metrics(overlay: dict) -> dict:
    """Deterministic 'validation metrics' of an overlay (x in [0, 1] peaks at 0.7)."""
    x = float(overlay.get("x", 0.5))
    k = overlay.get("kind", "a")
    psnr = 30.0 - 10.0 * (x - 0.7) ** 2 + (0.5 if k == "b" else 0.0)
    return {"psnr": psnr, "fid": 10.0 + 20.0 * x, "ssim": 0.5}


def fake_evaluator(*, sleep: float = 0.0, hang: bool = False, log: str | None = None,
                   steps: int = 3) -> tune.Evaluator:
    def evaluate(overlay: dict, report) -> dict:
        if log:
            line = json.dumps({"pid": os.getpid(), "overlay": overlay}, sort_keys=True) + "\n"
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        if hang:
            time.sleep(3600)
        m = fake_metrics(overlay)
        for i in range(1, steps):  # intermediate values at training steps 100, 200, ...: rising to the final
            time.sleep(sleep / steps)
            report(100 * i, {"psnr": m["psnr"] - (steps - i)})
        time.sleep(sleep / steps)
        return {**m, "train_steps": 100 * steps}  # the final value, at training step 100 x steps

    return tune.Evaluator(evaluate)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("--storage", default=None)
    p.add_argument("--worker", action="store_true")
    p.add_argument("--n-trials", type=int, default=None)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--hang", action="store_true")
    p.add_argument("--log", default=None)
    a = p.parse_args(argv)
    spec = tune.load_spec(a.config)
    tune.run_study(spec, evaluator=fake_evaluator(sleep=a.sleep, hang=a.hang, log=a.log), storage=a.storage,
                   worker=a.worker, n_trials=a.n_trials, track=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
