"""LPIPS (strbench.metrics.lpips, strbench.lpips_weights): backbone weights from a local file only, checked by
sha256; LPIPS(x, x) = 0 and grows with distortion; no weights -> n/a with the reason, never a number.

The backbone here is a fixture: a seeded random torchvision AlexNet saved to a temporary file named as torch.hub
names its files (`<name>-<sha256 prefix>.pth`), the prefix registered as the hub cache's pinned one. Nothing is
downloaded (a test fails if torchvision or torch.hub tries)."""
import hashlib
import io

import pytest
import torch

from strbench import lpips_weights as LW
from strbench import metrics as M
from strbench.errors import WeightsError


def _alexnet_bytes(seed=0) -> bytes:
    """A random AlexNet state_dict (torchvision's keys and shapes, He-scaled normal weights), as torch.save bytes."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in LW.expected_layout("alex").items():
        fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
        state[k] = torch.randn(shape, generator=g) * (2 / fan_in) ** 0.5 if len(shape) > 1 else torch.zeros(shape)
    state["classifier.6.bias"] = torch.zeros(1000)  # a torchvision file has the classifier too: ignored
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to fetch weights fails the test."""
    def refuse(*a, **k):
        raise AssertionError("LPIPS tried to download weights")

    import torchvision.models._api as tv_api

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", refuse)  # what torchvision's weights= would call
    monkeypatch.delenv(LW.ENV_WEIGHTS, raising=False)


@pytest.fixture(scope="module")
def fixture_weights(tmp_path_factory):
    """(a hub-cache TORCH_HOME holding a fixture alexnet file, its sha256): the prefix registered as pinned."""
    data = _alexnet_bytes()
    sha = hashlib.sha256(data).hexdigest()
    home = tmp_path_factory.mktemp("torch_home")
    ckpt = home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / f"alexnet-fixture-{sha[:8]}.pth").write_bytes(data)
    return home, ckpt / f"alexnet-fixture-{sha[:8]}.pth", sha


@pytest.fixture
def hub_cache(fixture_weights, monkeypatch):
    """The fixture file as the hub cache's alexnet (name and pinned checksum prefix registered for the test)."""
    home, path, sha = fixture_weights
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setitem(LW.HUB_FILES, "alex", path.name)
    monkeypatch.setitem(LW.PINNED_SHA256_PREFIX, "alex", {sha[:8]})
    return path, sha


def _images(n=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(size, size), mode="bilinear",
                                           align_corners=False)


def test_identical_is_zero_and_distortion_grows(hub_cache):
    path, sha = hub_cache
    x = _images()
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g)
    same = M.lpips(x, x)
    assert same.value is not None and same.value.shape == (3,) and torch.all(same.value == 0)
    d = [M.lpips((x + s * noise).clamp(0, 1), x).value for s in (0.05, 0.15, 0.4)]
    assert all(torch.all(a > 0) for a in d)
    assert torch.all(d[0] < d[1]) and torch.all(d[1] < d[2])
    assert same.protocol["weights_sha256"] == sha and same.protocol["net"] == "alex"
    assert same.protocol["linear_layers_sha256"] and same.protocol["weights_source"] == "torch.hub cache"


def test_linear_layers_ship_inside_torchmetrics_and_are_loaded(hub_cache):
    path, sha = hub_cache
    lin = torch.load(LW.linear_layers_path("alex"), map_location="cpu", weights_only=True)
    net = LW.lpips_network(path, sha, "alex")
    for k, v in lin.items():
        assert torch.equal(net.state_dict()[k], v)
    assert all(float(v.min()) >= 0 for v in lin.values())  # LPIPS v0.1's learned weights are non-negative


def test_explicit_weights_file_is_used_and_checked_by_its_name(fixture_weights, tmp_path, monkeypatch):
    _, path, sha = fixture_weights
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nothing in the hub cache
    x = _images(n=2)
    r = M.lpips(x, x.flip(-1), weights_path=str(path))
    assert r.value is not None and torch.all(r.value > 0) and r.protocol["weights_source"] == "user"
    bad = tmp_path / f"alexnet-{'0' * 8}.pth"  # a name whose checksum prefix the bytes do not have
    bad.write_bytes(path.read_bytes())
    with pytest.raises(WeightsError, match="does not start with"):
        M.lpips(x, x, weights_path=str(bad))
    with pytest.raises(WeightsError, match="do not exist"):  # a configured path that is wrong is an error
        M.lpips(x, x, weights_path=str(tmp_path / "nope.pth"))


def test_missing_weights_give_na_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    x = _images(n=2)
    r = M.lpips(x, x)
    assert r.value is None and "\n" not in r.reason
    assert "alexnet-owt-7be5be79.pth" in r.reason and LW.SETTING in r.reason and "not found" in r.reason


def test_a_hub_file_that_is_not_torchvisions_release_is_refused(fixture_weights, tmp_path, monkeypatch):
    """A file in the hub cache under torchvision's name whose bytes are something else: n/a, not a number."""
    _, path, _ = fixture_weights
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / LW.HUB_FILES["alex"]).write_bytes(path.read_bytes())
    with pytest.raises(WeightsError, match="does not start with 7be5be79"):
        LW.resolve_lpips_weights("alex")
    r = M.lpips(_images(n=2), _images(n=2))
    assert r.value is None and "7be5be79" in r.reason


def test_wrong_layout_is_refused(tmp_path):
    buf = io.BytesIO()
    torch.save({"features.0.weight": torch.zeros(3, 3)}, buf)
    p = tmp_path / "w.pth"
    p.write_bytes(buf.getvalue())
    with pytest.raises(WeightsError, match="layout"):
        LW.resolve_lpips_weights("alex", p)
    with pytest.raises(WeightsError, match="layout"):  # an AlexNet file is not a VGG16 backbone
        LW.load_verified_backbone(p, "vgg", origin="test")


