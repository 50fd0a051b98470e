"""arch=authors networks: the released state_dict layout key for key, the authors' outputs on their tiny fixtures,
eval-mode spectral norm, strict loading of released files, and one training step through strbench's objectives."""
import collections
import json
import math
from pathlib import Path

import pytest
import torch

from strbench.errors import CheckpointError, ConfigError
from strbench.nets import AUTHORS_PRESETS, count_params
from strbench.roles import build_net, net_kwargs
from strbench.nets.authors import fir_downsample, minibatch_stddev
from strbench.nets.pretrained import load_pretrained
from strbench.train import TrainConfig, Trainer

from helpers import deterministic_fill

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: single-threaded tiny nets

GOLDEN = Path(__file__).resolve().parent / "golden" / "authors_nets"  # from shared/reference/authors-nets (extract.py)

# role -> the reference file stem
NETS = {"texture": "texture", "structure": "structure", "irsde": "irsde_inpainting", "discriminator": "discriminator"}


def fixture_inputs(role: str, index: int, case: dict) -> dict:
    """The fixtures' inputs (their config["inputs_recipe"]): case `index` uses seed 1 + index."""
    g = torch.Generator("cpu").manual_seed(1 + index)
    b, c, h, w = case["shape"]
    t = case["t"] if case["t_is_int"] else torch.tensor(case["t"], dtype=torch.int64)
    if role == "discriminator":
        return {"t": t, "x_t": torch.randn(b, 3, h, w, generator=g), "S": torch.rand(b, 1, h, w, generator=g)}
    inp = {"xt": torch.randn(b, c, h, w, generator=g), "mu": torch.randn(b, c, h, w, generator=g), "t": t}
    if role == "texture":
        inp["S"] = torch.rand(b, 1, h, w, generator=g)
    return inp


def _tsv(stem: str) -> list[tuple[str, tuple[int, ...], str]]:
    """(key, shape, param|buffer) rows of keys_<stem>.tsv, in file order."""
    lines = [ln.split("\t") for ln in (GOLDEN / f"keys_{stem}.tsv").read_text().splitlines()
             if ln and not ln.startswith("#")]
    assert lines[0] == ["key", "shape", "kind"]
    return [(k, tuple(int(d) for d in shape.split("x")), kind) for k, shape, kind in lines[1:]]


def _counts(stem: str) -> dict:
    return json.loads((GOLDEN / "param_counts.json").read_text())[stem]


def _call(role, net, inputs):
    """The fixture's authors-order inputs through strbench's signatures."""
    if role == "discriminator":
        return net(inputs["x_t"], inputs["S"], inputs["t"])  # authors: D(t, x_t, S)
    if role == "texture":
        return net(inputs["xt"], inputs["mu"], inputs["t"], cond=inputs["S"])  # authors: net(xt, mu, t, S)
    return net(inputs["xt"], inputs["mu"], inputs["t"])


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN / "fixture_outputs.pt", weights_only=True)


@pytest.fixture(scope="module")
def weights():
    """role -> the fixture's state_dict (regenerated from its recipe)."""
    return {role: deterministic_fill(build_net(role, "tiny", arch="authors").state_dict()) for role in NETS}


@pytest.fixture(scope="module")
def tiny_nets(weights):
    """Tiny authors nets with the fixtures' weights, strictly loaded, in eval mode."""
    nets = {}
    for role, sd in weights.items():
        net = build_net(role, "tiny", arch="authors")
        net.load_state_dict(sd, strict=True)
        nets[role] = net.eval()
    return nets


def _texture_inputs(golden):
    return fixture_inputs("texture", 0, golden["texture"]["cases"][0])


