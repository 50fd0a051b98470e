"""Report outputs: LaTeX no wider than the column / text width (pdflatex when present, else the width computed
from the Computer Modern metrics), the frontier figure, the HTML report (structure always; headless Chromium
when a `chromium` binary is on PATH) and the CLI flags."""
from __future__ import annotations

import io
import re
import shutil
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import report_fixtures as F
from strbench import cli, grids
from strbench import report as R
from strbench.cli.report import report_command
from strbench.report import html as report_html
from strbench.report import load as L
from strbench.report import texwidth
from report_fixtures import URI, FakeTracking, synthetic_table2_runs


# ----------------------------------------------------------------------------------------------- LaTeX width
def four_bin_runs() -> pd.DataFrame:
    """Table 1 at its widest: the paper's four bins, long measured labels (two settings of one method)."""
    recs = []
    for case in ("IR-SDE", "RePaint*", "StrDiffusion", "biharmonic"):
        for j, b in enumerate(("10-20%", "20-30%", "30-40%", "40-50%")):
            for k, setting in enumerate((3, 10) if case == "RePaint*" else (None,)):
                recs.append(F.cell(f"{case}-{b}-{k}", case, b, "P", F.DAY1, psnr=25.0 - 2 * j, cell_hash=f"{case}{b}{k}",
                                   settings={"jump_n_sample": setting} if setting else None, nfe=1000.0))
    return pd.DataFrame(recs)


def environments(tex: str) -> list[tuple[str, str]]:
    """(environment, tabular body) of every table in a LaTeX string."""
    return re.findall(r"\\begin\{(table\*?)\}.*?(\\begin\{tabular\}.*?\\end\{tabular\})", tex, flags=re.S)


def font_size(tex: str, tabular: str) -> float:
    """The size command just before this tabular's environment starts (\\footnotesize 8 pt, \\scriptsize 7 pt)."""
    head = tex[:tex.index(tabular)].rsplit(r"\begin{table", 1)[1]
    return 7.0 if r"\scriptsize" in head else 8.0


def computed_width(tabular: str, size: float) -> float:
    """The tabular's width from its cells (texwidth: CM advance widths at \\footnotesize + 2 tabcolsep/column;
    \\multicolumn headers widen the columns they span when wider)."""
    rows, spans = [], []
    for line in tabular.splitlines()[1:-1]:
        if not line.endswith(r"\\"):
            continue
        cells = [c.strip() for c in line[:-2].split(" & ")]
        if any(c.startswith(r"\multicolumn") for c in cells):
            row, j = [], 0
            for c in cells:
                m = re.match(r"\\multicolumn\{(\d+)\}\{\w\}\{(.*)\}$", c)
                n = int(m.group(1)) if m else 1
                row.append((j, n, m.group(2) if m else c))
                j += n
            spans.append(row)
        else:
            rows.append(cells)
    return texwidth.tabular_width(rows, spans=spans, size=size)


