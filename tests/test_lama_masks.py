"""masks.pairing: by_name (strbench/pairing.py): LaMa's evaluation layout (name.png beside name_mask000.png, ...)
and a mask folder named after the dataset's test images; every image scored with its own masks, each pair in the
bin of its own mask; the errors before anything runs; the folder's content in the cell's identity."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import migrated_db, tiny
from strbench import cli
from strbench import config as C
from strbench import experiment, pairing
from strbench.errors import ConfigError, DataError
from strbench.experiment.evaluate import by_name_pairs, evaluate_cell

pytestmark = pytest.mark.usefixtures("one_thread")

# image name -> hole fractions of its masks (rows of a 32 px mask: exact at the tiny 16 px as well)
LAMA = {"a": [0.25, 0.375], "b": [0.1875], "c": [0.4375, 0.125, 0.3125]}
BINS = [[0.1, 0.3], [0.3, 0.5]]


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(seed).random((32, 32, 3)) * 255).astype(np.uint8)).save(path)


def _mask(path: Path, frac: float) -> None:
    """White = hole: the first frac * 32 rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    px = np.zeros((32, 32), np.uint8)
    px[: round(frac * 32)] = 255
    Image.fromarray(px).save(path)


def lama_folder(root: Path, spec=LAMA) -> Path:
    """LaMa's evaluation layout: each image name.png beside its masks name_mask000.png, name_mask001.png, ..."""
    for i, (name, fracs) in enumerate(spec.items()):
        _image(root / f"{name}.png", i)
        for k, f in enumerate(fracs):
            _mask(root / f"{name}_mask{k:03d}.png", f)
    return root


def expected_pairs(spec=LAMA) -> dict:
    """(image, mask file) -> bin label, from the hole fraction each mask was drawn with."""
    label = lambda f: next(f"{lo * 100:g}-{hi * 100:g}%" for lo, hi in BINS if lo < f <= hi)  # noqa: E731
    return {(f"{n}.png", f"{n}_mask{k:03d}.png"): label(f) for n, fr in spec.items() for k, f in enumerate(fr)}


def by_name(tmp_path: Path, path: Path | None, **extra) -> dict:
    d = tiny(tmp_path, **{"masks.source": "folder", "masks.pairing": "by_name", "masks.polarity": "white_is_hole",
                          "masks.per_bin": 10, **({"masks.path": str(path)} if path else {}), **extra})
    d["methods"] = {"B": {"method": "biharmonic"}}  # no training: the pairing is what is tested
    return d


def write(tmp_path: Path, d: dict) -> str:
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(d))
    return str(p)


def test_a_lama_folder_runs_every_image_with_its_own_masks_each_in_its_bin(tmp_path, capsys):
    from strbench import tracking
    from strbench.contract import Artifact

    folder = lama_folder(tmp_path / "random_thick_32")
    d = by_name(tmp_path, folder)
    migrated_db(tmp_path)
    assert cli.main(["run", write(tmp_path, d), "-q"]) == 0
    uri = d["tracking"]["uri"]
    runs = tracking.search_cell_runs(uri, "tiny", latest_only=False)
    assert len(runs) == 2
    got = {}
    for _, r in runs.iterrows():
        per = tracking.read_csv_artifact(uri, r["run_id"], Artifact.PER_IMAGE)
        lo, hi = float(r["params.mask.lo"]), float(r["params.mask.hi"])
        assert ((per["hole_ratio"] > lo) & (per["hole_ratio"] <= hi)).all()
        for img, msk in zip(per["image_id"], per["mask_id"]):
            assert (img, msk) not in got
            got[(img, msk)] = f"{lo * 100:g}-{hi * 100:g}%"
    assert got == expected_pairs()  # 6 pairs: a with 2 masks, b with 1, c with 3, each in its own mask's bin


def test_per_bin_caps_a_bin_in_pair_order_and_the_preflight_says_so(tmp_path):
    folder = lama_folder(tmp_path / "lama")
    exp = C.load_experiment(by_name(tmp_path, folder, **{"masks.per_bin": 1}))
    cells = experiment.expand(exp)
    line = str(experiment.preflight(exp, cells, tracking=False)[0])
    assert line.startswith("masks.path: 3 image(s) with 6 mask(s) paired by name (images beside their masks")
    assert "10-30% 1 of 3, 30-50% 1 of 3" in line and "masks.per_bin caps a bin" in line
    res = experiment.Resources(tmp_path / "cache", "cpu")
    firsts = [(p.image_ids, p.mask_ids) for p in (by_name_pairs(c.config, res) for c in cells)]
    assert firsts == [(["a.png"], ["a_mask000.png"]), (["a.png"], ["a_mask001.png"])]  # image order, then mask