@pytest.mark.parametrize("role", list(NETS))
def test_released_keys_shapes_and_param_counts_without_weights(role):
    with torch.device("meta"):  # nothing is allocated: the 163 M-parameter texture net costs nothing
        net = build_net(role, "paper", arch="authors")
    assert next(net.parameters()).is_meta
    params, buffers = dict(net.named_parameters()), dict(net.named_buffers())
    got = [(k, tuple(v.shape), "param" if k in params else "buffer" if k in buffers else "?")
           for k, v in net.state_dict().items()]
    assert got == _tsv(NETS[role])  # same keys, same order, same shapes, same parameter/buffer split
    counts = _counts(NETS[role])
    assert count_params(net) == counts["full"]["n_param"]
    assert sum(b.numel() for b in net.buffers()) == counts["full"]["n_buffer_elems"]


@pytest.mark.parametrize("role", list(NETS))
def test_tiny_fixture_outputs_reproduced(role, golden, weights, tiny_nets):
    from strbench.fid_weights import state_dict_sha256

    g, net = golden[NETS[role]], tiny_nets[role]
    assert state_dict_sha256(weights[role]) == g["fill_sha256"]  # the regenerated weights are the fixture's
    assert count_params(net) == _counts(NETS[role])["tiny"]["n_param"]
    assert len(g["cases"]) >= 2
    for i, case in enumerate(g["cases"]):  # main input and every extra (odd sizes, batch 1 / 2 / 8)
        with torch.no_grad():
            out = _call(role, net, fixture_inputs(role, i, case))
        ref = case["output"]
        assert out.shape == ref.shape and out.dtype == torch.float32
        rel = ((out - ref).abs().max() / ref.abs().max()).item()
        assert rel <= 1e-5, (role, tuple(ref.shape), rel)


def test_texture_eval_uses_stored_spectral_vectors(golden, tiny_nets):
    net, inp = tiny_nets["texture"], _texture_inputs(golden)
    u0 = net.downs[0][4].conv_0.weight_u.clone()
    with torch.no_grad():
        a, b = _call("texture", net, inp), _call("texture", net, inp)
    assert torch.equal(a, b)  # eval: no power iteration, bitwise identical
    assert torch.equal(net.downs[0][4].conv_0.weight_u, u0)
    # the effective weight is weight_orig / (u . W v) with the stored u, v (not an SVD)
    conv = net.downs[0][4].conv_0
    sigma = conv.weight_u @ (conv.weight_orig.flatten(1) @ conv.weight_v)
    assert torch.equal(conv.weight, conv.weight_orig / sigma)


def test_texture_train_forward_runs_power_iteration(golden, weights):
    net = build_net("texture", "tiny", arch="authors")
    net.load_state_dict(weights["texture"])
    u0 = net.downs[1][4].conv_1.weight_u.clone()
    net.train()
    with torch.no_grad():
        _call("texture", net, _texture_inputs(golden))
    assert not torch.equal(net.downs[1][4].conv_1.weight_u, u0)


def test_fir_downsample_and_minibatch_stddev():
    x = torch.zeros(1, 2, 6, 5)
    x[0, 1, 2, 2] = 64.0  # an impulse: y[i, j] = 64 K[3 - 2i, 3 - 2j] (pad 1, stride 2), K = outer(k, k) / 64
    y = fir_downsample(x)
    assert y.shape == (1, 2, 3, 2) and y[0, 0].abs().sum() == 0  # floor(H / 2), depthwise
    assert torch.equal(y[0, 1], torch.tensor([[1.0, 3.0], [3.0, 9.0], [0.0, 0.0]]))
    assert torch.equal(fir_downsample(torch.ones(1, 1, 8, 8))[..., 1:-1, 1:-1], torch.ones(1, 1, 2, 2))  # sums to 1
    h = torch.randn(8, 3, 2, 2)
    out = minibatch_stddev(h)
    assert out.shape == (8, 4, 2, 2)
    g0 = h[[0, 2, 4, 6]]  # sample 0's group: b = g * (8 / 4) + 0
    want = torch.sqrt(g0.var(0, unbiased=False) + 1e-8).mean()
    assert torch.allclose(out[0, 3], want.expand(2, 2)) and torch.allclose(out[6, 3], want.expand(2, 2))
    assert torch.allclose(minibatch_stddev(torch.randn(1, 3, 2, 2))[0, 3], torch.full((2, 2), 1e-4))
    with pytest.raises(ValueError, match="multiple of 4"):
        minibatch_stddev(torch.randn(6, 3, 2, 2))


