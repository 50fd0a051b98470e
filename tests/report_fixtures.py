"""Small synthetic tracked runs for the report tests: cell runs (mlflow.search_runs layout) with parents,
per-image metrics, samples.png grids and KL trajectories, served by FakeTracking (a stand-in for strbench.tracking), shared by the report tests."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd

DAY1, DAY2 = pd.Timestamp("2024-05-01 10:00", tz="UTC"), pd.Timestamp("2024-05-03 09:00", tz="UTC")
BINS = ("10-20%", "40-50%")
BASE = {"IR-SDE": 20.0, "RePaint*": 20.5, "StrDiffusion": 22.0, "biharmonic": 17.0}
METHOD = {"IR-SDE": "irsde", "RePaint*": "repaint", "StrDiffusion": "strdiffusion", "biharmonic": "biharmonic"}
N_IMAGES = 8


def per_image(psnr_mean: float, seed: int, *, n: int = N_IMAGES, spread: float = 1.0) -> pd.DataFrame:
    """Per-image values: a shared image effect (same for every method: the images are the same) + a
    method offset + small noise, so paired differences are tight while unpaired intervals are wide."""
    image_effect = np.linspace(-3, 3, n)
    noise = np.random.default_rng(seed).normal(0, 0.1, n)
    psnr = psnr_mean + spread * image_effect + noise
    return pd.DataFrame({"image_id": [f"img{i:02d}" for i in range(n)], "hole_ratio": 0.15, "psnr": psnr,
                         "ssim": 0.7 + psnr / 100})


def cell(run_id: str, case: str, bin_: str, parent: str, start: pd.Timestamp, *, psnr: float, cell_hash: str,
         seed: int = 0, settings: dict | None = None, nfe: float = 20.0, fid: float | None = 50.0,
         mask_set: str = "irregular") -> dict:
    r = {"run_id": run_id, "status": "FINISHED", "start_time": start, "tags.mlflow.parentRunId": parent,
         "tags.strbench.cell_hash": cell_hash, "tags.strbench.case": case, "tags.strbench.method": METHOD.get(case, case),
         "tags.strbench.mask_bin": bin_, "tags.strbench.mask_set": mask_set, "tags.strbench.dataset": "builtin",
         "tags.strbench.size": "32", "tags.strbench.seed": str(seed), "params.seed": str(seed),
         "params.mask.source": "generator", "params.models.irsde": f"m{seed}",
         "metrics.psnr": psnr, "metrics.ssim": 0.7 + psnr / 100, "metrics.n_images": float(N_IMAGES),
         "metrics.nfe_per_image": nfe, "metrics.sec_per_image": nfe / 100, "metrics.kid": 0.01}
    if fid is not None:
        r["metrics.fid"] = fid
    else:
        r["tags.strbench.fid_missing"] = "fid: off in the config (metrics.fid: false)"
    for k, v in (settings or {}).items():
        r[f"params.settings.{k}"] = str(v)
    return r


def parent(run_id: str, name: str, profile: str, cells: list[str]) -> dict:
    return {"run_id": run_id, "status": "FINISHED", "tags.mlflow.runName": name, "tags.strbench.profile": profile,
            "tags.strbench.cells": ",".join(h[:12] for h in cells)}


def quickstart_then_adhoc():
    """Parent P1 ("quickstart [cpu]", day 1): three methods x two bins. Parent P2 (an ad-hoc run without a
    profile, day 2): RePaint* on one bin with another jump setting (a new cell hash), plus a re-run of
    P1's IR-SDE 10-20% cell (same hash, later: replaces the first). Returns (cells, parents, artifacts)."""
    recs, arts = [], {}
    p1_cells = []
    for case in ("IR-SDE", "RePaint*", "StrDiffusion"):
        for j, b in enumerate(BINS):
            h = f"{case[:3].lower()}{j}".ljust(64, "0")
            p1_cells.append(h)
            rid = f"p1-{case[:3].lower()}-{j}"
            m = BASE[case] - 4 * j
            recs.append(cell(rid, case, b, "P1aaaaaaaa", DAY1, psnr=m, cell_hash=h,
                             settings={"jump_n_sample": 3} if case == "RePaint*" else None,
                             nfe={"IR-SDE": 20, "RePaint*": 50, "StrDiffusion": 94}[case]))
            arts[(rid, "per_image.csv")] = per_image(m, seed=len(recs))
    adhoc = "rep9".ljust(64, "9")
    recs.append(cell("p2-rep-0", "RePaint*", BINS[0], "P2bbbbbbbb", DAY2, psnr=21.5, cell_hash=adhoc,
                     settings={"jump_n_sample": 5}, nfe=80))
    arts[("p2-rep-0", "per_image.csv")] = per_image(21.5, seed=99)
    recs.append(cell("p2-iri-0", "IR-SDE", BINS[0], "P2bbbbbbbb", DAY2, psnr=20.25, cell_hash=p1_cells[0]))
    arts[("p2-iri-0", "per_image.csv")] = per_image(20.25, seed=98)
    cells = pd.DataFrame(recs)
    parents = pd.DataFrame([parent("P1aaaaaaaa", "quickstart [cpu]", "cpu", p1_cells),
                            parent("P2bbbbbbbb", "quickstart", "", [adhoc, p1_cells[0]])])
    return cells, parents, arts