def pdflatex_width(tabular: str, size: float, tmp_path: Path) -> float:
    doc = (r"\documentclass[10pt]{article}\usepackage{booktabs}\usepackage{graphicx}\begin{document}"
           r"\newsavebox\tb\sbox\tb{" + (r"\scriptsize" if size == 7 else r"\footnotesize")
           + r"\setlength{\tabcolsep}{" + f"{texwidth.TABCOLSEP_PT:g}pt}}" + tabular +
           r"}\typeout{TABWIDTH=\the\wd\tb}\end{document}")
    (tmp_path / "w.tex").write_text(doc)
    log = subprocess.run(["pdflatex", "-interaction=nonstopmode", "w.tex"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120).stdout
    return float(re.search(r"TABWIDTH=([\d.]+)pt", log).group(1))


LIMIT = {"table": texwidth.COLUMN_PT, "table*": texwidth.TEXT_PT}


@pytest.mark.parametrize("which", ["table1-4bins", "table2", "paired", "claims"])
def test_latex_fits_the_column_or_the_text_width(which, tmp_path):
    if which == "claims":
        cells, parents, arts = F.quickstart_then_adhoc()
        runs = R.select_runs(cells, parents).runs
        tr = R.TableReport(R.select_runs(cells, parents, experiment="quickstart"), R.build_table(runs, 1), {},
                           R.paired_for_table(runs, {k[0]: v for k, v in arts.items()}, "mask_bin", n_resamples=200))
        from strbench import paired

        rows = [r.name for r in tr.table.rows if r.source == "measured"]
        claims = pd.DataFrame(paired.claims_from_pairs(paired.CLAIMS[:7], tr.pairs, rows, experiment="quickstart",
                                                       hint="strbench run experiments/ablation_resampling.yaml"),
                              columns=paired.CLAIM_COLUMNS)
        tex = R.claims_latex(claims, ["note"])
    elif which == "table2":
        tex = R.to_latex(R.build_table(synthetic_table2_runs(), 2))
    elif which == "paired":
        cells, parents, arts = F.quickstart_then_adhoc()
        runs = R.select_runs(cells, parents).runs
        pairs = R.paired_for_table(runs, {k[0]: v for k, v in arts.items()}, "mask_bin", n_resamples=200)
        tex = R.paired_latex(pairs, "Paired", ["note"], "tab:p")
    else:
        tex = R.to_latex(R.build_table(four_bin_runs(), 1))
    envs = environments(tex)
    assert envs, tex
    for env, tabular in envs:
        assert r"\resizebox" not in tex  # these all fit without scaling
        size = font_size(tex, tabular)
        width = pdflatex_width(tabular, size, tmp_path) if shutil.which("pdflatex") else computed_width(tabular, size)
        assert width <= LIMIT[env], f"{which}: {env} is {width:.0f} pt wide (limit {LIMIT[env]:.0f} pt)"
    if which == "table1-4bins":  # too wide with the cost columns: they move to the cells table, said in a note
        # (the cells table, with intervals and seed SDs, is itself split in two)
        assert len(envs) == 3 and "NFE/img" not in envs[0][1] and "NFE/img and s/img: in Table" in tex


def test_width_estimate_uses_tex_metrics():
    assert texwidth.text_width("0", 10) == pytest.approx(5.0 * texwidth.MARGIN)
    assert texwidth.text_width("M", 10) == pytest.approx(9.16 * texwidth.MARGIN, abs=0.01)
    assert texwidth.text_width(r"\textbf{00}", 10) > texwidth.text_width("00", 10)
    assert texwidth.text_width(r"10-20\%", 8) == pytest.approx((5 * 4 + 3.33 + 8.33) * 0.8 * texwidth.MARGIN, abs=0.05)
    assert texwidth.environment_for(240) == "table" and texwidth.environment_for(300) == "table*"
    assert texwidth.environment_for(600) is None


# ----------------------------------------------------------------------------------------------- frontier
def frontier_runs() -> pd.DataFrame:
    recs = []
    for case, setting, nfe, gain in (("IR-SDE", None, 20, 0.0), ("RePaint*", 2, 40, 0.4), ("RePaint*", 5, 80, 0.6),
                                     ("StrDiffusion", 1, 60, 1.0), ("StrDiffusion", 3, 94, 1.5)):
        key = "u_max" if case == "StrDiffusion" else "jump_n_sample"
        for j, b in enumerate(F.BINS):
            recs.append(F.cell(f"{case}{setting}{j}", case, b, "P", F.DAY1, psnr=20 + gain - 4 * j, nfe=nfe,
                               cell_hash=f"{case}{setting}{j}", settings={key: setting} if setting else None,
                               fid=40 - 10 * gain))
    recs.append(F.cell("rp-extra", "RePaint*", "20-30%", "P", F.DAY1, psnr=30, nfe=40, cell_hash="x",
                       settings={"jump_n_sample": 2}))
    return pd.DataFrame(recs)


def test_frontier_points_per_case_and_setting_over_common_bins(tmp_path):
    points, notes = R.frontier_frame(frontier_runs())
    p = points.set_index("label")
    assert list(p.index) == ["IR-SDE", "RePaint* [jump_n_sample=2]", "RePaint* [jump_n_sample=5]",
                             "StrDiffusion [u_max=1]", "StrDiffusion [u_max=3]"]
    assert p.loc["RePaint* [jump_n_sample=2]", "psnr"] == pytest.approx(18.4)  # 20-30% (one point only) left out
    assert p.loc["StrDiffusion [u_max=3]", "nfe"] == 94 and p.loc["IR-SDE", "fid"] == 40
    assert set(p.family) == {"IR-SDE", "RePaint*", "StrDiffusion"} and "20-30%" in notes[0]
    fig = R.figure_frontier(points, title_columns="10-20%, 40-50%")
    axes = fig.get_axes()
    assert [a.get_ylabel() for a in axes] == ["PSNR (dB) ↑", "FID ↓"] and axes[0].get_xscale() == "linear"
    assert len(axes[0].get_lines()) == 3 and "mean over 10-20%, 40-50%" in fig.get_suptitle()
    assert sorted(t.get_text() for t in axes[0].texts) == ["jump_n_sample=2", "jump_n_sample=5", "u_max=1",
                                                           "u_max=3"]  # settings; the lone IR-SDE is in the legend
    wide = points.assign(nfe=points["nfe"] * [1, 1, 10, 10, 50])  # budgets over decades: a log axis
    assert R.figure_frontier(wide).get_axes()[0].get_xscale() == "log"
    floor = pd.concat([wide, pd.DataFrame([{"label": "biharmonic", "family": "biharmonic", "nfe": 0.0, "psnr": 30.0,
                                            "fid": 20.0, "columns": ""}])])
    assert R.figure_frontier(floor).get_axes()[0].get_xscale() == "symlog"  # NFE 0 stays on the axis


def test_frontier_command_writes_png_and_pdf(monkeypatch, tmp_path, capsys):
    fake = FakeTracking({"quickstart": frontier_runs()}, {})
    monkeypatch.setattr(L, "_tracking", lambda: fake)
    assert report_command(None, "frontier", None, URI, "markdown", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert fake.searched == ["nfe_frontier", "quickstart"] and "| StrDiffusion [u_max=3]" in out
    assert (tmp_path / "frontier.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "frontier.pdf").exists()


# ----------------------------------------------------------------------------------------------- HTML
class Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.urls, self.tags, self.captions, self._cap = set(), [], [], [], False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.add(a["id"])
        for k in ("src", "href", "action", "data"):
            if k in a:
                self.urls.append(a[k])
        self._cap = tag == "figcaption"

    def handle_data(self, data):
        if self._cap:
            self.captions.append(data)

    def handle_endtag(self, tag):
        self._cap = False if tag == "figcaption" else self._cap


@pytest.fixture
def html_report(monkeypatch, tmp_path):
    cells, parents, arts = F.quickstart_then_adhoc()
    for rid in cells.run_id:  # every cell shows the same two test images: grids merge into one per bin
        arts[(rid, "samples.png")] = F.grid_png(7, zlib.crc32(rid.encode()), structure=rid.split("-")[1] == "str")
    kl_runs = pd.DataFrame([{"run_id": f"kl-{v}", "status": "FINISHED", "tags.strbench.variant": v}
                            for v in R.VARIANT_ORDER])
    arts.update(F.kl_frame({v: f"kl-{v}" for v in R.VARIANT_ORDER}))
    fake = FakeTracking({"quickstart": cells, "structure_variants": kl_runs}, arts, {"quickstart": parents})
    monkeypatch.setattr(L, "_tracking", lambda: fake)
    path = report_html.write_report(str(tmp_path / "out"), URI)
    return path


def test_html_report_is_self_contained_with_every_section(html_report):
    text = html_report.read_text()
    p = Collect()
    p.feed(text)
    assert set(report_html.SECTION_IDS) <= p.ids
    assert all(u.startswith(("data:image/png;base64,", "#")) for u in p.urls), [u[:40] for u in p.urls]
    assert "script" not in p.tags and "link" not in p.tags and "@import" not in text and "url(" not in text
    imgs = [u for u in p.urls if u.startswith("data:")]
    assert len(imgs) >= 4  # Fig. 8, frontier, a merged sample grid per bin
    caps = " ".join(p.captions)
    assert "columns: input, structure, IR-SDE, RePaint* [jump_n_sample=3], RePaint* [jump_n_sample=5], " \
           "StrDiffusion, ground truth (structure: StrDiffusion's final structure state)" in caps
    assert "StrDiffusion (paper)" in text and "Wilcoxon p" in text and "holds" in text
    assert "runs needed are missing" in text and "strbench run experiments/table3_celeba.yaml" in text


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no `chromium` binary on PATH to load the page headless")
def test_html_report_opens_in_headless_chromium(html_report):
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          html_report.resolve().as_uri()], capture_output=True, text=True, timeout=120).stdout
    for sid in report_html.SECTION_IDS:
        assert f'id="{sid}"' in dom


def test_merge_grids_needs_the_same_images():
    a = report_html._read_png(F.grid_png(1, 2))
    b = report_html._read_png(F.grid_png(1, 3, structure=False))
    tiles, labels, source = report_html.merge_grids({"X": b, "Y": a})
    assert tiles.shape[:2] == (2, 5) and labels == ["input", "structure", "X", "Y", "ground truth"] and source == "Y"
    assert np.array_equal(tiles[:, 1], report_html.grid_tiles(a)[:, 1])  # the structure of the method that has one
    other = report_html._read_png(F.grid_png(9, 3))
    assert report_html.merge_grids({"X": a, "Y": other}) is None  # other images: shown per cell instead
    assert report_html.grid_tiles(np.zeros((10, 13, 3), np.uint8)) is None


# ----------------------------------------------------------------------------------------------- CLI
def test_cli_report_flags(monkeypatch, capsys):
    cells, parents, arts = F.quickstart_then_adhoc()
    fake = FakeTracking({"quickstart": cells}, arts, {"quickstart": parents})
    monkeypatch.setattr(L, "_tracking", lambda: fake)
    assert cli.main(["report", "--table", "1", "--experiment", "quickstart", "--tracking-uri", URI, "--format", "csv",
                     "--profile", "cpu"]) == 0
    out = capsys.readouterr()
    df = pd.read_csv(io.StringIO(out.out))
    assert set(df[df.source == "measured"].method) == {"IR-SDE", "RePaint*", "StrDiffusion"}  # P1's cells only
    assert "(profile cpu)" in out.err
    assert cli.main(["report", "--table", "1", "--paired", "--experiment", "quickstart", "--tracking-uri", URI,
                     "--format", "csv", "--since", "2024-05-02"]) == 0
    pairs = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(pairs.columns) == R.PAIRED_CSV_COLUMNS and set(pairs.a) | set(pairs.b) == {"IR-SDE", "RePaint*"}
    assert cli.main(["report", "--paired", "--claims", "--tracking-uri", URI]) == 2
    assert "add --table" in capsys.readouterr().err
    assert cli.main(["report", "--table", "1", "--run", "nope", "--experiment", "quickstart", "--tracking-uri", URI]) == 2
    assert "--run nope: no parent run" in capsys.readouterr().err


def test_cli_report_reads_the_yamls_tracking_settings(monkeypatch, tmp_path, capsys):
    """`strbench report X.yaml`: the YAML's tracking.uri and MLflow experiment (tracking.experiment, else its
    name), read by config.load_experiment; --tracking-uri and --experiment still win."""
    import yaml

    cells, parents, arts = F.quickstart_then_adhoc()
    fake = FakeTracking({"quickstart": cells, "renamed": cells}, arts, {"quickstart": parents, "renamed": parents})
    seen = []
    monkeypatch.setattr(L, "_tracking", lambda: fake)
    real = L.load_selection
    monkeypatch.setattr(L, "load_selection", lambda uri, name, **kw: seen.append((uri, name)) or real(uri, name, **kw))
    root = Path(__file__).resolve().parents[1] / "experiments"
    d = yaml.safe_load((root / "quickstart.yaml").read_text())
    d["tracking"] = {**d.get("tracking", {}), "uri": URI}
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump(d))
    assert cli.main(["report", str(path), "--table", "1", "--format", "csv"]) == 0
    assert seen == [(URI, "quickstart")] and "quickstart" in capsys.readouterr().err
    d["tracking"]["experiment"] = "renamed"
    path.write_text(yaml.safe_dump(d))
    seen.clear()
    assert cli.main(["report", str(path), "--table", "1", "--tracking-uri", "http://other.invalid"]) == 0
    assert seen == [("http://other.invalid", "renamed")]
    seen.clear()
    assert cli.main(["report", str(path), "--table", "2", "--experiment", "quickstart", "--format", "csv"]) == 0
    assert seen == [(URI, "quickstart")]
    from strbench.contract import DEFAULT_URI

    assert R.resolve_source() == (DEFAULT_URI, None)


