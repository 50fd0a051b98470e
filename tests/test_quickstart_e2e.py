"""A tiny end-to-end `strbench run`: one parent run and one nested run per cell in MLflow with the
metrics and artifacts of docs/INTERFACES.md; a re-run creates no new runs; bad input exits 2 with one
line and creates no MLflow database."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import mlflow
import yaml

from strbench import cli
from helpers import migrated_db, runs, tiny  # the shared tiny config (16 px, T = 5, 4 training steps)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: single-threaded tiny nets

CELL_TAGS = ("strbench.cell_hash", "strbench.method", "strbench.case", "strbench.variant", "strbench.dataset",
             "strbench.mask_set", "strbench.mask_bin", "strbench.mask_lo", "strbench.mask_hi", "strbench.seed")
CELL_METRICS = ("psnr", "ssim", "psnr_ci_low", "psnr_ci_high", "ssim_ci_low", "ssim_ci_high", "nfe_per_image",
                "sec_per_image", "n_images")


def write(tmp_path: Path, d: dict, name="tiny.yaml") -> str:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return str(p)


def artifacts(tmp_path, run_id) -> set:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    return {f.path for f in c.list_artifacts(run_id)}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Run the tiny experiment once (module scope: the tests below inspect the same tracking DB)."""
    tmp = tmp_path_factory.mktemp("e2e")
    d = tiny(tmp, **{"metrics.trajectories": True})
    path = write(tmp, d)
    t0 = time.time()
    rc = cli.main(["run", path, "-q"])
    return tmp, path, rc, time.time() - t0


def test_run_logs_one_parent_and_one_nested_run_per_cell(finished):
    tmp, _, rc, _ = finished
    assert rc == 0
    df = runs(tmp)
    parents = df[df["tags.strbench.role"] == "experiment"]
    cells = df[df["tags.strbench.role"] == "cell"]
    trainings = df[df["tags.strbench.role"] == "training"]
    assert len(parents) == 1 and len(cells) == 6 and len(trainings) == 4 and len(df) == 11  # 4 models trained
    assert (df["status"] == "FINISHED").all()
    assert (cells["tags.mlflow.parentRunId"] == parents["run_id"].iloc[0]).all()
    assert (trainings["tags.mlflow.parentRunId"] == parents["run_id"].iloc[0]).all()
    assert cells["tags.strbench.cell_hash"].nunique() == 6
    for t in CELL_TAGS:
        assert cells[f"tags.{t}"].notna().all(), t
    for m in CELL_METRICS:
        assert cells[f"metrics.{m}"].notna().all(), m
    assert set(cells["tags.strbench.case"]) == {"IR-SDE", "RePaint*", "StrDiffusion"}
    assert set(cells["tags.strbench.mask_bin"]) == {"10-30%", "30-50%"}
    assert (cells["metrics.n_images"] == 2).all()
    assert (cells["metrics.psnr_ci_low"] <= cells["metrics.psnr"]).all()
    assert (cells["metrics.psnr"] <= cells["metrics.psnr_ci_high"]).all()
    # FID is off in the tiny config: no value, and the reason is recorded
    assert "metrics.fid" not in cells or cells["metrics.fid"].isna().all()
    assert cells["tags.strbench.fid_missing"].str.contains("off in the config").all()
    # NFE: StrDiffusion with resampling spends more evaluations than IR-SDE
    nfe = cells.groupby("tags.strbench.case")["metrics.nfe_per_image"].mean()
    assert nfe["StrDiffusion"] > nfe["IR-SDE"] and nfe["RePaint*"] > nfe["IR-SDE"]