def grid_png(tile_seed: int, output_seed: int, rows: int = 2, size: int = 8, structure: bool = True) -> bytes:
    """A samples.png like the runner's (4 columns, padding 2, white): input and ground truth from
    `tile_seed` (the same images for every method), the output from `output_seed`."""
    from PIL import Image

    rng_in, rng_out = np.random.default_rng(tile_seed), np.random.default_rng(output_seed)
    pad = 2
    img = np.full((pad + rows * (size + pad), pad + 4 * (size + pad), 3), 255, np.uint8)
    for i in range(rows):
        gt = rng_in.integers(0, 255, (size, size, 3), dtype=np.uint8)
        tiles = [gt // 2, (gt if structure else np.zeros_like(gt)), rng_out.integers(0, 255, (size, size, 3),
                                                                                     dtype=np.uint8), gt]
        for j, t in enumerate(tiles):
            y, x = pad + i * (size + pad), pad + j * (size + pad)
            img[y:y + size, x:x + size] = t
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def kl_frame(run_ids: dict[str, str], steps: int = 10) -> dict:
    """kl_trajectory.csv per run (variant -> run id); gray2edge lowest in both regions."""
    level = {"gray2gray": 1.0, "edge2edge": 1.4, "edge2gray": 1.2, "gray2edge": 0.6}
    out = {}
    for variant, rid in run_ids.items():
        recs = [{"step": s, "t": steps - s, "region": region, "kl": scale * level[variant] * np.exp(-s / 5) + 0.05}
                for s in range(steps) for region, scale in (("masked", 1.0), ("unmasked", 0.3))]
        out[(rid, "kl_trajectory.csv")] = pd.DataFrame(recs)
    return out


URI = "http://tracking.invalid"  # never contacted: the tracking module is faked


