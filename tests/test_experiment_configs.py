"""Every file in experiments/, in every profile: `strbench validate` and `strbench run --dry-run` pass.

Modelled on lightning-hydra-template's test that instantiates every experiment config. The folder is
globbed, so a new experiment YAML is checked without editing this file. For each experiment file, with
no --profile (its default_profile) and with each key of its `profiles:`:

- ``strbench validate FILE [--profile P]`` exits 0 and prints one ``FILE: ok: N cells, M models`` line;
- ``strbench run FILE [--profile P] --dry-run`` exits 0, prints the model and cell lists (N cells, the
  same N), and creates nothing in the working folder: it runs in an empty temporary cwd where the
  default tracking (sqlite:///mlflow.db, ./mlartifacts) and cache (.strbench) paths point;
- the plan is today's (PLANS below): cell and model counts, and where no fixture path enters the config,
  a digest of the dry run's tables (every model and cell hash and label), so a refactor that would plan
  different cells, or hash them differently (a resumed sweep would not find its finished cells), fails;
- no YAML mapping in the folder repeats a key (strbench.config.read_yaml refuses one; yaml.safe_load would
  silently keep the last).

Profiles that need a real dataset (``dataset.root: null``) or a mask folder (``masks.path: null``) get
``--set dataset.root=...`` / ``--set masks.path=...`` pointing at small fixture folders built here in
the dataset type's layout (strbench.data: psv, celeba, places2, folder) with a few generated images,
and a folder of mask PNGs. Without them, validate must stop with the one-line error naming the key.

Tune configs (a YAML with ``base:`` and ``study:``) are not experiments: they are parsed with
``strbench.tune.load_spec``, and every search-space key is checked the way ``strbench tune`` checks it
before a study (``probe_overlays`` + the runner evaluator's ``check``); the overlay of each probe is then
dry-run on the base experiment with ``--set-from`` (what ``tune --export`` + ``run --set-from`` does).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from strbench import cli
from strbench.config import load_experiment, read_yaml

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT_DIR = ROOT / "experiments"
ALL_YAML = sorted([*EXPERIMENT_DIR.glob("*.yaml"), *EXPERIMENT_DIR.glob("*.yml")])
FIXTURE_SIZE = 16  # px of the generated images and masks (validate/dry-run do not read them)
CREATED_BY_A_RUN = ("mlflow.db", "mlartifacts", ".strbench", "mlruns")


def _is_tune_config(data: dict) -> bool:
    return "base" in data and "study" in data


def _read(path: Path) -> dict:
    return read_yaml(path)


EXPERIMENTS = [p for p in ALL_YAML if not _is_tune_config(_read(p))]
TUNE_CONFIGS = [p for p in ALL_YAML if _is_tune_config(_read(p))]
# (file, profile or None): None = no --profile (the file's default_profile)
CASES = [(p, prof) for p in EXPERIMENTS for prof in [None, *sorted(_read(p).get("profiles") or {})]]


def _id(case) -> str:
    path, prof = case
    return f"{path.stem}-{prof or 'default'}"


# ---------------------------------------------------------------------------------------------
# fixture folders: datasets in their layouts, a mask folder
# ---------------------------------------------------------------------------------------------

# dataset type -> {relative folder: number of images}; see strbench/data.py's module docstring
LAYOUTS = {
    "psv": {"paris_train_original": 3, "paris_eval_gt": 2},
    "places2": {"data_256/a/abbey": 3, "val_256": 2},
    "celeba": {"img_align_celeba": 5},  # + list_eval_partition.txt (0 train, 1 val, 2 test)
    "folder": {"train": 3, "test": 2},
}


def _png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")


def _image(i: int) -> np.ndarray:
    """A small deterministic RGB image (a gradient that differs per index)."""
    y, x = np.mgrid[:FIXTURE_SIZE, :FIXTURE_SIZE]
    rgb = np.stack([(x * 16 + i * 40) % 256, (y * 16 + i * 70) % 256, ((x + y) * 8 + i * 20) % 256], -1)
    return rgb.astype(np.uint8)


def make_dataset_folder(root: Path, kind: str) -> Path:
    """root/<kind>/ in the layout strbench.data reads for dataset.type `kind`."""
    top = root / kind
    n = 0
    for folder, count in LAYOUTS[kind].items():
        for _ in range(count):
            _png(top / folder / f"{n:06d}.png", _image(n))
            n += 1
    if kind == "celeba":  # the official partition file: 3 train, 1 val, 1 test
        parts = [0, 0, 0, 1, 2]
        (top / "list_eval_partition.txt").write_text("".join(f"{i:06d}.png {p}\n" for i, p in enumerate(parts)))
    return top


def make_mask_folder(root: Path) -> Path:
    """root/masks/: gray PNG masks, white = hole (NVIDIA irregular-mask style), with hole ratios k/16 for
    k = 1..9 so that every bin of the shipped experiments (0-60%) holds one (the pre-flight bins them)."""
    top = root / "masks"
    for k in range(1, 10):
        m = np.zeros((FIXTURE_SIZE, FIXTURE_SIZE), np.uint8)
        m[:, : k * FIXTURE_SIZE // 16] = 255
        _png(top / f"{k:05d}.png", m)
    return top


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for kind in LAYOUTS:
        make_dataset_folder(root, kind)
    make_mask_folder(root)
    return root


def test_fixture_folders_are_read_by_strbench_data(data_root):
    """The fixtures are real layouts: strbench.data finds train and test images in each."""
    from strbench.data import make_dataset

    for kind in LAYOUTS:
        for split in ("train", "test"):
            ds = make_dataset({"type": kind, "root": str(data_root / kind), "size": FIXTURE_SIZE}, split=split)
            assert len(ds) > 0, (kind, split)
            assert tuple(ds[0].shape) == (3, FIXTURE_SIZE, FIXTURE_SIZE)


def resource_overrides(path: Path, profile: str | None, data_root: Path) -> list[str]:
    """--set arguments that point a profile's missing dataset root / mask folder at the fixtures."""
    exp = load_experiment(path, profile=profile)
    out = []
    if exp.dataset.type != "builtin" and not exp.dataset.root:
        out.append(f"dataset.root={data_root / exp.dataset.type}")
    if exp.masks.source == "folder" and not exp.masks.path:
        out.append(f"masks.path={data_root / 'masks'}")
        if exp.masks.polarity is None:
            out.append("masks.polarity=white_is_hole")
    out += [f"models.{role}=random:0" for role, v in exp.models.items() if v is None]  # released weights: none here
    return out


