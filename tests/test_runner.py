"""Experiments (strbench.experiment): expansion into frozen hashed cells, model hashes (what changes a model and what does not),
splitting work, resource checks before tracking, the model cache and resuming a half-trained model."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from strbench import config as C
from strbench import experiment
from strbench.errors import ConfigError, DataError

from helpers import tiny  # the shared tiny config: 16 px, T = 5, 2-4 training steps

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: single-threaded tiny nets


def cells_of(d: dict, *overrides: str):
    return experiment.expand(C.load_experiment(d, overrides=list(overrides)))


def model_hashes(cells) -> dict:
    return {m.role: m.hash for c in cells for m in c.models}


# ------------------------------------------------------------------------------------------ expansion


def test_expansion_counts_and_order(tmp_path):
    cells = cells_of(tiny(tmp_path))
    assert len(cells) == 3 * 2  # methods x bins
    assert [c.axes["case"] for c in cells] == ["IR-SDE"] * 2 + ["RePaint*"] * 2 + ["StrDiffusion"] * 2
    assert [c.axes["mask_bin"] for c in cells[:2]] == ["10-30%", "30-50%"]
    assert [c.index for c in cells] == list(range(6))
    assert len({c.hash for c in cells}) == 6


def test_sweep_axes_multiply_and_irrelevant_axes_collapse(tmp_path):
    d = tiny(tmp_path, sweep={"seed": [0, 1], "variant": ["gray2edge", "edge2edge"]})
    cells = cells_of(d)
    # IR-SDE and RePaint* do not depend on the structure variant: 2 seeds x 2 methods x 2 bins;
    # StrDiffusion: 2 seeds x 2 variants x 2 bins
    assert len(cells) == 2 * 2 * 2 + 2 * 2 * 2
    strd = [c for c in cells if c.axes["case"] == "StrDiffusion"]
    assert {(c.axes["seed"], c.axes["variant"]) for c in strd} == {(s, v) for s in (0, 1)
                                                                   for v in ("gray2edge", "edge2edge")}
    assert all(c.axes["variant"] is None for c in cells if c.axes["case"] != "StrDiffusion")


def test_any_dotted_key_can_be_an_axis(tmp_path):
    cells = cells_of(tiny(tmp_path, sweep={"schedule.texture.T": [5, 7]}))
    assert len(cells) == 12
    assert {c.axes["schedule.texture.T"] for c in cells} == {5, 7}
    assert {c.config.schedule["texture"]["T"] for c in cells} == {5, 7}


def test_named_mask_sets_are_cells(tmp_path):
    d = tiny(tmp_path)
    d["masks"]["sets"] = {"hard": {"bins": [[0.4, 0.6]]}, "easy": {"bins": [[0.1, 0.3]]}}
    cells = cells_of(d)
    assert len(cells) == 3 * 2
    assert {(c.config.mask.set, c.config.mask.label) for c in cells} == {("hard", "40-60%"),
                                                                                  ("easy", "10-30%")}


def test_cells_are_frozen(tmp_path):
    c = cells_of(tiny(tmp_path))[0]
    with pytest.raises(Exception):
        c.config.seed = 3
    with pytest.raises(Exception):
        c.config.mask.lo = 0.0
    with pytest.raises(Exception):
        c.hash = "x"
    assert isinstance(c.config.model_dump(), dict) and c.config.hash() == c.hash
    again = experiment.CellConfig.from_mapping(c.config.model_dump())  # a logged config.yaml reads back
    assert again == c.config and again.hash() == c.hash


def test_models_needed_per_method(tmp_path):
    d = tiny(tmp_path)
    d["methods"] = {k: {"method": "strdiffusion", "ablation": k} for k in "ABCD"}
    cells = cells_of(d)
    roles = {c.axes["case"]: tuple(m.role for m in c.models) for c in cells}
    assert roles == {"A": ("irsde",), "B": ("structure", "texture"), "C": ("structure", "texture"),
                     "D": ("structure", "texture", "discriminator")}
    # ablation A shares the IR-SDE model of the irsde / repaint methods
    base = model_hashes(cells_of(tiny(tmp_path)))
    assert [m.hash for c in cells if c.axes["case"] == "A" for m in c.models][0] == base["irsde"]


# ------------------------------------------------------------------------------------------ hashing


def test_same_config_same_hashes(tmp_path):
    a, b = cells_of(tiny(tmp_path)), cells_of(copy.deepcopy(tiny(tmp_path)))
    assert [c.hash for c in a] == [c.hash for c in b]
    assert model_hashes(a) == model_hashes(b)
    # key order in the YAML does not matter
    d = tiny(tmp_path)
    rev = dict(reversed(list(d.items())))
    assert [c.hash for c in cells_of(rev)] == [c.hash for c in a]


@pytest.mark.parametrize("override, changed", [
    ("train.steps=5", {"irsde", "structure", "texture", "discriminator"}),
    ("train.lr=0.001", {"irsde", "structure", "texture", "discriminator"}),
    ("seed=1", {"irsde", "structure", "texture", "discriminator"}),
    ("dataset.size=32", {"irsde", "structure", "texture", "discriminator"}),
    ("schedule.texture.T=6", {"irsde", "structure", "texture", "discriminator"}),
    ("schedule.structure.kind=linear", {"structure", "texture", "discriminator"}),
    ("nets.unet.nf=16", {"irsde", "structure", "texture"}),
    ("nets.roles.discriminator.nf=16", {"discriminator"}),
    ("train.roles.texture.steps=6", {"texture"}),
    ("train.target=official_code", {"texture", "discriminator"}),
    ("variant=edge2edge", {"structure", "texture", "discriminator"}),
    ("structure.canny_sigma=2.0", {"structure", "texture", "discriminator"}),
    ("masks.train.count=9", {"irsde", "structure", "texture", "discriminator"}),
    ("dataset.train_limit=31", {"irsde", "structure", "texture", "discriminator"}),
])
def test_model_relevant_change_gives_new_model_hash(tmp_path, override, changed):
    before = model_hashes(cells_of(tiny(tmp_path)))
    after = model_hashes(cells_of(tiny(tmp_path), override))
    assert {r for r in before if before[r] != after[r]} == changed


@pytest.mark.parametrize("override", [
    "masks.per_bin=3", "masks.bins=[[0.2, 0.4]]", "masks.seed=5", "sample.batch=1", "metrics.kid=true",
    "methods.StrDiffusion.u_max=3", "methods.RePaint*.jump_length=3", "structure.test_canny_sigma=2.0",
])
def test_eval_only_change_keeps_model_hashes_but_changes_cells(tmp_path, override):
    a, b = cells_of(tiny(tmp_path)), cells_of(tiny(tmp_path), override)
    assert model_hashes(a) == model_hashes(b)
    assert {c.hash for c in a} != {c.hash for c in b}


@pytest.mark.parametrize("override", ["train.log_every=2", "train.checkpoint_every=3", "device=auto",
                                      "tracking.uri=sqlite:///other.db", "cache_dir=elsewhere", "description=x"])
def test_bookkeeping_changes_nothing(tmp_path, override):
    a, b = cells_of(tiny(tmp_path)), cells_of(tiny(tmp_path), override)
    assert [c.hash for c in a] == [c.hash for c in b] and model_hashes(a) == model_hashes(b)


def test_model_hash_is_the_checkpoint_config_hash(tmp_path):
    from strbench.train import TrainConfig

    for c in cells_of(tiny(tmp_path)):
        for m in c.models:
            assert TrainConfig.from_dict(m.train.to_dict()).hash(m.role) == m.hash


def test_guidance_net_makes_texture_depend_on_the_structure_model(tmp_path):
    cells = cells_of(tiny(tmp_path, **{"train.guidance": "net"}))
    strd = [c for c in cells if c.axes["case"] == "StrDiffusion"][0]
    tex = strd.model("texture")
    assert tex.needs == (strd.model("structure").hash,)
    a = model_hashes(cells_of(tiny(tmp_path, **{"train.guidance": "net"})))
    b = model_hashes(cells_of(tiny(tmp_path, **{"train.guidance": "net", "train.roles.structure.steps": 7})))
    assert a["texture"] != b["texture"]  # the structure net it learned from changed


# ------------------------------------------------------------------------------------------ splitting work


def test_shard_is_retired_with_one_line_saying_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="shard: retired; .*start the same `strbench run` in another process.*claims"):
        cells_of(tiny(tmp_path), "shard.count=2")


def test_cells_option_selects_by_hash_prefix(tmp_path):
    from strbench.experiment.run import select_cells

    exp = C.load_experiment(tiny(tmp_path))
    cells = experiment.expand(exp)
    assert select_cells(exp, cells) == cells
    assert select_cells(exp, cells, [cells[1].short[:8]]) == [cells[1]]
    with pytest.raises(ConfigError, match="--cells: no cell ffffffffffff"):
        select_cells(exp, cells, ["ffffffffffff"])


def test_planning_takes_the_world_size_and_weights_digest_and_reads_neither(tmp_path, monkeypatch):
    from strbench.experiment import plan

    exp = C.load_experiment(tiny(tmp_path))
    one = model_hashes(plan.expand(exp))
    monkeypatch.setenv("WORLD_SIZE", "2")  # the planner does not read it: its caller passes it
    assert model_hashes(plan.expand(exp)) == one
    two = model_hashes(plan.expand(exp, world_size=2))
    assert two != one and model_hashes(experiment.expand(exp)) == two  # experiment.expand reads this launch's
    f = tmp_path / "irsde.pth"
    f.write_bytes(b"weights")
    pre = C.load_experiment(tiny(tmp_path, models={"irsde": str(f)}))
    with pytest.raises(ConfigError, match="models.irsde: a weights file enters the model hash by its sha256"):
        plan.expand(pre)
    seen = []
    cells = plan.expand(pre, digest=lambda path, key: seen.append((path, key)) or "ab" * 32)
    assert seen and seen[0][0] == str(f) and seen[0][1].endswith("models.irsde")
    assert {m.sha256 for c in cells for m in c.models if m.pretrained} == {"ab" * 32}


# ------------------------------------------------------------------------------------------ validation


def test_invalid_sampler_combination_is_caught_at_expansion(tmp_path):
    d = tiny(tmp_path)
    d["methods"]["StrDiffusion"]["u_min"] = 3  # official-only setting in paper mode
    with pytest.raises(ConfigError, match=r"methods\.StrDiffusion: .*u_min"):
        cells_of(d)


def test_invalid_net_override_names_model(tmp_path):
    with pytest.raises(ConfigError, match="nets.*nope|nope.*allowed"):
        cells_of(tiny(tmp_path, **{"nets.unet.nope": 3}))


def test_resource_checks(tmp_path):
    d = tiny(tmp_path, **{"dataset.type": "psv"})
    exp = C.load_experiment(d)
    with pytest.raises(ConfigError, match="dataset.root: required"):
        experiment.check_resources(exp, experiment.expand(exp))
    exp = C.load_experiment(tiny(tmp_path, **{"dataset.type": "psv", "dataset.root": str(tmp_path / "nope")}))
    with pytest.raises(DataError, match="dataset.root: folder .*nope does not exist"):
        experiment.check_resources(exp, experiment.expand(exp))
    exp = C.load_experiment(tiny(tmp_path, **{"masks.source": "folder"}))
    with pytest.raises(ConfigError, match="masks.path: required"):
        experiment.check_resources(exp, experiment.expand(exp))
    exp = C.load_experiment(tiny(tmp_path, **{"masks.source": "folder", "masks.path": str(tmp_path)}))
    with pytest.raises(ConfigError, match="masks.polarity: required"):
        experiment.check_resources(exp, experiment.expand(exp))


def test_validate_command_prints_cell_count(tmp_path, capsys):
    p = tmp_path / "t.yaml"
    import yaml

    p.write_text(yaml.safe_dump(tiny(tmp_path)))
    from strbench import cli

    assert cli.main(["validate", str(p)]) == 0
    assert "6 cells, 4 models" in capsys.readouterr().out
    assert not (tmp_path / "mlflow.db").exists()


# ------------------------------------------------------------------------------------------ cache


def test_dry_run_lists_cells_and_models_without_side_effects(tmp_path, capsys):
    import yaml

    from strbench import cli

    p = tmp_path / "t.yaml"
    p.write_text(yaml.safe_dump(tiny(tmp_path)))
    assert cli.main(["run", str(p), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "6 cells, 4 models" in out and "Nothing was trained or logged" in out
    assert out.count("pending") == 6 and "missing" in out
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "cache").exists()


def _train_calls(monkeypatch):
    import strbench.train as T

    calls, real = [], T.train_model

    def spy(role, cfg, *a, **kw):
        calls.append(role)
        return real(role, cfg, *a, **kw)

    monkeypatch.setattr(T, "train_model", spy)
    return calls


def test_model_cache_trains_once_and_resumes_half_trained_model(tmp_path, monkeypatch):
    d = tiny(tmp_path)
    d["methods"] = {"IR-SDE": {"method": "irsde"}}
    cell = cells_of(d)[0]
    spec = cell.model("irsde")
    res = experiment.Resources(tmp_path / "cache", "cpu")
    assert res.model_status(spec) == "missing"

    steps = []

    def interrupt_at_3(ev):
        steps.append(ev["step"])
        if ev["step"] == 3:
            raise KeyboardInterrupt  # a Ctrl-C in the middle of training

    with pytest.raises(KeyboardInterrupt):
        res.model(spec, callback=interrupt_at_3)
    assert res.model_status(spec) == "partial"  # checkpoint of step 3 kept, not marked complete

    calls = _train_calls(monkeypatch)
    res2 = experiment.Resources(tmp_path / "cache", "cpu")
    steps.clear()
    res2.model(spec, callback=lambda ev: steps.append((ev["event"], ev["step"], ev.get("replayed", False))))
    # resumed after step 3, did not start over; the losses logged before the interruption are replayed first
    assert steps == [("resumed", 3, False), ("loss", 1, True), ("loss", 2, True), ("loss", 3, True), ("loss", 4, False)]
    assert res2.model_status(spec) == "cached" and calls == ["irsde"]
    info = json.loads((res2.model_dir(spec) / "complete.json").read_text())
    assert info["hash"] == spec.hash and info["steps"] == 4

    res3 = experiment.Resources(tmp_path / "cache", "cpu")
    res3.model(spec)  # loaded from the cache, not trained
    assert calls == ["irsde"]


def test_a_cells_models_another_process_is_training_come_last(tmp_path):
    """While another process trains the cell's structure model (it holds its train lock), this one trains the
    texture model first instead of waiting; the other releases its lock once the texture training has begun
    (or after 60 s: fetching in the cell's order would wait all that time and train the structure first)."""
    import subprocess
    import sys

    d = tiny(tmp_path)
    d["methods"] = {"C": {"method": "strdiffusion", "ablation": "C"}}
    cell = cells_of(d)[0]
    assert list(cell.config.models) == ["structure", "texture"]  # the cell's own order
    res = experiment.Resources(tmp_path / "cache", "cpu")
    lock = res.model_dir(cell.model("structure")) / "train.lock"
    lock.parent.mkdir(parents=True)
    go, held = tmp_path / "release", tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import pathlib, sys, time; from filelock import FileLock\n"
        f"l = FileLock({str(lock)!r}); l.acquire(); pathlib.Path({str(held)!r}).touch(); t = time.time()\n"
        f"while not pathlib.Path({str(go)!r}).exists() and time.time() - t < 60: time.sleep(0.05)\n"
        "l.release()")])
    try:
        while not held.exists():
            assert holder.poll() is None
        order = []

        def on_train(spec):
            order.append(spec.role)
            go.touch()

        nets = res.models(cell.config.models, on_train=on_train)
    finally:
        go.touch()
        holder.wait(timeout=60)
    assert order == ["texture", "structure"] and set(nets) == {"structure", "texture"}


