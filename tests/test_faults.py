"""kill -9 a tiny sweep at chosen moments, run it again to the end, and compare with an uninterrupted run.

Two experiments share one folder (tracking and model cache): `faults` (IR-SDE and StrDiffusion ablation C
over two mask bins: 4 cells, 3 models) and `faults-fid` (one IR-SDE cell with FID on, reusing the cached
IR-SDE model). Each `python -m strbench.cli run` is killed with SIGKILL at its next chosen moment, seen from
the outside: a checkpoint step in the model cache (training), or a marker file written by the test-only
start-up hook in tests/fault_hook/ just before a step (sampling half way down, Inception features, MLflow
metrics / artifacts / run status). Then every cell must be FINISHED exactly once, with metrics, model
weights and training-loss histories bit-identical to the same experiments run once without interruption
(in another folder, at the same time).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from helpers import migrated_db

ROOT = Path(__file__).resolve().parents[1]
HOOK = Path(__file__).resolve().parent / "fault_hook"
STEPS = 18  # training steps of every model (checkpoint every 3, a loss every step)
GRACE_S = 1.0  # a killed run's cell claim is taken over 1 s after its last heartbeat (default 60 s)

pytestmark = pytest.mark.slow


def experiments() -> dict[str, dict]:
    a = {
        "name": "faults",
        "dataset": {"type": "builtin", "size": 16, "train_limit": 16},
        "masks": {"bins": [[0.1, 0.3], [0.3, 0.5]], "per_bin": 2, "train": {"count": 4}},
        "schedule": {"texture": {"T": 8}},
        "methods": {"IR-SDE": {"method": "irsde"}, "C": {"method": "strdiffusion", "ablation": "C"}},
        "nets": {"unet": {"nf": 8, "ch_mult": [1, 2]}},
        "train": {"steps": STEPS, "batch": 2, "log_every": 1, "checkpoint_every": 3, "workers": 0},
        "sample": {"batch": 2},
        "metrics": {"fid": False, "kid": False, "bootstrap": 20, "grid_images": 2, "strip_frames": 2},
        "device": "cpu",
        "floors": False,
    }
    b = {**a, "name": "faults-fid", "methods": {"IR-SDE": {"method": "irsde"}},
         "masks": {**a["masks"], "bins": [[0.1, 0.3]]}, "metrics": {**a["metrics"], "fid": True}}
    return {"a.yaml": a, "b.yaml": b}


def setup_folder(folder: Path) -> None:
    folder.mkdir()
    migrated_db(folder)  # an empty MLflow database (its schema migrations cost ~5 s per new file)
    for name, d in experiments().items():
        (folder / name).write_text(yaml.safe_dump(d, sort_keys=False))


def env_for(folder: Path, fid_cache: Path) -> dict:
    markers = folder / "markers"
    markers.mkdir(exist_ok=True)
    return {**os.environ, "PYTHONPATH": f"{HOOK}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "STRBENCH_TEST_MARKERS": str(markers), "STRBENCH_CACHE": str(fid_cache),
            "STRBENCH_CLAIM_GRACE": str(GRACE_S)}


def start(folder: Path, env: dict, config: str) -> subprocess.Popen:
    for m in (folder / "markers").iterdir():
        m.unlink()
    return subprocess.Popen([sys.executable, "-m", "strbench.cli", "run", config, "-q"], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ------------------------------------------------------------------------------------------------ events


def marker(event: str):
    return lambda folder: any(p.name.split("-", 1)[1] == event for p in (folder / "markers").iterdir())


def _model_dir(folder: Path, role: str) -> Path | None:
    import json

    for d in (folder / ".strbench" / "models").glob("*"):
        try:
            if json.loads((d / "config.json").read_text())["role"] == role:
                return d
        except (OSError, ValueError):
            pass
    return None


def checkpoint(role: str, at_least: int):
    """The role's checkpoint reached `at_least` steps (the model is still training)."""
    seen: dict = {}

    def cond(folder: Path) -> bool:
        d = _model_dir(folder, role)
        f = d / "model.pt" if d else None
        if f is None or not f.is_file() or (d / "complete.json").exists():
            return False
        mtime = f.stat().st_mtime_ns
        if seen.get("mtime") != mtime:  # read the step once per new checkpoint (written by os.replace)
            seen["mtime"], seen["step"] = mtime, torch.load(f, weights_only=True)["step"]
        return seen["step"] >= at_least
    return cond


# (what, experiment, event): each one kills the next process of the sequence
KILLS = [
    ("training irsde (after step 6)", "a.yaml", checkpoint("irsde", 6)),
    ("training irsde again, resumed (after step 12)", "a.yaml", checkpoint("irsde", 12)),
    ("sampling IR-SDE (half way down)", "a.yaml", marker("sample-irsde")),
    ("logging a cell's metrics", "a.yaml", marker("log_metrics")),
    ("logging a cell's artifacts", "a.yaml", marker("log_artifacts")),
    ("ending a cell run FINISHED", "a.yaml", marker("end-cell-FINISHED")),
    ("training structure (after step 6)", "a.yaml", checkpoint("structure", 6)),
    ("training texture (after step 3)", "a.yaml", checkpoint("texture", 3)),
    ("ending the experiment's parent run", "a.yaml", marker("end-parent-FINISHED")),
    ("Inception features (FID)", "b.yaml", marker("features")),
]


