"""The catalogue of bad inputs (issue 14): each one, run through the CLI in an empty folder, exits 2 with
one stderr line naming the key or the file, creates nothing (no mlflow.db, mlartifacts, .strbench, no
FID cache: the tree is compared before and after), and `strbench validate` and `run --dry-run` report
the same line as `strbench run`. Tracking and the cache are left at their defaults, i.e. in the folder.

Separately: 16-bit PNGs are not refused but load as the same picture as their 8-bit version; a training
image that is corrupt beyond the pre-flight's sample fails its cell with one line naming the file; a
truncated checkpoint in the model cache is moved aside and the next run recovers."""
from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from strbench import cli

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: single-threaded tiny nets

SIZE = 16


# ------------------------------------------------------------------------------------------------
# helpers: a tiny experiment, image and mask folders, the folder snapshot
# ------------------------------------------------------------------------------------------------


def base(**extra) -> dict:
    """A tiny experiment whose tracking and cache are the defaults (relative to the working folder)."""
    d = {
        "name": "bad",
        "dataset": {"type": "builtin", "size": SIZE, "train_limit": 16},
        "masks": {"bins": [[0.1, 0.3]], "per_bin": 2, "train": {"count": 4}},
        "schedule": {"texture": {"T": 3}},
        "methods": {"IR-SDE": {"method": "irsde"}},
        "nets": {"unet": {"nf": 8, "ch_mult": [1, 2]}},
        "train": {"steps": 2, "batch": 2, "log_every": 1, "checkpoint_every": 1, "workers": 0},
        "sample": {"batch": 2},
        "metrics": {"fid": False, "kid": False, "bootstrap": 0, "grid_images": 2, "strip_frames": 2},
        "device": "cpu",
        "floors": False,
    }
    for k, v in extra.items():
        cur = d
        *path, last = k.split(".")
        for p in path:
            cur = cur.setdefault(p, {})
        cur[last] = v
    return d


def write_yaml(root: Path, d: dict, name: str = "exp.yaml") -> str:
    (root / name).write_text(yaml.safe_dump(d, sort_keys=False))
    return name


