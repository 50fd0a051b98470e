"""Experiment schema: strict keys and types, one-line errors naming file and key path, layering of
profiles / overlays / overrides, and the shipped experiments."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from strbench import config as C
from strbench.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
RUNNER_EXPERIMENTS = ("quickstart", "table1_places2", "ablation_resampling", "table3_celeba", "structure_variants")
EXPERIMENTS = [ROOT / "experiments" / f"{n}.yaml" for n in RUNNER_EXPERIMENTS]


def load(d: dict, **kw):
    return C.load_experiment({"name": "t", **d}, **kw)


def err(d: dict, **kw) -> str:
    with pytest.raises(ConfigError) as e:
        load(d, **kw)
    msg = str(e.value)
    assert "\n" not in msg, "errors must be one line"
    return msg


# ------------------------------------------------------------------------------------------ errors


def test_unknown_key_names_path_and_suggests():
    msg = err({"masks": {"binz": [[0.1, 0.2]]}})
    assert "masks.binz" in msg and "did you mean 'bins'" in msg


def test_unknown_key_inside_a_method_lists_that_methods_keys():
    msg = err({"methods": {"R": {"method": "repaint", "jump_lenght": 3}}})
    assert "methods.R.jump_lenght" in msg and "jump_length" in msg


@pytest.mark.parametrize("d, path", [
    ({"masks": {"per_bin": "8"}}, "masks.per_bin"),
    ({"dataset": {"size": 32.5}}, "dataset.size"),
    ({"train": {"lr": "1e-4"}}, "train.lr"),
    ({"train": {"steps": True}}, "train.steps"),  # bools are not ints
    ({"schedule": {"texture": {"T": [10]}}}, "schedule.texture.T"),
    ({"metrics": {"fid": "yes"}}, "metrics.fid"),
])
def test_wrong_type_names_the_key(d, path):
    assert f"{path}: expected" in err(d)


@pytest.mark.parametrize("bins, where, says", [
    ([[0.1, 0.2], [0.5, 1.2]], "masks.bins[1]", "outside [0, 1]"),
    ([[-0.1, 0.2]], "masks.bins[0]", "outside [0, 1]"),
    ([[0.3, 0.2]], "masks.bins[0]", "lo 0.3 > hi 0.2"),
])
def test_mask_bin_outside_unit_interval(bins, where, says):
    msg = err({"masks": {"bins": bins}})
    assert where in msg and says in msg


def test_bin_starting_at_zero_is_allowed():
    assert load({"masks": {"bins": [[0.0, 0.2]]}}).masks.bins == [[0.0, 0.2]]


def test_unknown_method_and_literal_choices():
    assert "methods.S.method: unknown method 'strdiff'" in err({"methods": {"S": {"method": "strdiff"}}})
    msg = err({"methods": {"S": {"method": "strdiffusion", "ablation": "E"}}})
    assert "methods.S.ablation" in msg and "'D'" in msg


def test_schedule_params_are_checked_by_the_sde_code():
    msg = err({"schedule": {"texture": {"kind": "power", "params": {"start": 3.0}}}})
    assert "schedule.texture" in msg and "start" in msg


def test_structure_T_must_match():
    assert "structure T" in err({"schedule": {"structure": {"T": 5}}})


def test_error_names_the_yaml_file(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("name: x\ndataset: {sise: 32}\n")
    with pytest.raises(ConfigError, match=rf"^{p}: dataset.sise: unknown key"):
        C.load_experiment(p)


def test_yaml_syntax_error_names_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ndataset: {size: 32\n")
    with pytest.raises(ConfigError, match="line"):
        C.load_experiment(p)


def test_missing_file():
    with pytest.raises(ConfigError, match="no such experiment file"):
        C.load_experiment("does/not/exist.yaml")


# ------------------------------------------------------------------------------------------ layers


def test_defaults_filled_and_resolved_roundtrip():
    e = load({})
    r = e.resolved()
    assert r["schedule"]["texture"]["T"] == 100 and r["tracking"]["uri"] == "sqlite:///mlflow.db"
    assert r["cache_dir"] == ".strbench" and set(r["methods"]) == {"IR-SDE", "RePaint*", "StrDiffusion"}
    again = C.validate_dict({k: v for k, v in r.items()})
    assert again.resolved() == r


def test_override_overlay_profile_order(tmp_path):
    base = {"name": "t", "default_profile": "p",
            "profiles": {"p": {"dataset": {"size": 16}, "schedule.texture.T": 7}}}
    ov = tmp_path / "ov.yaml"
    ov.write_text(yaml.safe_dump({"schedule.texture.T": 9, "train": {"lr": 0.01}}))
    e = C.load_experiment(base)
    assert (e.dataset.size, e.schedule.texture.T, e.profile) == (16, 7, "p")
    e = C.load_experiment(base, overlay=ov)
    assert (e.schedule.texture.T, e.train.lr) == (9, 0.01)
    e = C.load_experiment(base, overlay=ov, overrides=["schedule.texture.T=11", "methods.StrDiffusion.u_max=3"])
    assert e.schedule.texture.T == 11 and e.methods["StrDiffusion"].u_max == 3


def test_error_says_which_layer_set_the_bad_value():
    msg = err({"default_profile": "p", "profiles": {"p": {"dataset": {"size": "big"}}}})
    assert "dataset.size" in msg and "profile 'p'" in msg
    assert "--set dataset.size=x" in err({}, overrides=["dataset.size=x"])
    # the most specific layer wins: the profile sets `train:` as a whole, --set the one bad key
    msg = err({"default_profile": "p", "profiles": {"p": {"train": {"steps": 5}}}}, overrides=["train.steps=abc"])
    assert "train.steps" in msg and "--set train.steps=abc" in msg and "profile" not in msg


def test_profile_can_remove_a_method():
    e = load({"methods": {"A": {"method": "irsde"}, "B": {"method": "repaint"}},
              "default_profile": "p", "profiles": {"p": {"methods": {"B": None}}}})
    assert list(e.methods) == ["A"]


def test_null_removes_a_method_by_dotted_key_too():
    e = load({}, overrides=["methods.RePaint*=null"])
    assert list(e.methods) == ["IR-SDE", "StrDiffusion"]


def test_unknown_profile():
    with pytest.raises(ConfigError, match="profile 'gpu' not found"):
        load({"profiles": {"cpu": {}}}, profile="gpu")


def test_parse_override_values_are_yaml():
    assert C.parse_override("a.b=3") == ("a.b", 3)
    assert C.parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert C.parse_override("a.b=0.5") == ("a.b", 0.5)
    assert C.parse_override("a.b=x") == ("a.b", "x")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        C.parse_override("noequals")


def test_paths_with_list_index_and_sweep_keys():
    d = {"masks": {"bins": [[0.1, 0.2], [0.2, 0.3]]}, "sweep": {}}
    C.set_path(d, "masks.bins.1", [0.3, 0.4])
    C.set_path(d, "sweep.schedule.texture.T", [5, 6])
    assert d["masks"]["bins"][1] == [0.3, 0.4] and d["sweep"] == {"schedule.texture.T": [5, 6]}
    assert C.get_path(d, "masks.bins.1.0") == 0.3
    with pytest.raises(ConfigError, match="no list item"):
        C.set_path(d, "masks.bins.5", [0.1, 0.2])


def test_sweep_values_are_validated_with_their_path():
    msg = err({"sweep": {"seed": [0, "a"]}})
    assert "sweep.seed[1]" in msg
    msg = err({"sweep": {"schedule.texture.TT": [1]}})
    assert "schedule.texture.TT" in msg and "did you mean 'T'" in msg
    assert "cannot be swept" in err({"sweep": {"device": ["cpu"]}})


def test_structure_schedule_inherits_unset_fields():
    e = load({"schedule": {"texture": {"T": 10, "lam": 0.2}, "structure": {"kind": "linear"}}})
    s = C.sde_dict(e.resolved(), "structure")
    assert (s["T"], s["lam"], s["kind"]) == (10, 0.2, "linear")
    assert C.sde_dict(e.resolved(), "texture")["kind"] == "cosine"


# ------------------------------------------------------------------------------------------ drift


def test_train_section_and_train_config_are_one_schema():
    """The experiment's train: section and the trainer's TrainConfig are one declaration (strbench.trainset):
    same fields, defaults and checks; train.roles.<role> takes the same types and ranges."""
    from strbench.trainset import TrainConfig, TrainSettings

    assert issubclass(C.TrainCfg, TrainSettings) and issubclass(TrainConfig, TrainSettings)
    ours = C.TrainCfg().model_dump()
    theirs = TrainConfig().to_dict()
    assert {k: v for k, v in ours.items() if k != "roles"} == {k: theirs[k] for k in TrainSettings.model_fields}
    for k in C.TrainRoleCfg.model_fields:
        assert C.TrainRoleCfg.model_fields[k].default is None
    with pytest.raises(ConfigError, match="train.roles.texture.lr"):
        C.load_experiment({"name": "x", "train": {"roles": {"texture": {"lr": 0}}}})
    with pytest.raises(ConfigError, match="train.roles.painter: unknown key|train.roles"):
        C.load_experiment({"name": "x", "train": {"roles": {"painter": {"lr": 1.0}}}})


def test_names_declared_elsewhere_are_derived():
    """Roles, variants, schedule kinds and presets have one declaration each; the schema's choices are those."""
    from typing import get_args

    from strbench import nets, roles, sde, structure

    assert C.ROLES == roles.names() and C.VARIANTS is structure.VARIANTS
    assert set(get_args(C.Experiment.model_fields["variant"].annotation)) == set(structure.VARIANTS)
    assert C.Experiment.model_fields["variant"].default == structure.DEFAULT_VARIANT
    assert set(get_args(C.SDECfg.model_fields["kind"].annotation)) == set(sde.SCHEDULES)
    assert set(get_args(C.NetsCfg.model_fields["preset"].annotation)) == set(nets.PRESETS)
    assert C.StructureCfg().canny_sigma == structure.DEFAULT_CANNY_SIGMA