def test_factory_presets_and_errors():
    assert net_kwargs("irsde", "paper", arch="authors") == {"arch": "authors", "nf": 32, "depth": 4}
    assert net_kwargs("texture", "tiny", arch="authors", depth=3) == {"arch": "authors", "nf": 8, "depth": 3}
    assert net_kwargs("discriminator", "paper", arch="authors") == {"arch": "authors", "ngf": 64, "t_emb_dim": 256}
    kw = net_kwargs("structure", "tiny", arch="authors")
    assert type(build_net("structure", "tiny", **kw)).__name__ == "AuthorsUNet"  # resolved kwargs round-trip
    assert set(AUTHORS_PRESETS) == {"tiny", "small", "paper"}
    assert net_kwargs("irsde", "tiny") == net_kwargs("irsde", "tiny", arch="strbench")  # default arch unchanged
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['ch_mult'\]; allowed: \['nf', 'depth'\]"):
        build_net("texture", "tiny", arch="authors", ch_mult=(1, 2))
    with pytest.raises(ConfigError, match=r"allowed: \['ngf', 't_emb_dim'\]"):
        net_kwargs("discriminator", "tiny", arch="authors", nf=8)
    with pytest.raises(ConfigError, match="unknown arch"):
        build_net("texture", "tiny", arch="theirs")
    with pytest.raises(ConfigError, match="even integer"):
        build_net("structure", "tiny", arch="authors", nf=7)
    with pytest.raises(ConfigError, match="unknown preset"):
        build_net("structure", "huge", arch="authors")


def test_call_forms_and_input_checks(tiny_nets):
    net, D = tiny_nets["structure"], tiny_nets["discriminator"]
    x, mu = torch.randn(2, 1, 20, 18), torch.randn(2, 1, 20, 18)
    with torch.no_grad():
        a = net(x, mu, 7)  # an int broadcasts over the batch
        b = net(x, mu, torch.tensor([7, 7]))
        c = net(x, mu, torch.tensor(7))
    assert a.shape == x.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-5) and torch.equal(a, c)
    with pytest.raises(ValueError, match="no structure condition"):
        net(x, mu, 7, cond=x)
    with pytest.raises(ValueError, match="needs the structure state"):
        tiny_nets["texture"](torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8), 3)
    with torch.no_grad():
        s = D(torch.randn(3, 3, 16, 16), torch.rand(3, 1, 16, 16), torch.tensor([1, 2, 3]))
    assert s.shape == (3,)
    with pytest.raises(ValueError, match="D expects"):
        D(torch.randn(2, 3, 16, 16), torch.rand(2, 3, 16, 16), 1)


# --- load_pretrained ---------------------------------------------------------------------------------------


class _NotAllowed:  # a pickled object weights_only refuses
    pass


def _one_line_error(net, path, role, *must):
    with pytest.raises(CheckpointError) as e:
        load_pretrained(net, path, role=role)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and role in msg, msg
    for m in must:
        assert m in msg, msg
    return msg