# ----------------------------------------------------------------------------------------------- nfe_frontier.yaml
def test_nfe_frontier_reuses_the_quickstarts_models_and_sweeps_budgets():
    from strbench import config as C
    from strbench import experiment

    root = Path(__file__).resolve().parents[1] / "experiments"
    front = experiment.expand(C.load_experiment(root / "nfe_frontier.yaml"))
    quick = experiment.expand(C.load_experiment(root / "quickstart.yaml"))
    models = lambda cells: {m.role: m.hash for c in cells for m in c.models}  # noqa: E731
    assert models(front) == models(quick)  # same training settings: the quickstart's cache serves every cell
    settings = {c.config.case: c.config.method.model_dump() for c in front}
    assert sorted(s["jump_n_sample"] for k, s in settings.items() if k.startswith("RePaint*")) == [1, 2, 3, 5]
    assert sorted(s["u_max"] for k, s in settings.items() if k.startswith("StrDiffusion")) == [2, 3, 5]
    assert {s["method"] for s in settings.values()} == {"irsde", "repaint", "strdiffusion", "biharmonic", "telea",
                                                        "navier_stokes"}
    assert len(front) == 2 * len(settings) == 22  # 8 budgets + the three floors (NFE 0), two bins


def test_grid_column_titles_stay_short_and_tell_settings_apart():
    a = grids.wrap_label("StrDiffusion [train.roles.discriminator.steps=60, nets.arch=unset, +1 more]")
    b = grids.wrap_label("StrDiffusion [train.roles.discriminator.steps=800, nets.arch=strbench, +1 more]")
    assert a == "StrDiffusion\ndiscriminator.steps=60\nnets.arch=unset" and a != b
    assert max(len(x) for x in b.splitlines()) <= 24 and grids.wrap_label("IR-SDE") == "IR-SDE"