def wait_and_kill(proc: subprocess.Popen, folder: Path, cond, what: str, timeout: float = 300.0) -> None:
    t0 = time.time()
    while not cond(folder):
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the run ended (rc {proc.returncode}) before '{what}': {err[-2000:]}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"'{what}' did not happen within {timeout} s")
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    # the killed process's cell claim stays until its heartbeat is older than the grace period: wait for that,
    # so that the next start takes the cell over instead of leaving it to a holder that looks alive
    import json

    beats = [json.loads(p.read_text())["heartbeat"] for p in (folder / ".strbench" / "claims").glob("*/*.json")]
    time.sleep(max([0.0] + [GRACE_S + 0.1 - (time.time() - b) for b in beats]))


# ------------------------------------------------------------------------------------------------ reading back


def mlflow_runs(folder: Path, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def role(run) -> str:
    return run.data.tags.get("strbench.role")


def cell_metrics(run) -> dict:
    return {k: v for k, v in run.data.metrics.items() if k != "sec_per_image" and not k.startswith("train/")}


def loss_histories(client, runs) -> dict:
    """role -> [(step, loss)] of the FINISHED training run of each model (one per model)."""
    out: dict = {}
    for r in runs:
        if role(r) == "training" and r.info.status == "FINISHED":
            name = r.data.tags["strbench.model_role"]
            hist = sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, "train/loss"))
            assert hist and hist[-1][0] == STEPS, (name, hist[-1:])
            assert name not in out, f"two finished training runs of {name}"
            out[name] = hist
    return out


def test_kill_9_at_chosen_moments_then_rerun(tmp_path):
    from strbench import fid_weights as FW

    fid_cache = tmp_path / "fid-cache"  # converted once here, so that no run is killed while converting
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(FW.ENV_CACHE, str(fid_cache))
        FW.convert_fid_helper_weights(FW.converted_path(), verify=False)
    faulty, ref = tmp_path / "faulty", tmp_path / "ref"
    setup_folder(faulty)
    setup_folder(ref)
    env, ref_env = env_for(faulty, fid_cache), env_for(ref, fid_cache)
    # the uninterrupted reference runs meanwhile (same code, same hook, another folder)
    reference = subprocess.Popen(f"{sys.executable} -m strbench.cli run a.yaml -q && "
                                 f"{sys.executable} -m strbench.cli run b.yaml -q", shell=True, cwd=ref, env=ref_env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kills, t0 = [], time.time()
    for what, config, cond in KILLS:
        wait_and_kill(start(faulty, env, config), faulty, cond, what)
        kills.append(f"{what} ({time.time() - t0:.0f} s)")
    for config in ("a.yaml", "b.yaml"):  # to the end
        proc = start(faulty, env, config)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    kills.append(f"finished at {time.time() - t0:.0f} s")
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err
    assert len(kills) - 1 == len(KILLS) >= 8
    print(f"reference done at {time.time() - t0:.0f} s")

    figures = {}
    for name, n_cells in (("faults", 4), ("faults-fid", 1)):
        client, runs = mlflow_runs(faulty, name)
        ref_client, ref_runs = mlflow_runs(ref, name)
        cells = [r for r in runs if role(r) == "cell"]
        fin = {}
        for r in cells:
            if r.info.status == "FINISHED":
                h = r.data.tags["strbench.cell_hash"]
                assert h not in fin, f"{name}: cell {h[:12]} FINISHED twice"
                fin[h] = r
        ref_fin = {r.data.tags["strbench.cell_hash"]: r for r in ref_runs if role(r) == "cell"}
        assert all(r.info.status == "FINISHED" for r in ref_fin.values()) and len(ref_fin) == n_cells
        assert set(fin) == set(ref_fin), name  # every cell FINISHED exactly once, no other cell
        assert not [r for r in cells if r.info.status == "RUNNING"]  # every killed run was marked FAILED
        parents = [r for r in runs if role(r) == "experiment"]
        assert [p.info.status for p in parents] == ["FINISHED"], name
        for h, r in fin.items():  # metrics bit-identical to the uninterrupted run's
            assert cell_metrics(r) == cell_metrics(ref_fin[h]), (name, r.data.tags["strbench.case"])
        if name == "faults-fid":
            assert "fid" in cell_metrics(next(iter(fin.values())))
        figures[name] = {"cell runs": len(cells), "finished": len(fin),
                         "failed": sum(r.info.status == "FAILED" for r in cells)}
        # the loss history of every model, killed and resumed or not, is the uninterrupted one
        hist, ref_hist = loss_histories(client, runs), loss_histories(ref_client, ref_runs)
        assert hist == ref_hist and (set(hist) == {"irsde", "structure", "texture"} if name == "faults" else True)
        for h in hist.values():
            assert [s for s, _ in h] == list(range(1, STEPS + 1))
    # the models themselves: bit-identical weights, no corrupt or leftover checkpoint
    models = sorted(p.name for p in (faulty / ".strbench" / "models").iterdir())
    assert models == sorted(p.name for p in (ref / ".strbench" / "models").iterdir()) and len(models) == 3
    for h in models:
        a = torch.load(faulty / ".strbench" / "models" / h / "model.pt", weights_only=True)
        b = torch.load(ref / ".strbench" / "models" / h / "model.pt", weights_only=True)
        assert a["step"] == b["step"] == STEPS
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert not list((faulty / ".strbench").rglob("*.corrupt"))
    litter = [str(p.relative_to(faulty)) for p in (faulty / ".strbench").rglob("*.tmp")]
    print(f"\n{len(KILLS)} kills: {'; '.join(kills)}; {figures}; temp files left by the kills: {litter or 'none'}")
