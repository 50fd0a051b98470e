"""`strbench run --nproc 2` (torchrun, gloo on CPU): each cell's image batches are dealt to the ranks, gathered
on rank 0, which alone scores and logs; the cells, their per-image outputs and metrics equal a 1-process run."""
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def cfg() -> dict:
    return {"name": "ddp", "dataset": {"type": "builtin", "size": 16}, "floors": False,
            "masks": {"bins": [[0.1, 0.3], [0.3, 0.5]], "per_bin": 4}, "schedule": {"texture": {"T": 3}},
            "nets": {"arch": "authors", "preset": "tiny"}, "train": {"disc_time": "t"},
            "models": {"irsde": "random:0", "structure": "random:1", "texture": "random:2", "discriminator": "random:3"},
            "methods": {"IR-SDE": {"method": "irsde"},
                        "StrDiffusion": {"method": "strdiffusion", "mode": "official", "u_max": 2, "u_min": 1,
                                         "jump": 1, "re": 1}},
            "sample": {"batch": 2}, "metrics": {"fid": False, "kid": False, "bootstrap": 50}, "device": "cpu"}


def finished(folder: Path) -> dict:
    c = sqlite3.connect(folder / "mlflow.db")
    rows = c.execute("""select t.value, m.key, m.value from runs r
                        join tags t on t.run_uuid = r.run_uuid and t.key = 'strbench.cell_hash'
                        join latest_metrics m on m.run_uuid = r.run_uuid where r.status = 'FINISHED'""").fetchall()
    n = c.execute("""select count(*) from runs r join tags t on t.run_uuid = r.run_uuid
                     and t.key = 'strbench.role' and t.value = 'cell'""").fetchone()[0]
    out: dict = {}
    for h, k, v in rows:
        if k != "sec_per_image":
            out.setdefault(h, {})[k] = v
    return {"n_cell_runs": n, "metrics": out}



@pytest.mark.slow
def test_two_ranks_give_the_one_process_results(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = {}
    for name, extra in (("one", []), ("two", ["--nproc", "2"])):
        d = tmp_path / name
        d.mkdir()
        (d / "x.yaml").write_text(yaml.safe_dump(cfg()))
        r = subprocess.run([sys.executable, "-m", "strbench", "run", "x.yaml", "-q", *extra], cwd=d, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "Traceback" not in r.stderr, r.stderr[-2000:]
        out[name] = finished(d)
    one, two = out["one"], out["two"]
    assert one["n_cell_runs"] == two["n_cell_runs"] == 4  # 2 methods x 2 bins, each logged once (rank 0)
    assert set(one["metrics"]) == set(two["metrics"]) and len(one["metrics"]) == 4
    assert one["metrics"] == two["metrics"]  # psnr, ssim, CIs, nfe, n_images: identical
    csv_one = sorted(p.read_text() for p in (tmp_path / "one" / "mlartifacts").rglob("per_image.csv"))
    csv_two = sorted(p.read_text() for p in (tmp_path / "two" / "mlartifacts").rglob("per_image.csv"))
    assert len(csv_one) == 4 and csv_one == csv_two  # per image, to the last digit