def _argv(path: Path, profile: str | None, sets: list[str]) -> list[str]:
    argv = [str(path)] + (["--profile", profile] if profile else [])
    for s in sets:
        argv += ["--set", s]
    return argv


def _assert_nothing_created(cwd: Path) -> None:
    left = sorted(p.name for p in cwd.iterdir())
    assert left == [], f"validate/dry-run created {left} in the working folder"
    for name in CREATED_BY_A_RUN:
        assert not (cwd / name).exists()


# ---------------------------------------------------------------------------------------------
# experiments
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ALL_YAML, ids=[p.stem for p in ALL_YAML])
def test_no_duplicate_keys(path):
    """A key given twice in one mapping would silently lose its first value (e.g. two `sample:` lines
    in a profile); none of the shipped files has one. strbench's own reader refuses such a file."""
    read_yaml(path)


def test_experiments_folder_is_globbed():
    """The glob finds the shipped experiments and the tune config (a guard against an empty glob)."""
    names = {p.stem for p in EXPERIMENTS}
    assert {"quickstart", "table1_places2", "table3_celeba", "ablation_resampling", "structure_variants"} <= names
    assert {p.stem for p in TUNE_CONFIGS} >= {"tune_schedules"}
    assert all(len([c for c in CASES if c[0] == p]) >= 2 for p in EXPERIMENTS)  # default + >= 1 profile
    assert set(PLANS) <= {_id(c) for c in CASES}, "stored plans of cases that no longer exist"


def plan_digest(dry_run_out: str) -> str:
    """sha256 (16 hex) of the dry run's model and cell tables: roles, model hashes, cell hashes, labels."""
    body = dry_run_out.split("\nmodels:\n", 1)[1]
    body = body.split("\n\nchecks:\n", 1)[0] if "\n\nchecks:\n" in body else body.rsplit("\n\n", 1)[0]
    return hashlib.sha256(body.encode()).hexdigest()[:16]