def test_a_mask_folder_named_after_the_datasets_test_images(tmp_path):
    """images/test/foo.png + masks/foo.png (and foo_mask000.png, foo_mask001.png for a second image)."""
    data, masks = tmp_path / "data", tmp_path / "masks"
    for i, name in enumerate(["x", "y", "z"]):
        _image(data / "train" / f"t{name}.png", 10 + i)
        _image(data / "test" / f"{name}.png", i)
    _mask(masks / "x.png", 0.25)
    _mask(masks / "y_mask000.png", 0.375)
    _mask(masks / "y_mask001.png", 0.125)
    _mask(masks / "z.png", 0.4375)
    exp = C.load_experiment(by_name(tmp_path, masks, **{"dataset.type": "folder", "dataset.root": str(data)}))
    cells = experiment.expand(exp)
    line = str(experiment.preflight(exp, cells, tracking=False)[0])
    assert "3 image(s) with 4 mask(s) paired by name (masks named after the test images)" in line
    res = experiment.Resources(tmp_path / "cache", "cpu")
    out = {}
    for c in cells:
        r = evaluate_cell(c.config, res, workdir=tmp_path / c.short)
        out[c.config.mask.label] = list(zip(r.per_image["image_id"], r.per_image["mask_id"]))
        assert sorted(p.name for p in (tmp_path / c.short / "outputs").iterdir())[0].startswith("0000_imgtest_")
    assert out == {"10-30%": [("test/x.png", "x.png"), ("test/y.png", "y_mask001.png")],
                   "30-50%": [("test/y.png", "y_mask000.png"), ("test/z.png", "z.png")]}
    # the images are the dataset's test images, at the run's size
    paired = by_name_pairs(cells[0].config, res)
    ds = res.dataset(cells[0].config.dataset, "test")
    assert paired.images.shape == (2, 3, 16, 16) and (paired.images[0] == ds[0]).all()


def _preflight(tmp_path, folder, **extra):
    exp = C.load_experiment(by_name(tmp_path, folder, **extra))
    return experiment.preflight(exp, experiment.expand(exp), tracking=False)


def test_an_image_without_a_mask_and_a_mask_without_an_image_are_one_line_errors(tmp_path):
    folder = lama_folder(tmp_path / "lonely")
    _image(folder / "d.png", 9)
    with pytest.raises(DataError, match=r"masks.path: image \S+lonely/d.png has no mask in \S+lonely; add its mask "
                                        r"\(d_mask000.png beside it\) or remove the image"):
        _preflight(tmp_path, folder)
    folder = lama_folder(tmp_path / "orphan")
    _mask(folder / "e_mask000.png", 0.25)
    _mask(folder / "e_mask001.png", 0.25)
    with pytest.raises(DataError, match=r"masks.path: mask \S+orphan/e_mask000.png has no image named 'e' beside it "
                                        r"in \S+orphan \(2 such masks\); add the image or remove the mask"):
        _preflight(tmp_path, folder)