def test_evaluate_for_tuning_uses_val_split_and_reports(tmp_path):
    d = tiny(tmp_path)
    d["methods"] = {"IR-SDE": {"method": "irsde"}}
    d["masks"]["bins"] = [[0.1, 0.3]]
    exp = C.load_experiment(d)
    seen = []
    m = experiment.evaluate(exp, split="val", report=lambda step, met: seen.append((step, met)), stages=[0.5])
    assert m["n_images"] == 2 and m["n_cells"] == 1 and 0 < m["ssim"] <= 1 and m["psnr"] > 0
    assert [s for s, _ in seen] == [2] and "psnr" in seen[0][1]  # at half of the 4 training steps
    assert m["train_steps"] == 4  # the training step of the final value
    t = experiment.evaluate(exp, split="test")
    assert t["psnr"] != m["psnr"]  # other images and masks
    assert not (tmp_path / "mlflow.db").exists()


def test_folder_masks_and_folder_dataset(tmp_path):
    """A user's mask folder (test: first per_bin masks of a bin, val: the next ones) and image folder."""
    import numpy as np
    from PIL import Image

    from strbench.masks import build_mask_set

    build_mask_set(tmp_path / "masks", 16, bins=[(0.1, 0.3), (0.3, 0.5)], per_bin=4, seed=3)
    for split in ("train", "test"):
        (tmp_path / "data" / split).mkdir(parents=True)
        for i in range(3):
            arr = (np.random.default_rng(i).random((20, 24, 3)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(tmp_path / "data" / split / f"{i}.png")
    d = tiny(tmp_path, **{"masks.source": "folder", "masks.path": str(tmp_path / "masks"),
                          "masks.polarity": "white_is_hole", "dataset.type": "folder", "dataset.root": str(tmp_path / "data")})
    exp = C.load_experiment(d)
    cells = experiment.expand(exp)
    experiment.check_resources(exp, cells)
    res = experiment.Resources(tmp_path / "cache", "cpu")
    mk = cells[0].config.mask
    test, val = res.eval_masks(mk, 16, "test"), res.eval_masks(mk, 16, "val")
    assert len(test) == len(val) == 2 and test.hash != val.hash
    assert ((test.ratios > 0.1) & (test.ratios <= 0.3)).all()
    ds = res.dataset(cells[0].config.dataset, "test")
    assert len(ds) == 3 and tuple(ds[0].shape) == (3, 16, 16)


def test_a_cells_path_to_the_sampler_does_not_climb_back_up():
    """plan -> checks/cache -> evaluate -> sample: no module imports one above it (evaluate -> run, plan -> run),
    and the planner reads no environment (the world size is passed in)."""
    import ast

    root = Path(experiment.__file__).parent

    def imports(name: str) -> set:
        out = set()
        for node in ast.walk(ast.parse((root / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names}
        return out

    above = {f"strbench.experiment.{m}" for m in ("run", "objective", "launch")}
    for name in ("plan", "checks", "cache", "evaluate"):
        assert not imports(name) & above, name
    assert "os" not in imports("plan") and "strbench.dist" not in imports("plan")
    assert not imports("evaluate") & {"strbench.config.Experiment", "strbench.experiment.checks"}