def test_load_pretrained_strict(tmp_path, weights):
    sd = weights["structure"]
    net = build_net("structure", "tiny", arch="authors")
    raw = tmp_path / "structure.pth"
    torch.save(sd, raw)
    digest = load_pretrained(net, raw, role="structure")
    assert digest == __import__("hashlib").sha256(raw.read_bytes()).hexdigest()
    assert all(torch.equal(v, sd[k]) for k, v in net.state_dict().items())

    dp = tmp_path / "dataparallel.pth"  # one leading module. is stripped, not two
    torch.save(collections.OrderedDict(("module." + k, v) for k, v in sd.items()), dp)
    load_pretrained(build_net("structure", "tiny", arch="authors"), dp, role="structure")
    twice = tmp_path / "twice.pth"
    torch.save({"module.module." + k: v for k, v in sd.items()}, twice)
    _one_line_error(net, twice, "structure", "missing 87 [init_conv.weight", "unexpected 87 [module.init_conv")

    # wrapped under "state_dict" next to other entries (as the reference fixtures are)
    wrapped = tmp_path / "fixture_like.pt"
    torch.save({"config": {"nf": 8}, "state_dict": weights["texture"], "output": torch.zeros(1)}, wrapped)
    tex = build_net("texture", "tiny", arch="authors")
    load_pretrained(tex, wrapped, role="texture")
    assert torch.equal(tex.downs[1][4].conv_0.weight_v, weights["texture"]["downs.1.4.conv_0.weight_v"])

    missing = tmp_path / "missing.pth"
    torch.save({k: v for k, v in sd.items() if k != "mid_attn.fn.norm.g"}, missing)
    _one_line_error(net, missing, "structure", "missing 1 [mid_attn.fn.norm.g]")
    assert load_pretrained(net, missing, role="structure", strict=False)  # the authors' non-strict behaviour

    unexpected = tmp_path / "unexpected.pth"
    torch.save({**sd, "downs.0.4.conv_0.bias": torch.zeros(16)}, unexpected)
    _one_line_error(net, unexpected, "structure", "unexpected 1 [downs.0.4.conv_0.bias]")

    # IR-SDE weights into a structure net: the same keys, but 3 vs 1 image channels -> 3 size mismatches
    wrong = tmp_path / "irsde_into_structure.pth"
    torch.save(weights["irsde"], wrong)
    msg = _one_line_error(net, wrong, "structure", "size mismatch 3 [init_conv.weight file 8x6x7x7 vs net 8x2x7x7")
    with pytest.raises(CheckpointError, match="size mismatch"):  # non-strict still refuses shape mismatches
        load_pretrained(net, wrong, role="structure", strict=False)
    assert "missing" not in msg

    text = tmp_path / "notes.txt"
    text.write_text("these are not weights\n")
    _one_line_error(net, text, "structure", "weights_only=True")
    pickled = tmp_path / "object.pth"
    torch.save({"net": _NotAllowed()}, pickled)
    _one_line_error(net, pickled, "structure", "weights_only=True")
    _one_line_error(net, tmp_path / "absent.pth", "structure", "no such file")
    foreign = tmp_path / "foreign.pth"
    torch.save({"epoch": 3, "optimizer": {}}, foreign)
    _one_line_error(net, foreign, "structure", "not a state_dict")


def test_own_state_dict_round_trips_with_spectral_metadata(tmp_path, tiny_nets):
    p = tmp_path / "texture.pth"
    torch.save(tiny_nets["texture"].state_dict(), p)  # carries the spectral_norm version metadata
    net = build_net("texture", "tiny", arch="authors").eval()
    load_pretrained(net, p, role="texture")
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x, x, 5, cond=x[:, :1]), tiny_nets["texture"](x, x, 5, cond=x[:, :1]))


# --- training ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(NETS))
def test_one_training_step_is_finite(role):
    g = torch.Generator().manual_seed(0)
    imgs = torch.nn.functional.interpolate(torch.rand(4, 3, 8, 8, generator=g), size=16, mode="bilinear",
                                           align_corners=False)
    masks = torch.ones(2, 1, 16, 16)
    masks[0, :, 4:10, 2:12] = 0
    masks[1, :, 8:14, 6:16] = 0
    cfg = TrainConfig(batch=4, steps=1, lr=1e-3, ema=0.9, net={"arch": "authors"}, sde={"T": 20})
    tr = Trainer(role, cfg, imgs, masks, device="cpu")
    before = [p.detach().clone() for p in tr.net.parameters()]
    loss = tr.step()
    assert math.isfinite(float(loss))
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.net.parameters()))
    assert all(torch.isfinite(p).all() for p in tr.net.parameters())
    assert cfg.identity(role)["config"]["net"]["arch"] == "authors"  # the arch is part of the model hash
