"""`strbench report`: paper reference numbers, golden Markdown/LaTeX tables from a fixed synthetic runs table,
missing FID as n/a with its reason, best measured value in bold, loaders/CLI on a fake tracking module, Fig. 8.

Regenerate the golden files (then read them by eye) with: STRBENCH_UPDATE_GOLDEN=1 pytest tests/test_report.py
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from strbench import report as R
from strbench.cli.report import report_command
from strbench.report import load as L
from strbench.errors import StrbenchError

from report_fixtures import URI, FakeTracking, synthetic_per_image, synthetic_table1_runs, synthetic_table2_runs

GOLDEN = Path(__file__).parent / "golden"
@pytest.fixture
def fake(monkeypatch):
    runs = synthetic_table1_runs()
    per = synthetic_per_image(runs)
    f = FakeTracking({"quickstart": runs}, {(k, "per_image.csv"): v for k, v in per.items()})
    monkeypatch.setattr(L, "_tracking", lambda: f)
    return f


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("STRBENCH_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"golden file {path} missing: run with STRBENCH_UPDATE_GOLDEN=1 and inspect it"
    assert text == path.read_text()


# ----------------------------------------------------------------------------------------------- reference
def test_paper_reference_holds_the_papers_numbers():
    ref = R.load_reference()
    t1, t2, t3 = ref[1], ref[2], ref[3]
    row = {r["method"]: r for r in t1["rows"]}
    assert row["StrDiffusion"]["psnr"][t1["columns"].index("10-20%")] == 29.45
    assert row["StrDiffusion"]["fid"] == [8.750, 16.16, 23.72, 36.93]
    assert row["IR-SDE"]["ssim"] == [0.961, 0.928, 0.908, 0.864] and row["IR-SDE"]["venue"] == "ICML' 23"
    assert row["FAR"]["fid"] == [None] * 4 and row["RePaint*"]["psnr"][3] == 22.11
    assert [r["method"] for r in t1["rows"]] == ["RFR", "PENNet", "HiFill", "FAR", "HAN", "CMT", "MEDFE", "CTSDG",
                                                 "ZITS", "RePaint*", "IR-SDE", "StrDiffusion"]
    case = {r["method"]: r for r in t2["rows"]}
    assert t2["columns"] == ["hard", "easy"] and case["D"]["fid"] == [42.28, 26.74] and case["A"]["psnr"][0] == 24.65
    cel = {r["method"]: r for r in t3["rows"]}
    assert t3["columns"] == ["0-20%", "20-40%", "40-60%"] and cel["MAT"]["fid"][0] == 0.900
    assert cel["StrDiffusion"]["psnr"] == [36.44, 29.31, 24.50] and len(t3["rows"]) == 8
    for t in (t1, t2, t3):
        for r in t["rows"]:
            assert all(len(r[m]) == len(t["columns"]) for m in ("psnr", "ssim", "fid"))


# ----------------------------------------------------------------------------------------------- golden
def test_table1_golden_markdown_and_latex():
    runs = synthetic_table1_runs()
    rt = R.build_table(runs, 1, per_image=synthetic_per_image(runs), experiment="quickstart",
                       notes=["No runs in `table1_places2`: showing experiment `quickstart` instead."])
    _golden("table1.md", R.to_markdown(rt))
    _golden("table1.tex", R.to_latex(rt))
    _golden("table1.csv", R.to_csv(rt))


def test_table2_golden_markdown_and_latex():
    rt = R.build_table(synthetic_table2_runs(), 2, experiment="ablation_resampling")
    _golden("table2.md", R.to_markdown(rt))
    _golden("table2.tex", R.to_latex(rt))


# ----------------------------------------------------------------------------------------------- semantics
def test_missing_fid_is_na_with_reason_never_a_number():
    rt = R.build_table(synthetic_table1_runs(), 1)
    rp = next(r for r in rt.rows if r.label == "RePaint* (measured)")
    assert rp.values[("fid", "30-40%")] is None and rp.footnotes[("fid", "30-40%")] == 1
    assert "metrics.fid_weights" in rt.footnotes[0]
    md = R.to_markdown(rt)
    line = next(ln for ln in md.splitlines() if ln.startswith("| RePaint* (measured)"))
    assert "n/a [1]" in line and "0.00" not in line
    assert "[1] FID n/a: no FID weights" in md


def test_measured_values_are_means_over_seeds_and_failed_runs_ignored():
    rt = R.build_table(synthetic_table1_runs(), 1)
    ir = next(r for r in rt.rows if r.label == "IR-SDE (measured)")
    assert ir.values[("psnr", "10-20%")] == pytest.approx(20.125)  # FAILED run's 99.0 is not averaged in
    assert rt.columns == ["10-20%", "30-40%"] and ir.nfe == 100
    paper = next(r for r in rt.rows if r.label == "StrDiffusion (paper)")
    assert paper.values[("psnr", "10-20%")] == 29.45 and paper.values[("psnr", "30-40%")] == 24.43


def test_latex_bolds_best_measured_only():
    tex = R.to_latex(R.build_table(synthetic_table1_runs(), 1))
    line = next(ln for ln in tex.splitlines() if ln.startswith("StrDiffusion & strbench &"))
    assert r"\textbf{21.12}" in line and r"\textbf{55.50}" in line  # best PSNR and FID among measured rows
    paper = next(ln for ln in tex.splitlines() if ln.startswith("StrDiffusion & - &"))
    assert r"\textbf" not in paper  # paper numbers are never bolded, even when better
    assert r"\toprule" in tex and r"\cmidrule(lr){3-4}" in tex and r"10-20\%" in tex


def test_variants_within_a_case_get_their_own_rows():
    runs = synthetic_table1_runs()
    runs.loc[runs["tags.strbench.case"] == "StrDiffusion", "tags.strbench.variant"] = \
        ["gray2edge", "gray2gray"] * 2
    labels = [r.label for r in R.build_table(runs, 1).rows if r.source == "measured"]
    assert "StrDiffusion [gray2edge] (measured)" in labels and "StrDiffusion [gray2gray] (measured)" in labels


# ----------------------------------------------------------------------------------------------- command
def test_table1_falls_back_to_quickstart_and_writes_out(fake, tmp_path, capsys):
    assert report_command(1, None, None, URI, "markdown", str(tmp_path)) == 0
    printed = capsys.readouterr().out
    assert fake.searched == ["table1_places2", "quickstart"]
    assert "| IR-SDE (measured)" in printed and "| StrDiffusion (paper)" in printed
    assert "showing experiment `quickstart`" in printed and "[0.0" not in printed
    assert (tmp_path / "table1.md").read_text() == printed
    from strbench.intervals import crossed_interval

    table = np.stack([fake.artifacts[(f"ir--0-{s}", "per_image.csv")].psnr for s in (0, 1)])  # seeds x images
    lo, hi = crossed_interval(table).low, crossed_interval(table).high  # IR-SDE 10-20%: two levels
    sd = np.std(table.mean(axis=1), ddof=1)
    assert f"| IR-SDE       | 10-20% |      2 |       2 |        8 |  20.12 | [{lo:.2f}, {hi:.2f}] |           {sd:.2f} |" \
        in printed


def test_csv_is_one_tidy_table_that_read_csv_reads(fake, tmp_path, capsys):
    import io

    report_command(1, None, "quickstart", URI, "csv", str(tmp_path))
    out = capsys.readouterr()
    printed = pd.read_csv(io.StringIO(out.out))
    saved = pd.read_csv(tmp_path / "table1_quickstart.csv")
    assert list(printed.columns) == R.TIDY_COLUMNS and printed.shape == saved.shape
    assert set(printed.source) == {"paper", "measured"} and printed.isna().all(axis=1).sum() == 0  # no blank rows
    meas = printed[printed.source == "measured"].set_index(["method", "mask_bin", "metric"])
    assert meas.loc[("IR-SDE", "10-20%", "psnr"), "value"] == pytest.approx(20.125)
    assert meas.loc[("IR-SDE", "10-20%", "psnr"), "n"] == 8 and meas.loc[("IR-SDE", "10-20%", "psnr"), "runs"] == 2
    assert meas.loc[("IR-SDE", "10-20%", "psnr"), "ci_low"] < 20.125 < meas.loc[("IR-SDE", "10-20%", "psnr"), "ci_high"]
    assert np.isnan(meas.loc[("RePaint*", "30-40%", "fid"), "value"])  # n/a stays empty, never 0
    paper = printed[(printed.source == "paper") & (printed.method == "StrDiffusion") & (printed.metric == "psnr")]
    assert dict(zip(paper.mask_bin, paper.value)) == {"10-20%": 29.45, "30-40%": 24.43}
    assert "Runs used: 12 cell run(s)" in out.err  # selection on stderr: stdout stays one CSV table


def test_table2_without_hard_easy_mask_sets_shows_bins_and_says_so(fake, tmp_path, capsys):
    """The quickstart (one generator mask set in hole-ratio bins) under Table 2: the runs go to their bins'
    columns (never pooled over bins into mislabelled rows), the paper's hard/easy rows keep their numbers, and
    a warning names masks.sets and the experiment that has them, on stderr and in the output."""
    import io

    runs = fake.runs["quickstart"]
    runs["params.mask.lo"] = runs["tags.strbench.mask_bin"].str[:2]  # what real runs log: bins differ in params
    runs["params.mask.hi"] = runs["tags.strbench.mask_bin"].str[3:5]
    assert report_command(2, None, "quickstart", URI, "markdown", str(tmp_path)) == 0
    out = capsys.readouterr()
    rt = R.build_table(runs, 2, experiment="quickstart")
    assert rt.columns == ["hard", "easy", "10-20%", "30-40%"]
    measured = [r for r in rt.rows if r.source == "measured"]
    assert [r.name for r in measured] == ["IR-SDE", "RePaint*", "StrDiffusion"]  # one row per case, no "[mask.lo=..."
    ir = measured[0]
    assert ir.values[("psnr", "10-20%")] == pytest.approx(20.125) and ir.values[("psnr", "30-40%")] == pytest.approx(17.125)
    assert ir.values[("psnr", "hard")] is None
    d = next(r for r in rt.rows if r.label == "D (paper)")
    assert d.values[("psnr", "hard")] == 25.94 and d.values[("fid", "easy")] == 26.74
    assert "per bin" in rt.caption
    for text in (out.out, out.err):
        assert "mask.lo" not in text
        assert "`masks.sets`" in text and "experiments/ablation_resampling.yaml" in text and "`irregular`" in text
    assert R.to_latex(rt).count("ablation\\_resampling.yaml") >= 1
    report_command(2, None, "quickstart", URI, "csv", None)
    tidy = pd.read_csv(io.StringIO(capsys.readouterr().out))
    meas = tidy[tidy.source == "measured"]
    assert set(meas.mask_set) == {"irregular"} and set(meas.mask_bin) == {"10-20%", "30-40%"}
    assert set(tidy[tidy.source == "paper"].mask_set) == {"hard", "easy"}


def test_no_runs_says_which_command_makes_them(fake, tmp_path):
    with pytest.raises(StrbenchError, match=r"strbench run experiments/ablation_resampling.yaml"):
        report_command(2, None, None, URI, "markdown", None)
    fake.runs.clear()
    with pytest.raises(StrbenchError, match=r"table1_places2.*quickstart.*strbench run experiments/quickstart.yaml"):
        report_command(1, None, None, URI, "markdown", None)


def test_missing_sqlite_store_is_not_created(monkeypatch, tmp_path):
    def boom():
        raise AssertionError("tracking must not be touched for a missing sqlite store")

    monkeypatch.setattr(L, "_tracking", boom)
    db = tmp_path / "mlflow.db"
    with pytest.raises(StrbenchError, match="no finished cell runs"):
        report_command(3, None, None, f"sqlite:///{db}", "markdown", None)
    assert not db.exists()


def test_report_module_does_not_import_mlflow():
    code = ("import sys; from strbench import report as R; import pandas as pd; "
            "R.to_latex(R.build_table(pd.DataFrame({'run_id': ['a'], 'tags.strbench.case': ['IR-SDE'], "
            "'tags.strbench.mask_bin': ['10-20%'], 'metrics.psnr': [20.0]}), 1)); "
            "assert 'mlflow' not in sys.modules, 'mlflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------------------------- Fig. 8
def _kl_frame() -> pd.DataFrame:
    recs = []
    for v_i, variant in enumerate(R.VARIANT_ORDER):
        for seed in (0, 1):
            for step in range(0, 20, 2):
                for region, scale in (("masked", 1.0), ("unmasked", 0.2)):
                    recs.append({"variant": variant, "run_id": f"{variant}-{seed}", "step": step, "t": 20 - step,
                                 "region": region, "kl": scale * (v_i + 1) * np.exp(-step / 8) + 0.01 * seed})
    return pd.DataFrame(recs)


def test_figure8_has_four_variants_in_both_panels(tmp_path):
    fig = R.figure8(_kl_frame())
    axes = fig.get_axes()
    assert [a.get_title() for a in axes] == ["masked region", "unmasked region"]
    for ax in axes:
        assert len(ax.get_lines()) >= 4
        assert [t.get_text() for t in ax.get_legend().get_texts()] == list(R.VARIANT_ORDER)
    paths = R.save_figure(fig, tmp_path, "fig8_kl")
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"


def test_figure8_command_reads_kl_artifacts(monkeypatch, tmp_path, capsys):
    kl = _kl_frame()
    runs = pd.DataFrame([{"run_id": rid, "status": "FINISHED", "tags.strbench.variant": rid.split("-")[0]}
                         for rid in kl.run_id.unique()])
    arts = {(rid, "kl_trajectory.csv"): g.drop(columns=["variant", "run_id"]) for rid, g in kl.groupby("run_id")}
    monkeypatch.setattr(L, "_tracking", lambda: FakeTracking({"structure_variants": runs}, arts))
    assert report_command(None, 8, None, URI, "markdown", str(tmp_path)) == 0
    assert (tmp_path / "fig8_kl.png").stat().st_size > 10_000 and (tmp_path / "fig8_kl.pdf").exists()
    monkeypatch.setattr(L, "_tracking", lambda: FakeTracking({"structure_variants": runs}, {}))
    with pytest.raises(StrbenchError, match="kl_trajectory.csv"):
        report_command(None, 8, None, URI, "markdown", str(tmp_path))


def test_figure8_leaves_out_runs_without_a_structure_variant(monkeypatch):
    """A floor method's (or IR-SDE's) run has variant `none`: not a structure variant, so neither in Fig. 8 nor
    in its claims (the biharmonic floor's one-step 'trajectory' used to appear as a legend entry and a claim)."""
    kl = _kl_frame()
    runs = pd.DataFrame([{"run_id": rid, "status": "FINISHED", "tags.strbench.variant": rid.split("-")[0]}
                         for rid in kl.run_id.unique()] +
                        [{"run_id": "floor-0", "status": "FINISHED", "tags.strbench.variant": "none"}])
    arts = {(rid, "kl_trajectory.csv"): g.drop(columns=["variant", "run_id"]) for rid, g in kl.groupby("run_id")}
    arts[("floor-0", "kl_trajectory.csv")] = pd.DataFrame({"step": [0, 0], "t": [20, 20],
                                                           "region": ["masked", "unmasked"], "kl": [0.0, 0.0]})
    monkeypatch.setattr(L, "_tracking", lambda: FakeTracking({"structure_variants": runs}, arts))
    got = R.load_kl_trajectories(URI, "structure_variants")
    assert set(got["variant"]) == set(R.VARIANT_ORDER) and "floor-0" not in set(got["run_id"])


def test_logged_interval_is_used_and_per_image_fetched_only_when_needed(monkeypatch):
    runs = synthetic_table2_runs()  # one run per cell, each with its logged interval
    runs.loc[runs.run_id == "D-hard", ["metrics.psnr_ci_low", "metrics.ssim_ci_low"]] = np.nan
    arts = {(r, "per_image.csv"): pd.DataFrame({"psnr": [10.0, 30.0, 20.0], "ssim": [0.5, 0.7, 0.6]})
            for r in runs.run_id}
    fake = FakeTracking({}, arts)
    monkeypatch.setattr(L, "_tracking", lambda: fake)
    per, notes = R.load_per_image(URI, runs, "mask_set")
    assert list(per) == ["D-hard"] and notes == []  # the only run without a logged interval
    det = R.build_table(runs, 2, per_image=per).details.set_index(["method", "column"])
    assert det.loc[("A", "hard"), "psnr_ci"] == (17, 19)  # logged, not recomputed
    lo, hi = det.loc[("D", "hard"), "psnr_ci"]
    assert 10.0 <= lo < 20.0 < hi <= 30.0  # bootstrapped from its per-image values
    seeds = pd.concat([runs.assign(run_id=runs.run_id + "-s1"), runs])  # two seeds per cell: pool them
    fake.artifacts.update({(r + "-s1", "per_image.csv"): arts[(r, "per_image.csv")] for r in runs.run_id})
    per, _ = R.load_per_image(URI, seeds, "mask_set")
    assert len(per) == len(seeds)
    det = R.build_table(seeds, 2, per_image=per).details.set_index(["method", "column"])
    assert det.loc[("A", "hard"), "runs"] == 2 and det.loc[("A", "hard"), "psnr_ci"] != (17, 19)
