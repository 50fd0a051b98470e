"""Every output is saved (one lossless PNG per test image, named by image and mask id) and `strbench rescore`
reproduces the logged PSNR/SSIM from them without sampling."""
import yaml

from strbench import cli


def test_rescore_reproduces_the_logged_metrics(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = {"name": "rs", "dataset": {"type": "builtin", "size": 16}, "masks": {"bins": [[0.1, 0.3]], "per_bin": 3},
           "schedule": {"texture": {"T": 3}}, "nets": {"arch": "authors", "preset": "tiny"},
           "models": {"irsde": "random:0"}, "methods": {"IR-SDE": {"method": "irsde"}}, "sample": {"batch": 2},
           "metrics": {"fid": False, "kid": False, "bootstrap": 0}, "device": "cpu"}
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(cfg))
    assert cli.main(["run", "x.yaml", "-q"]) == 0
    capsys.readouterr()
    assert cli.main(["rescore", "--experiment", "rs"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 5 and all(" 3 outputs: psnr " in ln for ln in out[:4])  # IR-SDE and the three floors
    assert out[-1].startswith("4 cell run(s) rescored") and out[-1].endswith("0.0e+00")