def test_cells_have_artifacts_and_training_curves(finished):
    tmp, _, _, _ = finished
    df = runs(tmp)
    cells = df[df["tags.strbench.role"] == "cell"]
    for run_id in cells["run_id"]:
        arts = artifacts(tmp, run_id)
        assert {"config.yaml", "cell.yaml", "per_image.csv", "samples.png", "samples_tiles.png", "trajectory.png",
                "kl_trajectory.csv"} <= arts
    from strbench import tracking

    uri = f"sqlite:///{tmp}/mlflow.db"
    kl = tracking.read_csv_artifact(uri, cells["run_id"].iloc[0], "kl_trajectory.csv")
    assert list(kl.columns) == ["step", "t", "region", "kl"] and set(kl["region"]) == {"masked", "unmasked"}
    per = tracking.read_csv_artifact(uri, cells["run_id"].iloc[0], "per_image.csv")
    assert list(per.columns) == ["image_id", "mask_id", "hole_ratio", "psnr", "ssim"] and len(per) == 2
    outs = [a.path for a in mlflow.MlflowClient(uri).list_artifacts(cells["run_id"].iloc[0], "outputs")]
    assert len(outs) == 2 and all(o.endswith(".png") and "_img" in o and "_mask" in o for o in outs)  # every output
    assert ((per["hole_ratio"] > 0.1) & (per["hole_ratio"] <= 0.5)).all()
    # each model was trained once, in a training run of its own with its losses as step metrics; every cell
    # links the training run of each model it uses, whichever cell trained it
    tr = df[df["tags.strbench.role"] == "training"]
    assert sorted(tr["tags.strbench.model_role"]) == ["discriminator", "irsde", "structure", "texture"]
    assert (tr["status"] == "FINISHED").all() and tr["metrics.train/loss"].notna().all()
    assert not any(c.startswith("metrics.train/") and cells[c].notna().any() for c in cells.columns)
    by_role = dict(zip(tr["tags.strbench.model_role"], tr["run_id"]))
    for _, c in cells.iterrows():
        uses = {k.removeprefix("tags.strbench.model."): v for k, v in c.items()
                if k.startswith("tags.strbench.model.") and isinstance(v, str)}
        assert uses, c["tags.strbench.case"]
        for r in uses:
            assert c[f"tags.strbench.training_run.{r}"] == by_role[r]
            assert by_role[r] in c["tags.mlflow.note.content"]
    assert cells["tags.strbench.trained.irsde"].notna().sum() == 1  # trained inside the first cell needing it
    reported = tracking.search_cell_runs(uri, "tiny")
    assert len(reported) == 6


def test_parent_run_summarises_its_cells(finished):
    """The parent run carries every cell's metrics (psnr/<case>/<bin>, psnr/<case> over the bins) and a
    summary.csv with one row per cell and the run it came from."""
    import pandas as pd

    from strbench import tracking

    tmp = finished[0]
    df = runs(tmp)
    parent = df[df["tags.strbench.role"] == "experiment"].iloc[0]
    cells = df[df["tags.strbench.role"] == "cell"]
    assert parent["metrics.cells_finished"] == parent["metrics.cells_total"] == 6
    for _, c in cells.iterrows():
        key = "metrics." + tracking.clean_key(f"psnr/{c['tags.strbench.case']}/{c['tags.strbench.mask_bin'][:-1]}")
        assert parent[key] == pytest.approx(c["metrics.psnr"]), key
    for case, g in cells.groupby("tags.strbench.case"):
        assert parent["metrics." + tracking.clean_key(f"ssim/{case}")] == pytest.approx(g["metrics.ssim"].mean())
    summary = tracking.read_csv_artifact(f"sqlite:///{tmp}/mlflow.db", parent["run_id"], "summary.csv")
    assert len(summary) == 6 and set(summary["state"]) == {"FINISHED"}
    merged = summary.merge(cells, left_on="run_id", right_on="run_id")
    assert len(merged) == 6 and (merged["psnr"] == merged["metrics.psnr"]).all()
    assert isinstance(summary, pd.DataFrame)


def test_a_cells_logged_config_validates_and_reruns_that_cell(finished, capsys):
    """config.yaml of a cell run is a re-runnable experiment: `strbench validate` accepts it, it expands to the
    experiment's cells with the same hashes, and `--cells <hash>` of its header selects that cell."""
    from strbench import config, tracking
    from strbench.experiment import expand

    tmp = finished[0]
    cells = runs(tmp)
    cells = cells[cells["tags.strbench.role"] == "cell"]
    run = cells.iloc[0]
    path = tracking.download_artifacts(f"sqlite:///{tmp}/mlflow.db", run["run_id"], "config.yaml", tmp / "dl")
    text = path.read_text()
    h = run["tags.strbench.cell_hash"]
    assert f"--cells {h[:12]}" in text
    assert cli.main(["validate", str(path)]) == 0
    again = expand(config.load_experiment(str(path)))
    assert sorted(c.hash for c in again) == sorted(cells["tags.strbench.cell_hash"])
    capsys.readouterr()
    assert cli.main(["run", str(path), "--cells", h[:12], "--dry-run"]) == 0
    assert "1 done, 0 to run" in capsys.readouterr().out