def synthetic_table1_runs() -> pd.DataFrame:
    """3 methods x 2 bins x 2 seeds; RePaint* at 30-40% has no FID (weights missing); one FAILED run."""
    recs = []
    for k, (case, base, nfe, sec) in enumerate((("IR-SDE", 20.0, 100, 0.52), ("RePaint*", 20.5, 1000, 5.1),
                                                ("StrDiffusion", 21.0, 250, 1.47))):
        for j, (lo, hi) in enumerate(((0.1, 0.2), (0.3, 0.4))):
            for seed in (0, 1):
                r = {"run_id": f"{case[:3].lower()}-{j}-{seed}", "status": "FINISHED", "tags.strbench.case": case,
                     "tags.strbench.mask_bin": f"{lo * 100:g}-{hi * 100:g}%", "tags.strbench.mask_set": "irregular",
                     "tags.strbench.dataset": "builtin", "tags.strbench.size": "32", "tags.strbench.seed": str(seed),
                     "metrics.psnr": base - 3 * j + 0.25 * seed, "metrics.ssim": 0.8 - 0.1 * j + 0.004 * seed + 0.01 * k * (1 - 2 * j),
                     "metrics.nfe_per_image": nfe, "metrics.sec_per_image": sec, "metrics.n_images": 4,
                     "metrics.kid": 0.05 - 0.01 * (case == "StrDiffusion")}
                if case == "RePaint*" and j == 1:
                    r["metrics.fid"] = np.nan
                    r["tags.strbench.fid_missing"] = "no FID weights: set `metrics.fid_weights` (or env STRBENCH_FID_WEIGHTS)"
                else:
                    r["metrics.fid"] = 60.0 - 5 * (case == "StrDiffusion") + 10 * j + seed
                recs.append(r)
    recs.append({"run_id": "failed", "status": "FAILED", "tags.strbench.case": "IR-SDE",
                 "tags.strbench.mask_bin": "10-20%", "metrics.psnr": 99.0})
    return pd.DataFrame(recs)


def synthetic_per_image(runs: pd.DataFrame) -> dict:
    """Per-image values consistent with each run's mean (4 images), for the bootstrap intervals."""
    out = {}
    for _, r in runs[runs.status == "FINISHED"].iterrows():
        off = np.array([-0.6, -0.2, 0.2, 0.6])
        out[r.run_id] = pd.DataFrame({"image_id": range(4), "hole_ratio": 0.15, "psnr": r["metrics.psnr"] + off,
                                      "ssim": r["metrics.ssim"] + off / 20})
    return out


def synthetic_table2_runs() -> pd.DataFrame:
    recs = []
    for k, case in enumerate("ABCD"):
        for ms, b in (("hard", "30-50%"), ("easy", "10-20%")):
            recs.append({"run_id": f"{case}-{ms}", "status": "FINISHED", "tags.strbench.case": case,
                         "tags.strbench.ablation": case, "tags.strbench.mask_set": ms, "tags.strbench.mask_bin": b,
                         "tags.strbench.dataset": "builtin", "metrics.psnr": 18 + k + 3 * (ms == "easy"),
                         "metrics.ssim": 0.7 + 0.01 * k + 0.1 * (ms == "easy"), "metrics.fid": 80 - 4 * k,
                         "metrics.nfe_per_image": [1000, 400, 100, 400][k], "metrics.sec_per_image": 0.1 * (k + 1),
                         "metrics.n_images": 6, "metrics.psnr_ci_low": 17 + k, "metrics.psnr_ci_high": 19 + k,
                         "metrics.ssim_ci_low": 0.65, "metrics.ssim_ci_high": 0.75})
    return pd.DataFrame(recs)


class FakeTracking:
    """Stands in for strbench.tracking (search_experiment_runs / read_csv_artifact / read_artifact_bytes)."""

    def __init__(self, runs: dict, artifacts: dict, parents: dict | None = None):
        self.runs, self.artifacts, self.parents, self.searched = runs, artifacts, parents or {}, []

    def search_experiment_runs(self, tracking_uri, experiment):
        self.searched.append(experiment)
        return self.runs.get(experiment, pd.DataFrame()), self.parents.get(experiment, pd.DataFrame())

    def read_csv_artifact(self, tracking_uri, run_id, path):
        if (run_id, path) not in self.artifacts:
            raise FileNotFoundError(f"{run_id}/{path}")
        return self.artifacts[(run_id, path)]

    def read_artifact_bytes(self, tracking_uri, run_id, path):
        if (run_id, path) not in self.artifacts:
            raise FileNotFoundError(f"{run_id}/{path}")
        return self.artifacts[(run_id, path)]
