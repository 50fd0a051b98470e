"""Plain helpers shared by several test modules (import them: ``from helpers import tiny``).

Fixtures live in ``conftest.py``; these are ordinary functions a test calls with its own arguments.
- ``tiny(tmp_path, **overrides)``: an experiment config that trains and samples in seconds.
- ``migrated_db(tmp_path)``: an empty, migrated MLflow sqlite DB at tmp_path/mlflow.db.
- ``runs(tmp_path)``: the MLflow runs of the tiny experiment tracked there.
"""
from __future__ import annotations

from pathlib import Path

from strbench import config as C


def tiny(tmp_path: Path, **extra) -> dict:
    """A config that trains and samples in seconds: 16 px, T = 5, 2-4 training steps."""
    d = {
        "name": "tiny",
        "dataset": {"type": "builtin", "size": 16, "train_limit": 32},
        "masks": {"bins": [[0.1, 0.3], [0.3, 0.5]], "per_bin": 2, "train": {"count": 8}},
        "schedule": {"texture": {"T": 5}},
        "methods": {"IR-SDE": {"method": "irsde"},
                    "RePaint*": {"method": "repaint", "jump_length": 2, "jump_n_sample": 2},
                    "StrDiffusion": {"method": "strdiffusion", "u_max": 2}},
        "nets": {"unet": {"nf": 8, "ch_mult": [1, 2]}, "roles": {"discriminator": {"nf": 8, "ch_mult": [1, 2]}}},
        "train": {"steps": 4, "batch": 2, "log_every": 1, "checkpoint_every": 1},
        "sample": {"batch": 2},
        "metrics": {"fid": False, "kid": False, "bootstrap": 20, "grid_images": 2, "strip_frames": 3},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "artifact_location": str(tmp_path / "mlartifacts")},
        "cache_dir": str(tmp_path / "cache"),
        "device": "cpu",
        "floors": False,  # no classical floor methods: these tests count cells of the three methods
    }
    for k, v in extra.items():
        C.set_path(d, k, v)
    return d


_TEMPLATE: dict = {}


def migrated_db(tmp_path: Path) -> None:
    """Put an empty, already migrated MLflow sqlite DB at tmp_path/mlflow.db (creating one runs
    MLflow's schema migrations, ~5 s; tests copy a template made once per session)."""
    import shutil
    import tempfile

    if "path" not in _TEMPLATE:
        from strbench import tracking

        d = Path(tempfile.mkdtemp(prefix="strbench-mlflow-template-"))
        tracking.Tracker(f"sqlite:///{d}/mlflow.db", "template", str(d / "art"))
        _TEMPLATE["path"] = d / "mlflow.db"
    shutil.copy(_TEMPLATE["path"], tmp_path / "mlflow.db")


def runs(tmp_path: Path):
    """The MLflow runs of the tiny experiment tracked in tmp_path/mlflow.db (a pandas frame)."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    return mlflow.search_runs(experiment_names=["tiny"])
