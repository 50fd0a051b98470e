"""`strbench tune X.yaml --check-ranking K`: the trials' ranking with the YAML's fast solver against euler."""
from __future__ import annotations

import pytest
import yaml

from strbench import cli, tune
from strbench.errors import ConfigError
from strbench.tune import ranking

from helpers import TINY_TUNE_BASE


def _spec(set_: dict, objective="psnr") -> tune.TuneSpec:
    return tune.parse_spec({"base": "unused.yaml", "study": {"name": "r", "seed": 3, "objective": objective},
                            "space": {"schedule.texture.lam": {"type": "float", "low": 0.05, "high": 0.2},
                                      "schedule.texture.kind": {"type": "categorical", "choices": ["cosine", "linear"]}},
                            "set": set_})


def test_solver_keys_are_removed_under_methods_only_in_every_form():
    fixed = {"methods": {"IR-SDE": None, "StrDiffusion": {"solver": "posterior", "steps": 10, "u_max": 3}},
             "methods.Other.order": 2, "methods.Other.solver": "mr", "methods.Third": {"steps": 5, "jump": 2},
             "train.steps": 300, "sample": {"steps": 7}}
    kept, dropped = ranking.without_solver_keys(fixed)
    assert dropped == 5
    assert kept == {"methods": {"IR-SDE": None, "StrDiffusion": {"u_max": 3}}, "methods.Third": {"jump": 2},
                    "train.steps": 300, "sample": {"steps": 7}}  # training steps are not a solver key
    assert ranking.solver_keys(fixed) == {"methods.StrDiffusion.solver": "posterior", "methods.StrDiffusion.steps": 10,
                                          "methods.Other.order": 2, "methods.Other.solver": "mr",
                                          "methods.Third.steps": 5}


def test_overlays_are_drawn_reproducibly_and_each_trial_is_scored_twice():
    spec = _spec({"methods": {"StrDiffusion": {"solver": "posterior", "steps": 5}}})
    a, b = ranking.draw_overlays(spec, 4), ranking.draw_overlays(spec, 4)
    assert a == b and len({a_["schedule.texture.lam"] for a_ in a}) == 4
    seen = []

    def evaluate(ov):  # euler's value grows with lam; the fast solver adds a monotone distortion
        seen.append(ov)
        lam = ov["schedule.texture.lam"]
        fast = ov["methods"]["StrDiffusion"].get("solver") == "posterior"
        return {"psnr": (lam ** 0.5 - 0.1 if fast else 20 * lam), "nfe_per_image": 5.0 if fast else 20.0,
                "sec_per_image": 0.01 if fast else 0.04}

    r = ranking.ranking_check(spec, 4, evaluate)
    assert [o["methods"]["StrDiffusion"] for o in seen] == [{}, {"solver": "posterior", "steps": 5}] * 4
    assert r.spearman == pytest.approx(1.0) and r.best_rank_fast == 1
    assert r.cost["reference"]["nfe_per_image"] == 20.0 and r.cost["fast"]["nfe_per_image"] == 5.0
    out = ranking.format_check(r, ranking.solver_keys(spec.set))
    assert "Spearman rho +1.000" in out and "4.0x fewer" in out


def test_a_reversed_ranking_is_reported_as_such_and_minimised_objectives_rank_low_first():
    spec = _spec({"methods.StrDiffusion.solver": "mr"}, objective="fid")
    r = ranking.ranking_check(spec, 5, lambda ov: {
        "fid": (-1 if "methods.StrDiffusion.solver" in ov else 1) * ov["schedule.texture.lam"]})
    assert r.spearman == pytest.approx(-1.0)
    assert r.best_rank_fast == 5  # euler's best (lowest FID) is the fast solver's worst


def test_nothing_to_compare_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="has no solver keys") as e:
        ranking.ranking_check(_spec({"train.steps": 300}), 4, lambda ov: {"psnr": 1.0})
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="at least 3 trials"):
        ranking.ranking_check(_spec({"methods.S.solver": "mr"}), 2, lambda ov: {"psnr": 1.0})
    with pytest.raises(ConfigError, match="no finite psnr with the reference"):
        ranking.ranking_check(_spec({"methods.S.solver": "mr"}), 3, lambda ov: {"psnr": float("nan")})


def test_check_ranking_through_the_command_on_the_real_runner(tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text(TINY_TUNE_BASE + f"cache_dir: {tmp_path / 'cache'}\n")
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(yaml.safe_dump({
        "base": str(base), "study": {"name": "rc", "seed": 0, "storage": str(tmp_path / "j.log")},
        "space": {"schedule.texture.lam": {"type": "float", "low": 0.05, "high": 0.2}},
        "set": {"methods": {"IR-SDE": {"solver": "posterior", "steps": 2}}}}))
    assert cli.main(["tune", str(cfg), "--check-ranking", "3", "-q"]) == 0
    out = capsys.readouterr().out
    assert "Spearman rho" in out and "network calls per image: euler 4.0, fast 2.0 (2.0x fewer)" in out
    assert not (tmp_path / "j.log").exists()  # no study was written
    assert len(list((tmp_path / "cache").rglob("*.pt"))) >= 3  # one model per trial (its euler pass trains it; the fast pass reuses it)