def test_cells_log_a_labelled_samples_grid(finished):
    """samples.png (log_image) is the labelled grid, larger than the bare tile grid samples_tiles.png that the
    HTML report merges; both show the same number of rows of images."""
    import io

    from PIL import Image

    from strbench import tracking

    tmp = finished[0]
    df = runs(tmp)
    rid = df[df["tags.strbench.role"] == "cell"]["run_id"].iloc[0]
    uri = f"sqlite:///{tmp}/mlflow.db"
    labelled = Image.open(io.BytesIO(tracking.read_artifact_bytes(uri, rid, "samples.png")))
    tiles = Image.open(io.BytesIO(tracking.read_artifact_bytes(uri, rid, "samples_tiles.png")))
    assert labelled.width > tiles.width and labelled.height > tiles.height


def test_rerun_does_nothing_and_creates_no_runs(finished, capsys):
    tmp, path, _, first = finished
    before = runs(tmp)
    t0 = time.time()
    assert cli.main(["run", path]) == 0
    again = time.time() - t0
    out = capsys.readouterr().out
    assert "nothing to do" in out
    after = runs(tmp)
    assert len(after) == len(before) and set(after["run_id"]) == set(before["run_id"])
    assert again < 30


def test_dry_run_after_a_run_reports_done_and_cached(finished, capsys):
    tmp, path, _, _ = finished
    assert cli.main(["run", path, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count(" done ") == 6 and "4 cached" in out and "0 to train" in out


@pytest.mark.parametrize("change, needle", [
    ({"masks.binz": [[0.1, 0.2]]}, "masks.binz: unknown key"),
    ({"train.steps": "many"}, "train.steps: expected"),
    ({"masks.bins": [[0.1, 1.5]]}, "masks.bins[0]"),
    ({"dataset.type": "places2", "dataset.root": "/no/such/folder"}, "dataset.root: folder /no/such/folder"),
])
def test_bad_input_one_line_exit_2_no_mlflow(tmp_path, capsys, change, needle):
    d = tiny(tmp_path)
    for k, v in change.items():
        if k == "masks.binz":
            d["masks"]["binz"] = v
        else:
            keys = k.split(".")
            d[keys[0]][keys[1]] = v
    path = write(tmp_path, d)
    for argv in (["run", path], ["validate", path], ["run", path, "--dry-run"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlartifacts").exists()
    assert not (tmp_path / "cache").exists()


def test_failing_cell_is_failed_and_sweep_goes_on(tmp_path, monkeypatch, capsys):
    import strbench.sample as S

    real = S.sample

    def broken(method, *a, **kw):
        if method == "repaint":
            raise RuntimeError("planted failure")
        return real(method, *a, **kw)

    monkeypatch.setattr(S, "sample", broken)
    migrated_db(tmp_path)
    d = tiny(tmp_path)
    d["methods"] = {"IR-SDE": {"method": "irsde"}, "RePaint*": {"method": "repaint", "jump_length": 2,
                                                                "jump_n_sample": 2}}
    d["masks"]["bins"] = [[0.1, 0.3]]
    path = write(tmp_path, d)
    assert cli.main(["run", path, "-q"]) == 1
    err = capsys.readouterr().err
    assert "cell failed: RePaint* 10-30%" in err and "planted failure" in err
    df = runs(tmp_path)
    cells = df[df["tags.strbench.role"] == "cell"].set_index("tags.strbench.case")
    assert cells.loc["IR-SDE", "status"] == "FINISHED" and cells.loc["RePaint*", "status"] == "FAILED"
    assert "planted failure" in cells.loc["RePaint*", "tags.strbench.error"]
    assert df[df["tags.strbench.role"] == "experiment"]["status"].iloc[0] == "FAILED"
    monkeypatch.setattr(S, "sample", real)  # fixed: the re-run runs only the failed cell
    assert cli.main(["run", path, "-q"]) == 0
    df = runs(tmp_path)
    fin = df[(df["tags.strbench.role"] == "cell") & (df["status"] == "FINISHED")]
    assert sorted(fin["tags.strbench.case"]) == ["IR-SDE", "RePaint*"]