def images(folder: Path, n: int, seed: int = 0, size=(20, 20)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        f = folder / f"im{i:03d}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(f)
        out.append(f)
    return out


def folder_dataset(root: Path, train=6, test=4, val=2) -> Path:
    data = root / "data"
    images(data / "train", train, 1)
    images(data / "test", test, 2)
    images(data / "val", val, 3)
    return data


def mask(folder: Path, name: str, hole_frac: float, size=(SIZE, SIZE)) -> Path:
    """White = hole: the first round(hole_frac * H) rows."""
    w, h = size
    px = np.zeros((h, w), np.uint8)
    px[: round(hole_frac * h)] = 255
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(px).save(folder / name)
    return folder / name


def mask_cfg(path: str, **kw) -> dict:
    return {"source": "folder", "path": path, "polarity": "white_is_hole", "bins": [[0.1, 0.3]], "per_bin": 2,
            "train": {"count": 4}, **kw}


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


class Payload:
    """Unpickling this calls open(marker, "w"): the marker file appears iff the pickle's code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted_pickle(root: Path) -> Path:
    f = root / "evil.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": Payload(root / "PAYLOAD_RAN")}, f)
    return f


# ------------------------------------------------------------------------------------------------
# the catalogue: name -> setup(root, monkeypatch) -> (argv after the command, [needles in the line])
# ------------------------------------------------------------------------------------------------

Setup = Callable[[Path, pytest.MonkeyPatch], tuple[list[str], list[str]]]
CASES: dict[str, Setup] = {}


def case(name: str):
    def deco(fn: Setup) -> Setup:
        assert name not in CASES
        CASES[name] = fn
        return fn
    return deco


def simple(name: str, d: dict | Callable[[], dict], extra: list[str] = (), needles: list[str] = ()):
    """A case that is an experiment mapping (+ CLI args) alone."""
    @case(name)
    def _(root, mp):
        return [write_yaml(root, d() if callable(d) else d), *extra], list(needles)


# --- the table ---------------------------------------------------------------------------

@case("fid_weights: crafted pickle")
def _(root, mp):
    f = crafted_pickle(root)
    return [write_yaml(root, base(**{"metrics.fid": True, "metrics.fid_weights": str(f)}))], \
        ["metrics.fid_weights", str(f), "needs Python code"]


@case("STRBENCH_FID_WEIGHTS: crafted pickle")
def _(root, mp):
    f = crafted_pickle(root)
    mp.setenv("STRBENCH_FID_WEIGHTS", str(f))
    return [write_yaml(root, base(**{"metrics.fid": True}))], ["STRBENCH_FID_WEIGHTS", str(f)]


@case("fid_weights: a wrong .pth")
def _(root, mp):
    f = root / "wrong.pth"
    torch.save(torch.nn.Conv2d(3, 4, 3).state_dict(), f)
    return [write_yaml(root, base(**{"metrics.fid": True, "metrics.fid_weights": str(f)}))], \
        ["metrics.fid_weights", str(f)]


@case("fid_weights: a text file")
def _(root, mp):
    f = root / "weights.pth"
    f.write_text("these are not weights\n")
    return [write_yaml(root, base(**{"metrics.fid": True, "metrics.fid_weights": str(f)}))], \
        ["metrics.fid_weights", str(f)]


@case("fid_weights: missing file")
def _(root, mp):
    return [write_yaml(root, base(**{"metrics.kid": True, "metrics.fid_weights": "nope.pth"}))], \
        ["metrics.fid_weights", "nope.pth", "not found"]


@case("dataset.root: empty folder")
def _(root, mp):
    (root / "data").mkdir()
    return [write_yaml(root, base(dataset={"type": "folder", "root": "data", "size": SIZE}))], \
        ["dataset.root", "data"]


@case("dataset.root: a corrupt .jpg in the test split")
def _(root, mp):
    data = folder_dataset(root)
    bad = data / "test" / "im003.jpg"  # the cells sample test images 0 and 3 of 4
    bad.write_bytes(bad.read_bytes()[:50])
    return [write_yaml(root, base(dataset={"type": "folder", "root": "data", "size": SIZE}))], \
        ["dataset.root (test images)", "data/test/im003.jpg"]


@case("dataset.root: a text file as a test image")
def _(root, mp):
    data = folder_dataset(root)
    (data / "test" / "im000.png").write_text("hello")
    return [write_yaml(root, base(dataset={"type": "folder", "root": "data", "size": SIZE}))], \
        ["dataset.root", "im000.png"]


@case("dataset.root: a float TIFF-in-PNG test image")
def _(root, mp):
    data = folder_dataset(root)
    Image.fromarray(np.zeros((20, 20), np.float32)).save(data / "test" / "im000.png", format="TIFF")
    return [write_yaml(root, base(dataset={"type": "folder", "root": "data", "size": SIZE}))], \
        ["dataset.root", "im000.png", "mode 'F'"]


@case("dataset.root: a corrupt training image (in the sample)")
def _(root, mp):
    data = folder_dataset(root)
    bad = data / "train" / "im000.png"
    bad.write_bytes(bad.read_bytes()[:40])
    return [write_yaml(root, base(dataset={"type": "folder", "root": "data", "size": SIZE}))], \
        ["dataset.root (train images)", "data/train/im000.png"]


@case("masks.path: wrong aspect ratio")
def _(root, mp):
    for i, frac in enumerate([0.15, 0.2, 0.25, 0.15]):
        mask(root / "masks", f"m{i}.png", frac, size=(2 * SIZE, SIZE) if i == 1 else (SIZE, SIZE))
    return [write_yaml(root, base(masks=mask_cfg("masks")))], ["masks.path", "m1.png", "aspect ratio"]


@case("masks.path: every mask 100% holes")
def _(root, mp):
    for i in range(4):
        mask(root / "masks", f"m{i}.png", 1.0)
    return [write_yaml(root, base(masks=mask_cfg("masks")))], ["masks.path", "bin 10-30% has 0 of the"]


@case("masks.path: a 100%-hole mask inside a bin")
def _(root, mp):
    for i, frac in enumerate([0.6, 0.7, 1.0, 0.8]):
        mask(root / "masks", f"m{i}.png", frac)
    return [write_yaml(root, base(masks=mask_cfg("masks", bins=[[0.5, 1.0]])))], \
        ["masks.path", "m2.png", "all hole"]


@case("masks.path: every mask 0% holes")
def _(root, mp):
    for i in range(4):
        mask(root / "masks", f"m{i}.png", 0.0)
    return [write_yaml(root, base(masks=mask_cfg("masks")))], ["masks.path", "0% holes"]


@case("masks.path: empty folder")
def _(root, mp):
    (root / "masks").mkdir()
    return [write_yaml(root, base(masks=mask_cfg("masks")))], ["masks.path", "masks", "no mask images"]


@case("masks.path: missing folder")
def _(root, mp):
    return [write_yaml(root, base(masks=mask_cfg("nomasks")))], ["masks.path", "nomasks", "does not exist"]


@case("masks.path: a corrupt mask file")
def _(root, mp):
    for i, frac in enumerate([0.15, 0.2, 0.25, 0.15]):
        mask(root / "masks", f"m{i}.png", frac)
    (root / "masks" / "m0.png").write_bytes(b"\x89PNG junk")
    return [write_yaml(root, base(masks=mask_cfg("masks")))], ["masks.path", "m0.png"]


@case("masks.polarity: missing with a mask folder")
def _(root, mp):
    mask(root / "masks", "m0.png", 0.2)
    m = mask_cfg("masks")
    del m["polarity"]
    return [write_yaml(root, base(masks=m))], ["masks.polarity", "white_is_hole"]


@case("tracking.uri: a corrupt mlflow.db")
def _(root, mp):
    (root / "mlflow.db").write_text("this is not a database\n" * 200)
    return [write_yaml(root, base())], ["tracking.uri", "mlflow.db"]


@case("tracking.uri: a truncated mlflow.db")
def _(root, mp):
    db = root / "mlflow.db"
    con = sqlite3.connect(db)
    for t in ("experiments", "runs", "metrics", "params", "tags"):
        con.execute(f"CREATE TABLE {t} (id INTEGER PRIMARY KEY, v TEXT)")
        con.executemany(f"INSERT INTO {t} (v) VALUES (?)", [("x" * 200,)] * 300)
    con.commit()
    con.close()
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    return [write_yaml(root, base())], ["tracking.uri", "mlflow.db"]


@case("tracking.uri: an SQLite file that is not an MLflow store")
def _(root, mp):
    con = sqlite3.connect(root / "mlflow.db")
    con.execute("CREATE TABLE trials (id INTEGER)")
    con.commit()
    con.close()
    return [write_yaml(root, base())], ["tracking.uri", "mlflow.db", "not an MLflow store"]


def _other_mlflow_version(db: Path) -> None:
    from helpers import migrated_db

    migrated_db(db.parent)
    con = sqlite3.connect(db)
    con.execute("UPDATE alembic_version SET version_num = 'deadbeef0000'")
    con.commit()
    con.close()


@case("tracking.uri: an mlflow.db of another MLflow version")
def _(root, mp):
    _other_mlflow_version(root / "mlflow.db")
    return [write_yaml(root, base())], ["tracking.uri", "mlflow.db", "deadbeef0000", "mlflow db upgrade"]


def test_a_store_mlflow_cannot_open_is_one_line(tmp_path):
    """Behind the pre-flight too (a store that changes after it, a server failing its API): one line."""
    from strbench import tracking
    from strbench.errors import DataError

    _other_mlflow_version(tmp_path / "mlflow.db")
    before = snapshot(tmp_path)
    with pytest.raises(DataError) as e:
        tracking.Tracker(f"sqlite:///{tmp_path}/mlflow.db", "x", str(tmp_path / "art"))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("tracking.uri: cannot open the MLflow store") and "deadbeef0000" in msg
    assert snapshot(tmp_path) == before


simple("tracking.uri: foo://", base(tracking={"uri": "foo://somewhere"}), needles=["tracking.uri", "'foo'"])
simple("masks.bins: lo > hi", base(masks={"bins": [[0.3, 0.1]], "per_bin": 2}),
       needles=["masks.bins[0]", "lo 0.3 > hi 0.1", "[0.1, 0.3]"])
simple("masks.bins: outside [0, 1]", base(masks={"bins": [[0.5, 1.5]], "per_bin": 2}),
       needles=["masks.bins[0]", "outside [0, 1]"])
simple("masks.bins: empty bin", base(masks={"bins": [[0.2, 0.2]], "per_bin": 2}), needles=["masks.bins[0]", "empty"])
simple("--set train.lr=1e-3", base(), ["--set", "train.lr=1e-3"],
       needles=["train.lr", "YAML reads 1e-3 as text", "0.001", "--set train.lr=1e-3"])


@case("tune --export: a study that does not exist")
def _(root, mp):
    write_yaml(root, base())
    tune = {"base": "exp.yaml", "study": {"name": "nosuch", "storage": "journal.log"},
            "space": {"schedule.texture.eps": {"type": "float", "low": 0.001, "high": 0.05}}}
    return ["tune", write_yaml(root, tune, "tune.yaml"), "--export", "best.yaml"], ["nosuch", "does not exist", "journal.log"]


@case("tune --export: no study in the default storage")
def _(root, mp):
    write_yaml(root, base())
    tune = {"base": "exp.yaml", "study": {"name": "nosuch"},
            "space": {"schedule.texture.eps": {"type": "float", "low": 0.001, "high": 0.05}}}
    return ["tune", write_yaml(root, tune, "tune.yaml"), "--export", "best.yaml"], ["nosuch", "does not exist", "journal.log"]


# --- config and CLI mistakes -----------------------------------------------------------------------

simple("unknown top-level key", lambda: {**base(), "schedul": {}}, needles=["schedul: unknown key", "schedule"])
simple("unknown nested key", lambda: base(**{"train.stpes": 3}), needles=["train.stpes: unknown key", "'steps'"])
simple("wrong type", lambda: base(**{"train.steps": "ten"}), needles=["train.steps", "'ten'"])
simple("float for an int", lambda: base(**{"train.batch": 2.5}), needles=["train.batch"])
simple("out of range", lambda: base(**{"train.steps": 0}), needles=["train.steps", "greater than or equal to 1"])
simple("unknown method", lambda: base(methods={"X": {"method": "nosuch"}}),
       needles=["methods.X.method", "'nosuch'", "strdiffusion"])
simple("method without `method:`", lambda: base(methods={"X": {"u_max": 3}}), needles=["methods.X", "method:"])
simple("unknown method setting", lambda: base(methods={"S": {"method": "strdiffusion", "umax": 3}}),
       needles=["methods.S.umax: unknown key", "'u_max'"])
simple("bad choice", lambda: base(variant="gray2rgb"), needles=["variant", "'gray2rgb'", "gray2edge"])
simple("bad profile name", lambda: base(profiles={"cpu": {"train": {"steps": 1}}}), ["--profile", "gpu"],
       needles=["--profile: profile 'gpu' not found", "cpu"])
simple("default_profile names no profile", lambda: base(default_profile="fast"), needles=["default_profile: profile 'fast' not found"])
simple("a profile with an unknown key", lambda: base(profiles={"cpu": {"train": {"stpes": 1}}}), ["--profile", "cpu"],
       needles=["train.stpes: unknown key", "profile 'cpu'"])
simple("--set without =", base(), ["--set", "train.steps"], needles=["--set 'train.steps'", "KEY=VALUE"])
simple("--set bad key path", base(), ["--set", "train..steps=3"], needles=["--set 'train..steps=3'", "dotted keys"])
simple("--set unknown key", base(), ["--set", "train.stepz=3"], needles=["train.stepz: unknown key", "--set"])
simple("--set bad YAML value", base(), ["--set", "train.steps=[1"], needles=["--set 'train.steps=[1'", "not valid YAML"])
simple("--set into a list item that does not exist", base(), ["--set", "masks.bins.3=[0.1, 0.2]"],
       needles=["masks.bins", "no list item 3"])


@case("--set-from: missing overlay file")
def _(root, mp):
    return [write_yaml(root, base()), "--set-from", "best.yaml"], ["best.yaml", "no such overlay file"]


@case("--set-from: overlay with an unknown key")
def _(root, mp):
    (root / "best.yaml").write_text("schedule.texture.epz: 0.01\n")
    return [write_yaml(root, base()), "--set-from", "best.yaml"], ["schedule.texture.epz: unknown key", "best.yaml"]


@case("missing experiment file")
def _(root, mp):
    return ["nothere.yaml"], ["nothere.yaml", "no such experiment file"]


@case("bad YAML syntax")
def _(root, mp):
    (root / "exp.yaml").write_text("name: bad\ntrain: {steps: 2\n")
    return ["exp.yaml"], ["exp.yaml", "not valid YAML", "line"]


@case("duplicate YAML key")
def _(root, mp):
    (root / "exp.yaml").write_text(yaml.safe_dump(base(), sort_keys=False) + "train: {steps: 3}\n")
    return ["exp.yaml"], ["exp.yaml", "duplicate key 'train'", "line"]


@case("YAML top level is a list")
def _(root, mp):
    (root / "exp.yaml").write_text("- name: bad\n")
    return ["exp.yaml"], ["exp.yaml", "must be a mapping", "list"]


@case("not a UTF-8 file")
def _(root, mp):
    (root / "exp.yaml").write_bytes(b"name: \xff\xfe\x00bad\n")
    return ["exp.yaml"], ["exp.yaml"]


simple("bad experiment name", lambda: base(name="my experiment!"), needles=["name"])
simple("sweep over an unsweepable key", lambda: base(sweep={"cache_dir": ["a", "b"]}),
       needles=["sweep", "'cache_dir' cannot be swept"])
simple("sweep over methods", lambda: base(sweep={"methods.IR-SDE.method": ["irsde", "repaint"]}),
       needles=["sweep", "cannot be swept"])
simple("sweep with a bad value", lambda: base(sweep={"train.steps": [2, 0]}), needles=["sweep.train.steps[1]", "0"])
simple("sweep axis without values", lambda: base(sweep={"seed": []}), needles=["sweep", "'seed' has no values"])
simple("official-only setting in paper mode",
       lambda: base(methods={"S": {"method": "strdiffusion", "mode": "paper", "u_min": 3}}),
       needles=["methods.S", "'u_min' only applies to mode='official'"])
simple("ablation-A-only setting", lambda: base(methods={"S": {"method": "strdiffusion", "ablation": "D",
                                                             "jump_length": 2}}),
       needles=["methods.S", "'jump_length'", "ablation 'A'"])
simple("disc_time differs from train.disc_time",
       lambda: base(methods={"S": {"method": "strdiffusion", "disc_time": "t"}}),
       needles=["disc_time='t' differs from train.disc_time='t-1'", "set train.disc_time"])
simple("structure T differs from texture T", lambda: base(schedule={"texture": {"T": 3}, "structure": {"T": 4}}),
       needles=["schedule", "structure T (4) must equal texture T (3)"])
simple("bad schedule parameter", lambda: base(schedule={"texture": {"T": 3, "kind": "power",
                                                                    "params": {"power": -1.0}}}),
       needles=["schedule.texture"])
simple("unknown metric protocol", lambda: base(**{"metrics.protocol": "lama"}), needles=["metrics.protocol", "'lama'"])
simple("shard (retired)", lambda: base(shard={"index": 1, "count": 2}), needles=["shard: retired", "claims split the cells"])
simple("unknown net override", lambda: base(nets={"unet": {"nff": 8}}), needles=["nff"])
simple("image size not a multiple of the net's downsampling",
       lambda: base(**{"dataset.size": 10}, nets={"unet": {"nf": 8, "ch_mult": [1, 2, 2]}}), needles=["dataset.size: 10 is not a multiple of 4", "nets.unet"])
simple("dataset.type folder without root", lambda: base(dataset={"type": "folder", "size": SIZE}),
       needles=["dataset.root", "required"])
simple("dataset.root does not exist", lambda: base(dataset={"type": "folder", "root": "nodata", "size": SIZE}),
       needles=["dataset.root", "nodata", "does not exist"])
simple("dataset.root with type builtin", lambda: base(dataset={"type": "builtin", "root": "data", "size": SIZE}),
       needles=["dataset.root", "builtin"])


@case("dataset.splits: missing file list")
def _(root, mp):
    folder_dataset(root)
    return [write_yaml(root, base(dataset={"type": "folder", "root": "data", "size": SIZE,
                                           "splits": {"test": "test_list.txt"}}))], \
        ["dataset.splits.test", "test_list.txt", "not found"]


@case("dataset.splits: a list naming missing files")
def _(root, mp):
    data = folder_dataset(root)
    (data / "test.txt").write_text("test/im000.png\ntest/gone.png\n")
    return [write_yaml(root, base(dataset={"type": "folder", "root": "data", "size": SIZE,
                                           "splits": {"test": "test.txt"}}))], ["test.txt", "gone.png"]


simple("models.<role>: not set", lambda: base(models={"irsde": None}), needles=["models.irsde", "not set"])
simple("models.<role>: missing file", lambda: base(models={"irsde": "irsde.pth"}),
       needles=["models.irsde", "irsde.pth", "not found"])
simple("models.<role>: bad random seed", lambda: base(models={"irsde": "random:x"}), needles=["random:SEED"])


def _irsde_state() -> dict:
    from strbench.roles import build_net

    return build_net("irsde", "tiny", nf=8, ch_mult=[1, 2]).state_dict()


@case("models.<role>: a state_dict with a missing key")
def _(root, mp):
    sd = _irsde_state()
    sd.pop(next(iter(sd)))
    torch.save(sd, root / "irsde.pth")
    return [write_yaml(root, base(models={"irsde": "irsde.pth"}))], ["models.irsde", "irsde.pth", "missing"]


@case("models.<role>: a crafted pickle")
def _(root, mp):
    torch.save({"w": Payload(root / "PAYLOAD_RAN")}, root / "irsde.pth")
    return [write_yaml(root, base(models={"irsde": "irsde.pth"}))], ["models.irsde", "irsde.pth"]


@case("models.<role>: a text file")
def _(root, mp):
    (root / "irsde.pth").write_text("not a checkpoint\n")
    return [write_yaml(root, base(models={"irsde": "irsde.pth"}))], ["models.irsde", "irsde.pth"]


simple("tracking.uri: sqlite with a host", lambda: base(tracking={"uri": "sqlite://host/x.db"}),
       needles=["tracking.uri", "sqlite:///<file>"])


@case("tracking.uri: the database path is a folder")
def _(root, mp):
    (root / "store").mkdir()
    return [write_yaml(root, base(tracking={"uri": "sqlite:///store"}))], ["tracking.uri", "store", "is a folder"]


@case("tracking.uri: an unreachable server")
def _(root, mp):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return [write_yaml(root, base(tracking={"uri": f"http://127.0.0.1:{port}"}))], \
        ["tracking.uri", f"127.0.0.1:{port}", "not reachable"]


# ------------------------------------------------------------------------------------------------
# the test
# ------------------------------------------------------------------------------------------------


def _cli(capsys, argv: list[str]) -> tuple[int, list[str], str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, err.splitlines(), out


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(tmp_path, monkeypatch, capsys, name):
    root = tmp_path / "work"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.setenv("STRBENCH_CACHE", str(root / "fid-cache"))  # the FID weights cache: must stay absent
    monkeypatch.delenv("STRBENCH_FID_WEIGHTS", raising=False)
    args, needles = CASES[name](root, monkeypatch)
    before = snapshot(root)
    cmds = [args] if args[0] == "tune" else [["run", *args, "-q"], ["validate", *args], ["run", *args, "--dry-run"]]
    lines = {}
    for argv in cmds:
        rc, err, out = _cli(capsys, argv)
        assert rc == 2, (argv, rc, err, out)
        assert len(err) == 1, (argv, err)
        assert err[0].startswith("strbench: error: ") and "\x1b" not in err[0], err
        for n in needles:
            assert n in err[0], (n, err[0])
        assert snapshot(root) == before, (argv, set(snapshot(root)) ^ set(before))
        lines[argv[0] + ("-dry" if "--dry-run" in argv else "")] = err[0]
    assert len(set(lines.values())) == 1, lines  # validate and --dry-run say what run says
    assert not (root / "PAYLOAD_RAN").exists()


def test_catalogue_size():
    assert len(CASES) >= 30


# ------------------------------------------------------------------------------------------------
# not refused: 16-bit PNGs are the same picture as their 8-bit version
# ------------------------------------------------------------------------------------------------


def _runs(uri: str, experiment: str):
    import mlflow

    from strbench.tracking import absolute_uri

    mlflow.set_tracking_uri(absolute_uri(uri))  # absolute: MLflow keeps one store per URI string per process
    df = mlflow.search_runs(experiment_names=[experiment])
    return df[df["tags.strbench.role"] == "cell"]


def test_16bit_pngs_load_as_their_8bit_picture(tmp_path, monkeypatch, capsys):
    """A dataset folder of 16-bit RGB PNGs (v * 257) validates, runs (exit 0) and scores exactly as the same
    folder saved at 8 bits (the images themselves differ by at most 1/255)."""
    from helpers import write_png

    from strbench.data import make_dataset

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(5)
    for split, n in (("train", 2), ("test", 4), ("val", 1)):
        for i in range(n):
            px = (rng.random((20, 24, 3)) * 255).round().astype(np.uint8)
            for bits, folder in ((8, "png8"), (16, "png16")):
                (tmp_path / folder / split).mkdir(parents=True, exist_ok=True)
                write_png(tmp_path / folder / split / f"{i}.png", px.astype(np.uint16) * 257 if bits == 16 else px,
                          color_type=2, bit_depth=bits)
    a = make_dataset({"type": "folder", "root": "png8", "size": SIZE, "split": "test"})
    b = make_dataset({"type": "folder", "root": "png16", "size": SIZE, "split": "test"})
    diff = max(float((a[i] - b[i]).abs().max()) for i in range(len(a)))
    assert diff <= 1 / 255 + 1e-7 and float(b[0].mean()) < 0.9  # not the pure white of clipped 16-bit values
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    metrics = {}
    for folder in ("png8", "png16"):
        d = base(name=folder, dataset={"type": "folder", "root": folder, "size": SIZE},
                 methods={"B": {"method": "biharmonic"}}, tracking={"uri": uri})
        write_yaml(tmp_path, d, f"{folder}.yaml")
        assert cli.main(["validate", f"{folder}.yaml"]) == 0
        assert "dataset.root (test images): 2 image(s) decode" in capsys.readouterr().out
        assert cli.main(["run", f"{folder}.yaml", "-q"]) == 0, capsys.readouterr().err
        cell = _runs(uri, folder)
        assert list(cell["status"]) == ["FINISHED"]
        metrics[folder] = (float(cell["metrics.psnr"].iloc[0]), float(cell["metrics.ssim"].iloc[0]))
    assert metrics["png16"] == metrics["png8"], metrics


# ------------------------------------------------------------------------------------------------
# found only once training reads it: a corrupt training image beyond the pre-flight's sample
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_training_image_beyond_the_sample_fails_the_cell_in_one_line(tmp_path, monkeypatch, capsys, workers):
    from strbench.experiment import checks

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(checks, "TRAIN_SAMPLE", 3)  # decodes train images 0, 4 and 7 of 8 (as 64 of many more)
    data = folder_dataset(tmp_path, train=8)
    bad = data / "train" / "im002.png"
    bad.write_bytes(bad.read_bytes()[:60])
    # 4 steps x batch 2 = one epoch of the 8 training images: the loader reads the bad one
    d = base(dataset={"type": "folder", "root": "data", "size": SIZE}, **{"train.steps": 4, "train.workers": workers})
    write_yaml(tmp_path, d)
    assert cli.main(["validate", "exp.yaml"]) == 0
    assert "a sample of 3 of 8" in capsys.readouterr().out
    assert cli.main(["run", "exp.yaml", "-q"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("strbench: cell failed: IR-SDE") and "1 of 1 cells failed" in err[1], err
    assert "DataError" in err[0] and "data/train/im002.png" in err[0], err
    cell = _runs("sqlite:///mlflow.db", "bad")
    assert list(cell["status"]) == ["FAILED"]
    tag = cell["tags.strbench.error"].iloc[0]
    assert "\n" not in tag and "data/train/im002.png" in tag and len(tag) < 400, tag


# ------------------------------------------------------------------------------------------------
# recovered: a truncated checkpoint in the model cache
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["finished", "partial"])
def test_truncated_checkpoint_in_the_cache_is_moved_aside_and_training_resumes(tmp_path, monkeypatch, capsys,
                                                                               caplog, state):
    """A model.pt that no longer loads (a finished model's or a half-trained one's) is renamed model.pt.corrupt
    with one warning line; training resumes from model.prev.pt and ends with the same model and metrics."""
    monkeypatch.chdir(tmp_path)
    write_yaml(tmp_path, base(**{"train.steps": 4}))
    assert cli.main(["run", "exp.yaml", "-q"]) == 0, capsys.readouterr().err
    first = _runs("sqlite:///mlflow.db", "bad")
    (model_dir,) = (tmp_path / ".strbench" / "models").iterdir()
    ckpt, prev = model_dir / "model.pt", model_dir / "model.prev.pt"
    assert prev.is_file() and (model_dir / "complete.json").is_file()
    good = torch.load(ckpt, weights_only=True)
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 3])
    if state == "partial":
        (model_dir / "complete.json").unlink()
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="strbench.checkpoint"):
        # the same cell in another MLflow experiment, so that it runs (and needs the model) again
        assert cli.main(["run", "exp.yaml", "-q", "--set", "tracking.experiment=again"]) == 0, capsys.readouterr().err
    warnings = [r.getMessage() for r in caplog.records if r.name == "strbench.checkpoint"]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert "model.pt" in warnings[0] and "model.pt.corrupt" in warnings[0] and "resuming from model.prev.pt" in warnings[0]
    assert (model_dir / "model.pt.corrupt").is_file() and (model_dir / "complete.json").is_file()
    again = torch.load(ckpt, weights_only=True)
    assert again["step"] == good["step"] == 4
    assert all(torch.equal(again["model"][k], good["model"][k]) for k in good["model"])
    second = _runs("sqlite:///mlflow.db", "again")
    assert list(second["status"]) == ["FINISHED"]
    assert float(second["metrics.psnr"].iloc[0]) == float(first["metrics.psnr"].iloc[0])
    assert second["tags.strbench.trained.irsde"].iloc[0] == model_dir.name  # it trained (resumed) the model