def test_method_settings_have_one_home():
    """The schema of methods.<case> is each registered method's own settings model (no second copy)."""
    from strbench import methods
    from strbench.sample import defaults

    for name, m in methods.registry().items():
        assert C.METHOD_MODELS[name] is m.settings
        model = {k: v for k, v in m.make().model_dump().items() if k != "method"}
        assert {k: defaults(name)[k] for k in model} == model
    e = load({"methods": {"S": {"method": "strdiffusion", "u_max": 4}}})
    assert type(e.methods["S"]) is methods.get("strdiffusion").settings and e.methods["S"].u_max == 4


# ------------------------------------------------------------------------------------------ shipped


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_shipped_experiments_validate_in_every_profile(path):
    e = C.load_experiment(path, check_profiles=True)
    assert e.profile == "cpu" and "paper" in e.profiles
    paper = C.load_experiment(path, profile="paper")
    assert paper.dataset.size == 256 and paper.dataset.type != "builtin"
    assert e.dataset.type == "builtin" and e.dataset.size <= 64


def test_expected_experiments_exist():
    assert all(p.is_file() for p in EXPERIMENTS)


# ------------------------------------------------------------------------------------------ wording


def test_bin_messages_say_what_is_wrong():
    assert "has lo 0.3 > hi 0.2; write it as [0.2, 0.3]" in err({"masks": {"bins": [[0.3, 0.2]]}})
    assert "is empty (lo == hi" in err({"masks": {"bins": [[0.2, 0.2]]}})
    assert "outside [0, 1]" in err({"masks": {"bins": [[0.2, 1.3]]}})


def test_a_yaml_exponent_read_as_text_gets_a_hint():
    msg = err({}, overrides=["train.lr=1e-3"])
    assert "train.lr" in msg and "YAML reads 1e-3 as text: write 0.001" in msg and "--set train.lr=1e-3" in msg


def test_a_key_given_twice_in_a_yaml_file_is_refused(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("name: x\nsample: {batch: 2}\nsample: {batch: 3}\n")
    with pytest.raises(ConfigError, match=r"line 3 column 1: .*duplicate key 'sample'"):
        C.load_experiment(p)


def test_validate_checks_a_tune_config(capsys):
    from strbench import cli

    assert cli.main(["validate", "experiments/tune_schedules.yaml"]) == 0
    assert "ok: tune config; base experiments/quickstart.yaml" in capsys.readouterr().out