def test_a_folder_in_neither_layout_is_refused_before_anything_runs(tmp_path, capsys):
    only_masks = tmp_path / "only_masks"
    _mask(only_masks / "m1.png", 0.25)
    _mask(only_masks / "m2_mask000.png", 0.25)
    d = by_name(tmp_path, only_masks)  # the built-in photos have no file names to pair with
    assert cli.main(["validate", write(tmp_path, d)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "masks.path: " in err[0] and "holds masks only" in err[0]
    assert "put each image name.png beside its masks name_mask000.png" in err[0]
    data = tmp_path / "data"
    _image(data / "test" / "p.png", 0)
    _image(data / "train" / "q.png", 1)
    with pytest.raises(DataError, match="none of the 2 masks in .* shares a name with the dataset's 1 test images"):
        _preflight(tmp_path, only_masks, **{"dataset.type": "folder", "dataset.root": str(data)})
    _mask(only_masks / "p.png", 0.25)  # now p has a mask: the other two have no image
    with pytest.raises(DataError, match=r"mask \S+m1.png has no image named 'm1' among the dataset's 1 test images"):
        _preflight(tmp_path, only_masks, **{"dataset.type": "folder", "dataset.root": str(data)})
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "cache").exists()


def test_other_errors_name_the_key_and_the_fix(tmp_path):
    exp = C.load_experiment(tiny(tmp_path, **{"masks.pairing": "by_name"}))  # masks.source generator
    with pytest.raises(ConfigError, match="<dict>: masks.pairing: by_name pairs the files of a mask folder"):
        experiment.check_resources(exp, experiment.expand(exp))
    with pytest.raises(DataError, match="masks.path: folder .*nope does not exist"):
        experiment.expand(C.load_experiment(by_name(tmp_path, tmp_path / "nope")))
    folder = lama_folder(tmp_path / "lama")
    with pytest.raises(DataError, match=r"masks.path: no mask of the 6 image-mask pairs in \S+ has a hole ratio in "
                                        r"bin 50-90% \(theirs lie in 12.5%-43.8%\); change masks.bins"):
        _preflight(tmp_path, folder, **{"masks.bins": [[0.5, 0.9]]})
    exp = C.load_experiment(by_name(tmp_path, folder))
    with pytest.raises(ConfigError, match="masks.pairing: by_name pairs the test images.*tune with masks.pairing: "
                                          "seeded"):
        experiment.preflight(exp, experiment.expand(exp), tracking=False, splits=("val",))
    with pytest.raises(DataError, match="the val split has no such pairs"):
        by_name_pairs(experiment.expand(exp)[0].config, experiment.Resources(tmp_path / "cache", "cpu"), "val")


def test_the_pairing_and_the_folders_content_are_the_cells_identity(tmp_path):
    folder = lama_folder(tmp_path / "lama")
    seeded = experiment.expand(C.load_experiment(by_name(tmp_path, folder, **{"masks.pairing": "seeded"})))
    assert "pairing" not in seeded[0].config.model_dump()["mask"]  # seeded cells hash as before the key existed
    one = experiment.expand(C.load_experiment(by_name(tmp_path, folder)))
    assert one[0].config.mask.content == pairing.folder_digest(folder)
    assert {c.hash for c in one}.isdisjoint(c.hash for c in seeded)
    assert [c.hash for c in experiment.expand(C.load_experiment(by_name(tmp_path, folder)))] == [c.hash for c in one]
    _mask(folder / "b_mask000.png", 0.25)  # same names, another mask
    two = experiment.expand(C.load_experiment(by_name(tmp_path, folder)))
    assert {c.hash for c in two}.isdisjoint(c.hash for c in one)


def test_rescore_reads_a_by_name_cell_back(tmp_path, monkeypatch, capsys):
    folder = lama_folder(tmp_path / "lama")
    d = by_name(tmp_path, folder, **{"masks.bins": [[0.1, 0.3]]})
    migrated_db(tmp_path)
    assert cli.main(["run", write(tmp_path, d), "-q"]) == 0
    capsys.readouterr()
    assert cli.main(["rescore", "--experiment", "tiny", "--tracking-uri", d["tracking"]["uri"],
                     "--cache-dir", d["cache_dir"]]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert " 3 outputs: psnr " in out[0] and out[-1].endswith("0.0e+00")


def test_lamas_own_names_pair_within_their_subfolder_in_natural_order(tmp_path):
    """bin/gen_mask_dataset.py writes name_crop000.png + name_crop000_mask000.png, keeping the source subfolders."""
    root = tmp_path / "random_thin_512"
    for sub, name in [("b", "img10"), ("b", "img2"), ("a", "img2")]:
        _image(root / sub / f"{name}_crop000.png", 0)
        _mask(root / sub / f"{name}_crop000_mask000.png", 0.25)
    _mask(root / "a" / "img2_crop000_mask001.png", 0.25)
    p = pairing.pair_by_name(root)
    assert p.layout == pairing.BESIDE and p.n_images == 3
    assert [(x.image_id, x.mask_id) for x in p.pairs] == [
        ("a/img2_crop000.png", "a/img2_crop000_mask000.png"), ("a/img2_crop000.png", "a/img2_crop000_mask001.png"),
        ("b/img2_crop000.png", "b/img2_crop000_mask000.png"), ("b/img10_crop000.png", "b/img10_crop000_mask000.png")]
    assert pairing.pair_ratios(p, 16, "white_is_hole") == (0.25,) * 4


def test_lamas_thin_medium_thick_sets_as_named_mask_sets(tmp_path):
    """The README's config: one named set per LaMa folder, one bin over the whole set."""
    folders = {k: lama_folder(tmp_path / f"random_{k}_256", {f"{k}1": [0.125], f"{k}2": [0.25]})
               for k in ("thin", "medium", "thick")}
    d = by_name(tmp_path, None, **{"masks.sets": {k: {"path": str(p), "bins": [[0, 1]]} for k, p in folders.items()}})
    exp = C.load_experiment(d)
    cells = experiment.expand(exp)
    assert [(c.axes["mask_set"], c.axes["mask_bin"]) for c in cells] == [(k, "0-100%") for k in folders]
    assert [c.config.mask.content for c in cells] == [pairing.folder_digest(p) for p in folders.values()]
    checks = experiment.preflight(exp, cells, tracking=False)
    assert len([c for c in checks if c.key != "metrics.lpips_weights"]) == 3  # and LPIPS's backbone (n/a here)
    res = experiment.Resources(tmp_path / "cache", "cpu")
    got = [by_name_pairs(c.config, res).image_ids for c in cells]
    assert got == [[f"{k}1.png", f"{k}2.png"] for k in folders]
    exp = C.load_experiment(tiny(tmp_path, **{"masks.sets": {"thin": {"path": "x", "bins": [[0, 1]]}}}))
    with pytest.raises(ConfigError, match=r"masks.sets.thin.path: a set's folder is read with masks.source: folder"):
        experiment.check_resources(exp, experiment.expand(exp))
