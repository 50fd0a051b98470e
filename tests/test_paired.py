"""Paired comparisons (bootstrap interval + Wilcoxon on per-image differences) and the paper's claims."""
from __future__ import annotations

import io
import zlib

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import report_fixtures as F
from strbench import paired as P
from strbench import report as R
from strbench.cli.report import report_command
from strbench.report import load as L
from report_fixtures import URI, FakeTracking


def test_paired_test_matches_scipy_and_is_seeded():
    d = np.random.default_rng(3).normal(0.5, 1.0, 20)
    r = P.paired_test(d, seed=1)
    assert r.n == 20 and r.diff == pytest.approx(d.mean())
    assert r.p == pytest.approx(stats.wilcoxon(d).pvalue)
    ref = stats.bootstrap((d,), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(1))
    assert (r.ci_low, r.ci_high) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    assert r.ci_low < r.diff < r.ci_high and P.paired_test(d, seed=1) == r


def test_all_zero_differences_say_why_p_is_na():
    r = P.paired_test(np.zeros(6))
    assert r.p is None and "all differences are zero" in r.note and (r.ci_low, r.ci_high) == (0.0, 0.0)
    assert P.paired_test([]).note.startswith("no image-mask pair") and P.paired_test([1.0]).ci_low is None


def _long(offsets: dict[str, float], seeds: dict[str, int] | None = None) -> pd.DataFrame:
    parts = []
    for row, off in offsets.items():
        for s in range((seeds or {}).get(row, 1)):
            for col in F.BINS:
                f = F.per_image(20.0 + off, seed=zlib.crc32(f"{row}/{s}/{col}".encode()))
                parts.append(f.assign(row=row, column=col, mask_set="irregular", mask_bin=col, seed=str(s),
                                      run_id=f"{row}-{s}-{col}"))
    return pd.concat(parts, ignore_index=True)


def test_pairs_are_matched_by_image_and_mask_and_pooled_over_columns():
    long = _long({"IR-SDE": 0.0, "StrDiffusion": 1.0}, seeds={"IR-SDE": 2})
    t = P.paired_table(long, ["IR-SDE", "StrDiffusion"], columns=list(F.BINS))
    psnr = t[t.metric == "psnr"].set_index("column")
    assert list(psnr.index) == ["10-20%", "40-50%", "all"] and (psnr.a == "StrDiffusion").all()
    assert psnr.loc["10-20%", "n"] == 8 and psnr.loc["all", "n"] == 16  # pairs within seed 0, the one both ran
    assert "seed(s) 1 run by only one of the two are left out" in psnr.loc["all", "note"]
    assert (psnr["seeds"] == 1).all() and (psnr["interval"] == P.ONE_SEED).all()
    assert psnr.loc["all", "diff"] == pytest.approx(1.0, abs=0.1) and psnr.loc["all", "ci_low"] > 0.8
    unpaired_half_width = 1.96 * long[long.row == "IR-SDE"].psnr.std() / np.sqrt(16)
    assert psnr.loc["all", "ci_high"] - psnr.loc["all", "ci_low"] < unpaired_half_width  # pairing removes image effects
    # one image of StrDiffusion missing: left out of the pairs, and said so
    t2 = P.paired_table(long[~((long.row == "StrDiffusion") & (long.image_id == "img03"))], ["IR-SDE", "StrDiffusion"])
    r = t2[(t2.metric == "psnr") & (t2.column == "10-20%")].iloc[0]
    assert r.n == 7 and "1 image-mask pair(s) scored by only one" in r.note


def test_claims_holds_reversed_not_shown_and_missing():
    long = _long({"IR-SDE": 0.0, "RePaint*": 2.0, "StrDiffusion": 1.0, "biharmonic": 1.0 + 1e-9})
    pairs = P.paired_table(long, ["IR-SDE", "RePaint*", "StrDiffusion", "biharmonic"])
    claims = [c for c in P.CLAIMS if c.source == "table1"]
    out = pd.DataFrame(P.claims_from_pairs(claims, pairs, ["IR-SDE", "RePaint*", "StrDiffusion"],
                                           experiment="quickstart", hint="strbench run x.yaml")).set_index("claim")
    assert out.loc["T1-psnr-irsde", "verdict"] == "holds" and out.loc["T1-psnr-irsde", "diff"] > 0.9
    assert out.loc["T1-psnr-repaint", "verdict"] == "reversed" and out.loc["T1-psnr-repaint", "ci_high"] < 0
    assert "10-20%: -1" in out.loc["T1-psnr-repaint", "detail"]  # per-column intervals, better - worse
    shown = P.claims_from_pairs([P.Claim("x", "x", "table1", "biharmonic", "StrDiffusion", "psnr")], pairs,
                                ["StrDiffusion", "biharmonic"], experiment="q", hint="h")
    assert shown[0]["verdict"] == "not shown"
    t2 = P.claims_from_pairs([c for c in P.CLAIMS if c.source == "table2"], pairs, ["IR-SDE"], experiment="quickstart",
                             hint="strbench run experiments/ablation_resampling.yaml")
    assert all(c["verdict"] == "missing" for c in t2)
    assert t2[0]["detail"] == ("runs needed are missing: case(s) D, C not in experiment `quickstart`; run "
                               "`strbench run experiments/ablation_resampling.yaml`")


def test_fig8_claim_from_kl_curves():
    arts = F.kl_frame({v: f"kl-{v}" for v in R.VARIANT_ORDER})
    kl = pd.concat([df.assign(variant=rid.removeprefix("kl-")) for (rid, _), df in arts.items()])
    out = P.claims_from_kl([c for c in P.CLAIMS if c.source == "fig8"], kl, experiment="sv", hint="h")
    assert len(out) == 6 and all(c["verdict"] == "holds" and c["ci_high"] < 0 for c in out)
    missing = P.claims_from_kl(P.CLAIMS[-1:], None, experiment="sv", hint="strbench run sv.yaml")
    assert missing[0]["verdict"] == "missing" and "no kl_trajectory.csv" in missing[0]["detail"]


def test_claims_command_on_fake_runs(monkeypatch, capsys):
    cells, parents, arts = F.quickstart_then_adhoc()
    fake = FakeTracking({"quickstart": cells}, arts, {"quickstart": parents})
    monkeypatch.setattr(L, "_tracking", lambda: fake)
    assert report_command(None, None, None, URI, "csv", None, claims=True) == 0
    out = capsys.readouterr()
    df = pd.read_csv(io.StringIO(out.out))
    assert list(df.columns) == P.CLAIM_COLUMNS
    got = df.groupby("claim")["verdict"].agg(set)
    assert got["T1-psnr-irsde"] == {"holds"} and got["T2-psnr-DC"] == {"missing"} and got["F8-masked"] == {"missing"}
    t2 = df[df.claim == "T2-psnr-DC"].iloc[0]
    assert "ablation_resampling" in t2.detail and t2.detail.startswith("runs needed are missing")
    # two RePaint* settings: the claim is checked against each
    assert set(df[df.claim == "T1-psnr-repaint"].worse) == {"RePaint* [jump_n_sample=3]", "RePaint* [jump_n_sample=5]"}


def test_claims_latex(monkeypatch, capsys):
    cells, parents, arts = F.quickstart_then_adhoc()
    monkeypatch.setattr(L, "_tracking", lambda: FakeTracking({"quickstart": cells}, arts, {"quickstart": parents}))
    report_command(None, None, None, URI, "latex", None, claims=True)
    tex = capsys.readouterr().out
    assert tex.startswith("\\begin{table") and r"\resizebox" not in tex and "D \\textgreater{} C & missing" in tex