def test_equals_torchmetrics_own_network_with_the_same_backbone(hub_cache):
    """Our loading (meta build, verified tensors) gives torchmetrics' LPIPS: its own `_LPIPS` loading the shipped
    linear layers itself, the backbone copied in by torchvision's module order."""
    from torchmetrics.functional.image.lpips import _LPIPS

    path, sha = hub_cache
    ref = _LPIPS(pretrained=True, net="alex", pnet_rand=True)  # pnet_rand: torchvision weights=None, no fetch
    feats = LW.load_verified_backbone(path, "alex", origin="test")[0]
    ref.net.load_state_dict({k: feats["features." + k.split(".", 1)[1]] for k in ref.net.state_dict()})
    x, y = _images(n=2, seed=4), _images(n=2, seed=5)
    want = ref(M.to_uint8(x).float() / 255, M.to_uint8(y).float() / 255, normalize=True).reshape(-1).double()
    assert torch.allclose(M.lpips(x, y).value, want, rtol=1e-5, atol=1e-7)


def test_images_too_small_for_the_backbone_give_na_with_the_reason(hub_cache):
    x = _images(n=2, size=16)
    r = M.lpips(x, x)
    assert r.value is None and "at least 31 px" in r.reason and "lpips_net: vgg" in r.reason


def _tiny_run(tmp_path, name):
    import yaml

    from strbench import cli

    cfg = {"name": name, "dataset": {"type": "builtin", "size": 32}, "masks": {"bins": [[0.1, 0.3]], "per_bin": 3},
           "schedule": {"texture": {"T": 3}}, "nets": {"arch": "authors", "preset": "tiny"},
           "models": {"irsde": "random:0"}, "methods": {"IR-SDE": {"method": "irsde"}}, "sample": {"batch": 3},
           "metrics": {"fid": False, "kid": False, "ids": False, "bootstrap": 50}, "device": "cpu"}
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    assert cli.main(["run", f"{name}.yaml", "-q"]) == 0
    return cli


@pytest.mark.slow
def test_table1_has_the_floors_and_an_lpips_column_from_the_fixture_weights(hub_cache, tmp_path, monkeypatch,
                                                                            capsys):
    """The quickstart's shape in miniature: Table 1 gets biharmonic, navier_stokes and telea rows and an LPIPS
    column (marked: not in the paper) with a value per cell; per_image.csv has it per image; the paired
    comparisons compare it; rescore reproduces it."""
    from strbench import tracking

    monkeypatch.chdir(tmp_path)
    cli = _tiny_run(tmp_path, "lp")
    capsys.readouterr()
    assert cli.main(["report", "lp.yaml", "--table", "1"]) == 0
    out = capsys.readouterr().out
    head = next(ln for ln in out.splitlines() if ln.startswith("| Method"))
    assert "LPIPS↓*" in head and "not reported by the paper (marked *)" in out
    at = [i for i, h in enumerate(head.split("|")) if "LPIPS" in h][0]
    for floor in ("IR-SDE", "biharmonic", "navier_stokes", "telea"):
        row = next(ln for ln in out.splitlines() if ln.startswith(f"| {floor} (measured)"))
        assert 0 < float(row.split("|")[at].strip().strip("*")) < 1
    assert cli.main(["report", "lp.yaml", "--table", "1", "--paired"]) == 0
    assert "| LPIPS " in capsys.readouterr().out  # the paired comparisons compare LPIPS too
    runs = tracking.search_cell_runs(tracking.absolute_uri("sqlite:///mlflow.db"), "lp")
    assert len(runs) == 4 and runs["metrics.lpips"].notna().all() and runs["metrics.lpips_ci_low"].notna().all()
    per = tracking.read_csv_artifact(tracking.absolute_uri("sqlite:///mlflow.db"), runs["run_id"].iloc[0],
                                     "per_image.csv")
    assert list(per.columns)[-1] == "lpips" and len(per) == 3
    assert abs(per["lpips"].mean() - runs["metrics.lpips"].iloc[0]) < 1e-12
    assert cli.main(["rescore", "--experiment", "lp"]) == 0
    last = capsys.readouterr().out.strip().splitlines()
    assert all("lpips " in ln for ln in last[:4]) and last[-1].endswith("0.0e+00")


@pytest.mark.slow
def test_table1_without_weights_says_na_and_why(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    cli = _tiny_run(tmp_path, "nolp")
    capsys.readouterr()
    assert cli.main(["report", "nolp.yaml", "--table", "1"]) == 0
    out = capsys.readouterr().out
    note = next(ln for ln in out.splitlines() if "LPIPS n/a: no LPIPS backbone weights:" in ln)
    assert "alexnet-owt-7be5be79.pth" in note and "metrics.lpips_weights" in note
    mark = note.split("]")[0] + "]"  # "[2]": FID is off in this run, its footnote comes first
    for floor in ("biharmonic", "navier_stokes", "telea"):
        row = next(ln for ln in out.splitlines() if ln.startswith(f"| {floor} (measured)"))
        assert f"n/a {mark}" in row


def test_the_no_network_guard_catches_a_fetch():
    """The guard above would fail a test that let torchvision fetch its weights (so the passes above mean none did)."""
    import torchvision

    with pytest.raises(AssertionError, match="download"):
        torchvision.models.alexnet(weights=torchvision.models.AlexNet_Weights.DEFAULT)
