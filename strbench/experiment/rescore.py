"""Scores again from saved outputs, without sampling: ``strbench rescore --experiment NAME``.

Every cell run keeps its composited outputs (``outputs/<pos>_img<id>_mask<id>.png``, the exact uint8 pixels
that were scored), its ``cell.yaml`` (``config.yaml`` in runs of earlier versions) and ``per_image.csv``.
Rescoring reads them back, rebuilds the ground truth images and masks from the logged cell config (same
dataset split, same mask set), and computes the
per-image metrics again (PSNR/SSIM with the protocol of the config or another one, and LPIPS with the cell's
backbone when its weights are found): a check that a logged number is what the saved outputs give, and the way
to add a metric to finished runs (LPIPS to runs logged before it existed or without its weights).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import Optional

from strbench.contract import RUN_NAME_TAG, Artifact, column, metric_column
from strbench.errors import DataError


@dataclass
class Rescored:
    run_id: str
    label: str
    n: int
    logged: dict  # metric -> logged value
    again: dict  # metric -> recomputed value
    notes: list = field(default_factory=list)  # why a metric was not computed again (e.g. LPIPS without weights)


def rescore_run(tracking_uri: str, run: dict, *, cache_dir: str = ".strbench", protocol: Optional[str] = None
                ) -> Rescored:
    import numpy as np
    import torch
    import yaml
    from PIL import Image

    from strbench import metrics as M
    from strbench import tracking
    from strbench.experiment.cache import Resources
    from strbench.experiment.plan import CellConfig

    run_id = run["run_id"]
    with tempfile.TemporaryDirectory(prefix="strbench-rescore-") as td:
        try:
            cfg_file = tracking.download_artifacts(tracking_uri, run_id, Artifact.CELL_CONFIG, td)
        except Exception:  # noqa: BLE001 - a run of an earlier version: its config.yaml was the cell config
            cfg_file = tracking.download_artifacts(tracking_uri, run_id, Artifact.RERUNNABLE, td)
        cfg = yaml.safe_load(cfg_file.read_text())
        per = tracking.read_csv_artifact(tracking_uri, run_id, Artifact.PER_IMAGE)
        try:
            out_dir = tracking.download_artifacts(tracking_uri, run_id, Artifact.OUTPUTS, td)
        except Exception:
            raise DataError(f"run {run_id}: no outputs/ artifact (logged before strbench saved every output); "
                            "run the cell again to rescore it") from None
        files = sorted(out_dir.glob("*.png"))
        pred = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1)
                            for f in files]).float() / 255
    c = CellConfig.from_mapping(cfg)
    res = Resources(cache_dir, "cpu")
    if c.mask.pairing == "by_name":  # each image with its own masks (strbench.pairing), in the cell's order
        from strbench.experiment.evaluate import by_name_pairs

        paired = by_name_pairs(c, res, "test")
        known, gt = paired.known[: len(files)], paired.images[: len(files)]
    else:
        known = res.eval_masks(c.mask, c.dataset.size, "test").masks.float()[: len(files)]
        ds = res.dataset(c.dataset, "test")
        gt = torch.stack([ds[int(i)] for i in per["image_id"]]).float()
    if len(files) != len(per) or known.shape[0] != len(per):
        raise DataError(f"run {run_id}: {len(files)} outputs, {len(per)} rows in per_image.csv, "
                        f"{known.shape[0]} masks: they must agree")
    df = M.image_metrics(pred, gt, known, protocol=protocol or c.metrics.protocol)
    again = {"psnr": float(df["psnr"].mean()), "ssim": float(df["ssim"].mean())}
    notes = []
    lp = M.lpips(pred, gt, net=c.metrics.lpips_net, weights_path=c.metrics.lpips_weights)
    if lp.value is None:
        notes.append(f"lpips n/a: {lp.reason}")
    else:
        again["lpips"] = float(lp.value.mean())
    logged = {k: float(run[metric_column(k)]) for k in again
              if metric_column(k) in run and run[metric_column(k)] == run[metric_column(k)]}  # NaN: not logged
    return Rescored(run_id=run_id, label=str(run.get(column(RUN_NAME_TAG), run_id)), n=len(files),
                    logged=logged, again=again, notes=notes)


def rescore(tracking_uri: Optional[str], experiment: str, *, run_id: Optional[str] = None, cache_dir: str = ".strbench",
            protocol: Optional[str] = None) -> list[Rescored]:
    from strbench import tracking

    tracking_uri = tracking.absolute_uri(tracking.uri_or_default(tracking_uri))
    df = tracking.search_cell_runs(tracking_uri, experiment, latest_only=False)
    if df.empty:
        raise DataError(f"no finished cell runs of experiment {experiment!r} in {tracking_uri}")
    rows = [r for _, r in df.iterrows() if run_id is None or r["run_id"] == run_id]
    if not rows:
        raise DataError(f"run {run_id} is not a finished cell run of experiment {experiment!r}")
    return [rescore_run(tracking_uri, dict(r), cache_dir=cache_dir, protocol=protocol) for r in rows]
