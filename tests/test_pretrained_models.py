"""Pretrained model sources (`models: {role: PATH | random:SEED}`): loaded strictly instead of trained, the
file's sha256 in the cell hash and in MLflow, and a bad file stopped by the pre-flight in one line."""
from __future__ import annotations

import hashlib

import pytest
import torch
import yaml

from strbench import cli, experiment
from strbench import config as C
from strbench.roles import build_net


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cfg(tmp_path, models: dict) -> dict:
    return {"name": "pt", "dataset": {"type": "builtin", "size": 16}, "floors": False,
            "masks": {"bins": [[0.1, 0.3]], "per_bin": 2}, "schedule": {"texture": {"T": 3}},
            "nets": {"arch": "authors", "preset": "tiny"}, "models": models,
            "methods": {"IR-SDE": {"method": "irsde"}}, "sample": {"batch": 2},
            "metrics": {"fid": False, "kid": False, "bootstrap": 0},
            "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"}, "cache_dir": str(tmp_path / "cache"),
            "device": "cpu"}


def released_file(path, *, drop: str | None = None, prefix: str = "module.", seed: int = 0) -> str:
    torch.manual_seed(seed)
    sd = build_net("irsde", "tiny", arch="authors").state_dict()
    torch.save({prefix + k: v for k, v in sd.items() if k != drop}, path)
    return str(path)


def test_random_weights_are_written_to_the_cache_and_loaded_not_trained(tmp_path):
    exp = C.load_experiment(cfg(tmp_path, {"irsde": "random:0"}))
    m = experiment.evaluate(exp, split="test")
    assert m["n_images"] == 2 and m["psnr"] > 0
    assert not (tmp_path / "cache" / "models").exists()  # nothing trained
    assert len(list((tmp_path / "cache" / "pretrained").glob("irsde-*.pth"))) == 1
    other = experiment.expand(C.load_experiment(cfg(tmp_path, {"irsde": "random:1"})))
    assert other[0].model("irsde").hash != experiment.expand(exp)[0].model("irsde").hash


def test_a_released_file_is_hashed_into_the_cell_and_tagged(tmp_path):
    f = released_file(tmp_path / "irsde.pth")
    cells = experiment.expand(C.load_experiment(cfg(tmp_path, {"irsde": f})))
    spec = cells[0].model("irsde")
    assert spec.pretrained and spec.sha256 == hashlib.sha256(open(f, "rb").read()).hexdigest()
    assert experiment.cell_tags(cells[0], "x")["strbench.pretrained.irsde"] == f"{f} sha256:{spec.sha256}"
    net = experiment.Resources(tmp_path / "cache", "cpu").model(spec)  # `module.` stripped, strict load
    torch.manual_seed(0)
    ref = build_net("irsde", "tiny", arch="authors").state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in net.state_dict().items())
    released_file(f, seed=1)  # another file at the same path: another model, another cell
    again = experiment.expand(C.load_experiment(cfg(tmp_path, {"irsde": f})))
    assert again[0].model("irsde").hash != spec.hash and again[0].hash != cells[0].hash


def test_a_checkpoint_missing_a_key_stops_validate_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    key = next(iter(build_net("irsde", "tiny", arch="authors").state_dict()))
    f = released_file(tmp_path / "bad.pth", drop=key)
    p = tmp_path / "x.yaml"
    p.write_text(yaml.safe_dump(cfg(tmp_path, {"irsde": f})))
    before = sorted(x.name for x in tmp_path.iterdir())
    for argv in (["validate", str(p)], ["run", str(p), "--dry-run"], ["run", str(p)]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f in err[0] and "irsde" in err[0] and key in err[0] and "missing 1" in err[0], err
    assert sorted(x.name for x in tmp_path.iterdir()) == before  # no mlflow.db, no cache


def test_a_role_left_null_names_the_key(tmp_path, capsys):
    p = tmp_path / "x.yaml"
    p.write_text(yaml.safe_dump(cfg(tmp_path, {"irsde": None})))
    assert cli.main(["validate", str(p)]) == 2
    assert "models.irsde: not set" in capsys.readouterr().err