# Today's plan of every case: cell and model counts, and for profiles without fixture paths the digest
# of the dry run's tables. A change here means `strbench run` would plan different cells (and a resumed
# sweep would not find its finished cells): make it only on purpose, and say so in the commit.
# Regenerate: PYTHONPATH=. python tests/test_experiment_configs.py (a case without an entry is not compared).
PLANS: dict[str, dict] = {
    "ablation_resampling-default": {"cells": 42, "models": 12, "digest": "33c25871578d3d8c"},
    "ablation_resampling-cpu": {"cells": 42, "models": 12, "digest": "33c25871578d3d8c"},
    "ablation_resampling-paper": {"cells": 14, "models": 4},
    "nfe_frontier-default": {"cells": 22, "models": 4, "digest": "e5c87f5b9436b862"},
    "nfe_frontier-cpu": {"cells": 22, "models": 4, "digest": "e5c87f5b9436b862"},
    "nfe_frontier-cpu_solvers": {"cells": 153, "models": 4, "digest": "34c0a2702a3f6d80"},
    "quickstart-default": {"cells": 18, "models": 4, "digest": "9182235376b768a6"},
    "quickstart-claims": {"cells": 54, "models": 12, "digest": "447ccab44073340d"},
    "quickstart-cpu": {"cells": 18, "models": 4, "digest": "9182235376b768a6"},
    "quickstart-paper": {"cells": 18, "models": 4},
    "released_checkpoints-default": {"cells": 20, "models": 4, "digest": "121ac371ff874ac5"},
    "released_checkpoints-irsde_celebahq": {"cells": 15, "models": 1},
    "released_checkpoints-places2_t100": {"cells": 16, "models": 3},
    "released_checkpoints-places2_t400": {"cells": 16, "models": 3},
    "released_checkpoints-psv_t100": {"cells": 8, "models": 3},
    "released_checkpoints-smoke": {"cells": 20, "models": 4, "digest": "121ac371ff874ac5"},
    "structure_variants-default": {"cells": 7, "models": 12, "digest": "18bf11b25b949416"},
    "structure_variants-cpu": {"cells": 7, "models": 12, "digest": "18bf11b25b949416"},
    "structure_variants-paper": {"cells": 7, "models": 12},
    "table1_places2-default": {"cells": 24, "models": 4, "digest": "13631536bf7129df"},
    "table1_places2-cpu": {"cells": 24, "models": 4, "digest": "13631536bf7129df"},
    "table1_places2-paper": {"cells": 24, "models": 4},
    "table3_celeba-default": {"cells": 18, "models": 4, "digest": "bd6032f5b3264137"},
    "table3_celeba-cpu": {"cells": 18, "models": 4, "digest": "bd6032f5b3264137"},
    "table3_celeba-paper": {"cells": 18, "models": 4},
}


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_validate_and_dry_run(case, data_root, tmp_path, monkeypatch, capsys):
    path, profile = case
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    sets = resource_overrides(path, profile, data_root)

    assert cli.main(["validate", *_argv(path, profile, sets)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert all(ln.startswith("  ") for ln in out[1:]), out  # the ok line, then the pre-flight's checks
    m = re.fullmatch(re.escape(str(path)) + r": ok: (\d+) cells, (\d+) models( \(profile .*\))?", out[0])
    assert m, out[0]
    n_cells, n_models = int(m.group(1)), int(m.group(2))
    assert n_cells >= 1 and n_models >= 1
    _assert_nothing_created(cwd)

    assert cli.main(["run", *_argv(path, profile, sets), "--dry-run"]) == 0
    out = capsys.readouterr().out
    head = out.splitlines()[0]
    assert re.search(rf": {n_cells} cells, {n_models} models; tracking sqlite:///mlflow.db \(no tracking "
                     r"database yet\); cache \.strbench$", head), head
    cells = out.split("\ncells:\n", 1)[1].strip().splitlines()[1:]  # after the header row
    cell_rows = [ln for ln in cells if re.match(r"\s+\d+\s+[0-9a-f]{12}\s+pending\s", ln)]
    assert len(cell_rows) == n_cells, out
    models = out.split("\nmodels:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(models) == n_models and all(" missing " in ln or " pretrained " in ln for ln in models), models
    assert out.rstrip().endswith("Nothing was trained or logged.")
    _assert_nothing_created(cwd)

    got = {"cells": n_cells, "models": n_models}
    if not sets:  # no fixture paths in the config: cell and model hashes are machine-independent
        got["digest"] = plan_digest(out)
    if _id(case) in PLANS:  # a new experiment file is validated above before it has a stored plan
        assert got == PLANS[_id(case)], (got, out)


@pytest.mark.parametrize("case", [c for c in CASES if c[1] is not None], ids=[_id(c) for c in CASES if c[1]])
def test_profile_needing_data_names_the_key(case, tmp_path, monkeypatch, capsys):
    """Without the fixture folders, a profile that needs a dataset or mask folder stops at validate with
    one line naming the key (dataset.root before masks.path); a profile that needs none validates."""
    path, profile = case
    monkeypatch.chdir(tmp_path)
    exp = load_experiment(path, profile=profile)
    needs_root = exp.dataset.type != "builtin" and not exp.dataset.root
    needs_masks = exp.masks.source == "folder" and not exp.masks.path
    needs_models = sorted(r for r, v in exp.models.items() if v is None)
    code = cli.main(["validate", str(path), "--profile", profile])
    err = capsys.readouterr().err.strip()
    if not (needs_root or needs_masks or needs_models):
        assert code == 0, err
        return
    assert code == 2 and len(err.splitlines()) == 1, err
    if needs_root:
        assert err == (f"strbench: error: {path}: dataset.root: required for dataset.type {exp.dataset.type!r}; "
                       f"set it in the YAML or with --set dataset.root=/path/to/{exp.dataset.type}")
    elif needs_masks:
        assert err.startswith(f"strbench: error: {path}: masks.path: required when masks.source is 'folder'")
    else:
        assert re.match(rf"strbench: error: {re.escape(str(path))}: models\.({'|'.join(needs_models)}): not set; ", err), err
    _assert_nothing_created(tmp_path)


# ---------------------------------------------------------------------------------------------
# tune configs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", TUNE_CONFIGS, ids=[p.stem for p in TUNE_CONFIGS])
def test_tune_config_parses_and_every_space_key_applies(path, data_root, tmp_path, monkeypatch, capsys):
    from strbench import tune

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "experiments").symlink_to(EXPERIMENT_DIR)  # `base:` is read relative to the cwd
    monkeypatch.chdir(cwd)
    spec = tune.load_spec(path)
    base = Path(spec.base)
    assert base.is_file(), f"{path}: base {spec.base} not found from the repository root"
    assert spec.space, "a tune config with an empty space tunes nothing"

    evaluator = tune.runner_evaluator(spec)  # loads the base experiment (+ profile)
    overlays = tune.probe_overlays(spec)
    assert len(overlays) == len(spec.space)
    sets = resource_overrides(base, spec.profile, data_root)
    for i, overlay in enumerate(overlays):
        evaluator.check(overlay)  # what `strbench tune` checks before its first trial
        ov = tune.write_overlay(overlay, tmp_path / f"overlay{i}.yaml")
        argv = _argv(base, spec.profile, sets) + ["--set-from", str(ov)]
        assert cli.main(["run", *argv, "--dry-run"]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert out.rstrip().endswith("Nothing was trained or logged."), out
        labels = [ln.split("pending", 1)[1].strip() for ln in out.split("\ncells:\n", 1)[1].splitlines()
                  if re.match(r"\s+\d+\s+[0-9a-f]{12}\s+pending\s", ln)]
        assert labels, out
        for case, value in (overlay.get("methods") or {}).items():
            if value is None:  # `set: methods: {case: null}` removes the case from every cell
                assert not any(lbl.startswith(f"{case} ") for lbl in labels), (case, labels)
    entries = sorted(p.name for p in cwd.iterdir())
    assert entries == ["experiments"], f"tune checks created {entries} in the working folder"


def _print_plans() -> None:
    """Print PLANS for today's code (dry runs in a temporary folder, fixture paths for data profiles)."""
    import contextlib
    import io
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "data"
        for kind in LAYOUTS:
            make_dataset_folder(data, kind)
        make_mask_folder(data)
        cwd = Path(d) / "cwd"
        cwd.mkdir()
        os.chdir(cwd)
        print("PLANS: dict[str, dict] = {")
        for case in CASES:
            sets = resource_overrides(*case, data)
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                assert cli.main(["run", *_argv(*case, sets), "--dry-run"]) == 0
            out = buf.getvalue()
            m = re.search(r": (\d+) cells, (\d+) models;", out.splitlines()[0])
            plan = {"cells": int(m.group(1)), "models": int(m.group(2))}
            if not sets:
                plan["digest"] = plan_digest(out)
            print(f'    "{_id(case)}": {plan!r},'.replace("'", '"'))
        print("}")


if __name__ == "__main__":
    _print_plans()
