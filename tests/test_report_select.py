"""Report run selection: pooled over invocations per cell hash, narrowed by --run/--profile/--since, the runs
used named in the output, mixed configurations of one table cell split into rows and warned about, extra
measured methods (biharmonic) as rows after the paper's."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import report_fixtures as F
from strbench import report as R
from strbench.cli.report import report_command
from strbench.report import load as L
from strbench.errors import StrbenchError
from report_fixtures import URI, FakeTracking


@pytest.fixture
def adhoc(monkeypatch):
    cells, parents, arts = F.quickstart_then_adhoc()
    fake = FakeTracking({"quickstart": cells}, arts, {"quickstart": parents})
    monkeypatch.setattr(L, "_tracking", lambda: fake)
    return fake


def test_default_pools_every_invocation_latest_run_per_cell_hash():
    cells, parents, _ = F.quickstart_then_adhoc()
    sel = R.select_runs(cells, parents, experiment="quickstart")
    assert len(sel.runs) == 7 and sel.replaced == 1  # 8 finished runs, one cell logged twice
    ir = sel.runs[sel.runs["tags.strbench.cell_hash"] == "ir-0".ljust(64, "0")]
    assert list(ir.run_id) == ["p2-iri-0"]  # the later of the two runs of that cell
    used = sel.used.set_index("parent")
    assert used.loc["P1aaaaaa", "profile"] == "cpu" and used.loc["P1aaaaaa", "cells"] == 5
    assert used.loc["P2bbbbbb", "first"] == "2024-05-03 09:00" and used.loc["P2bbbbbb", "cells"] == 2
    text = "\n".join(sel.lines())
    assert "7 cell run(s)" in text and "1 older run(s)" in text and "profile (none)" in text


def test_after_an_adhoc_run_the_table_keeps_every_method_and_bin_and_says_which_runs(adhoc, capsys):
    assert report_command(1, None, "quickstart", URI, "markdown", None) == 0
    out = capsys.readouterr()
    for label in ("IR-SDE (measured)", "StrDiffusion (measured)", "RePaint* [jump_n_sample=3] (measured)",
                  "RePaint* [jump_n_sample=5] (measured)"):
        assert f"| {label}" in out.out
    line = next(ln for ln in out.out.splitlines() if ln.startswith("| StrDiffusion (measured)"))
    assert "22.00" in line and "18.00" in line  # both bins
    assert "parent P1aaaaaa `quickstart [cpu]`, profile cpu: 5 cell(s), 2024-05-01 10:00" in out.out
    assert "parent P2bbbbbb `quickstart`, profile (none): 2 cell(s)" in out.out
    # two configurations of RePaint* on one bin: never silent
    assert "RePaint* at 10-20%: 2 runs of 2 configurations (jump_n_sample = 3 | 5)" in out.err
    assert "**Warning:** Table 1: RePaint* at 10-20%" in out.out


def test_run_profile_and_since_narrow_the_selection():
    cells, parents, _ = F.quickstart_then_adhoc()
    p1 = R.select_runs(cells, parents, experiment="q", run="P1a")
    # P1's configuration: its six cells, one of them last logged under P2 (same hash) and taken from there
    assert len(p1.runs) == 6 and "p2-iri-0" in set(p1.runs.run_id) and "p2-rep-0" not in set(p1.runs.run_id)
    assert p1.filters == ["parent run P1a"]
    cpu = R.select_runs(cells, parents, experiment="q", profile="cpu")
    assert set(cpu.runs.run_id) == set(p1.runs.run_id)
    late = R.select_runs(cells, parents, experiment="q", since="2024-05-02")
    assert set(late.runs.run_id) == {"p2-rep-0", "p2-iri-0"} and "started since 2024-05-02 00:00 UTC" in late.filters
    rt = R.build_table(p1.runs, 1)
    assert rt.warnings == [] and "RePaint* (measured)" in [r.label for r in rt.rows]


def test_selection_errors_name_what_exists():
    cells, parents, _ = F.quickstart_then_adhoc()
    with pytest.raises(StrbenchError, match=r"--run zzz: no parent run.*P1aaaaaa \(quickstart \[cpu\]\)"):
        R.select_runs(cells, parents, experiment="quickstart", run="zzz")
    with pytest.raises(StrbenchError, match=r"--profile paper: .*profiles: \(none\), cpu"):
        R.select_runs(cells, parents, experiment="quickstart", profile="paper")
    with pytest.raises(StrbenchError, match=r"--since 'yesterday-ish': not a date"):
        R.select_runs(cells, parents, experiment="quickstart", since="yesterday-ish")


def test_unlogged_configurations_are_pooled_with_a_warning():
    runs = pd.DataFrame([F.cell("a", "IR-SDE", "10-20%", "P", F.DAY1, psnr=20, cell_hash="h1"),
                         F.cell("b", "IR-SDE", "10-20%", "P", F.DAY1, psnr=22, cell_hash="h2")])
    rt = R.build_table(runs, 1)
    assert [r.label for r in rt.rows if r.source == "measured"] == ["IR-SDE (measured)"]
    assert len(rt.warnings) == 1 and "2 cell hashes with the same seed" in rt.warnings[0]
    seeds = runs.assign(**{"tags.strbench.seed": ["0", "1"], "params.seed": ["0", "1"]})
    assert R.build_table(seeds, 1).warnings == []  # two seeds of one configuration: a mean, no warning


def test_extra_measured_methods_are_rows_after_the_papers():
    cells, parents, arts = F.quickstart_then_adhoc()
    extra = pd.DataFrame([F.cell(f"bh-{j}", "biharmonic", b, "P3", F.DAY2, psnr=17.0 - 4 * j, cell_hash=f"bh{j}",
                                 nfe=0) for j, b in enumerate(F.BINS)])
    runs = R.select_runs(pd.concat([cells, extra]), parents).runs
    rt = R.build_table(runs, 1)
    labels = [r.label for r in rt.rows]
    assert labels[:12] == [f"{r['method']} (paper)" for r in R.load_reference()[1]["rows"]]
    assert labels[-1] == "biharmonic (measured)" and labels[12] == "IR-SDE (measured)"
    assert "| biharmonic (measured) " in R.to_markdown(rt)
    assert "biharmonic & strbench & 17.00 & 13.00" in R.to_latex(rt)
    tidy = R.tidy_frame(rt)
    assert set(tidy[tidy.method == "biharmonic"].metric) >= {"psnr", "ssim", "fid", "nfe_per_image"}


def test_caption_names_the_data_used_never_the_papers_dataset():
    cells, parents, _ = F.quickstart_then_adhoc()
    rt = R.build_table(R.select_runs(cells, parents).runs, 1)
    measured = rt.caption.split("the paper's rows")[0]
    assert "built-in 32 px, 8 test images per bin, generated masks" in measured and "Places2" not in measured
    assert "the paper's rows: Places2" in rt.caption
    tex = R.to_latex(rt)
    assert r"\caption{PSNR, SSIM and FID under varied mask ratios. Measured rows: built-in 32 px" in tex


def test_designed_sweeps_split_rows_without_a_warning():
    runs = pd.DataFrame([F.cell(f"v{i}", "StrDiffusion", "20-40%", "P", F.DAY1, psnr=20 + i, cell_hash=f"h{i}",
                                settings={"variant": v}) for i, v in enumerate(("gray2gray", "gray2edge"))])
    runs["tags.strbench.variant"] = ["gray2gray", "gray2edge"]
    rt = R.build_table(runs, 1)
    assert [r.label for r in rt.rows if r.source == "measured"] == ["StrDiffusion [gray2edge] (measured)",
                                                                    "StrDiffusion [gray2gray] (measured)"]
    assert rt.warnings == []
    swept = pd.DataFrame([F.cell(f"t{T}", "IR-SDE", "20-40%", "P", F.DAY1, psnr=20, cell_hash=f"T{T}")
                          for T in (20, 40)]).assign(**{"params.schedule.texture.T": ["20", "40"],
                                                        "tags.strbench.axis.schedule.texture.T": ["20", "40"]})
    rt = R.build_table(swept, 1)
    assert [r.label for r in rt.rows if r.source == "measured"] == ["IR-SDE [schedule.texture.T=20] (measured)",
                                                                    "IR-SDE [schedule.texture.T=40] (measured)"]
    assert rt.warnings == []


def test_training_params_split_rows_only_when_the_models_differ():
    def run(rid, tex_model, tex_steps, disc_steps, jump):
        r = F.cell(rid, "StrDiffusion", "10-20%", "P", F.DAY1, psnr=20, cell_hash=rid, settings={"u_max": jump})
        r.update({"tags.strbench.model.texture": tex_model, "params.train.roles.texture.steps": tex_steps,
                  "params.train.roles.discriminator.steps": disc_steps, "params.mask.bins": f"[[0.1, 0.2]]{rid}"})
        return r

    # other texture models (trained 200 vs 2500 steps): the training key that differs names the rows
    runs = pd.DataFrame([run("a", "t1", "200", "60", 3), run("b", "t2", "2500", "800", 3)])
    labels = set(R.table_row_labels(runs))
    assert labels == {"StrDiffusion [train.roles.texture.steps=200, train.roles.discriminator.steps=60]",
                      "StrDiffusion [train.roles.texture.steps=2500, train.roles.discriminator.steps=800]"}
    # the same models: training params logged differently (the experiment's, unused here) are no difference,
    # nor is the experiment's list of bins; the sampler setting is
    runs = pd.DataFrame([run("a", "t1", "200", "60", 3), run("b", "t1", "2500", "800", 5)])
    assert set(R.table_row_labels(runs)) == {"StrDiffusion [u_max=3]", "StrDiffusion [u_max=5]"}
    warn = R.mixed_configurations(runs, "mask_bin")
    assert len(warn) == 1 and "(u_max = 3 | 5)" in warn[0]


def test_a_param_logged_as_none_equals_one_not_logged_and_unset_keys_come_last():
    runs = pd.DataFrame([F.cell("a", "IR-SDE", "10-20%", "P", F.DAY1, psnr=20, cell_hash="a", settings={"x": 1}),
                         F.cell("b", "IR-SDE", "10-20%", "P", F.DAY1, psnr=20, cell_hash="b", settings={"x": 2})])
    runs["params.schedule.lr"] = ["None", np.nan]  # a None param (old runner) vs no param (new runner)
    runs["params.nets.arch"] = [np.nan, "strbench"]  # a key only the newer run logs
    runs["params.sample.steps"] = [np.nan, "5"]
    labels = set(R.table_row_labels(runs))
    assert labels == {"IR-SDE [x=1, sample.steps=unset]", "IR-SDE [x=2, sample.steps=5]"}
