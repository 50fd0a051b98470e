"""Networks: shapes for every role and preset, size checks, Eq. 12 conditioning wired, options."""
import pytest
import torch

from strbench.errors import ConfigError
from strbench.nets import PRESETS, channel_normalize, count_params
from strbench.roles import build_net, net_kwargs
from strbench.roles import BUILTIN

ROLES = tuple(r.name for r in BUILTIN)  # strbench's own networks


def _randomize(net, std=0.05, seed=0):
    """Give every parameter (incl. the zero-initialised ones) a random value, to test the wiring."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return net


def _inputs(role, b=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    ch = 1 if role == "structure" else 3
    x = torch.rand(b, ch, size, size, generator=g)
    mu = torch.rand(b, ch, size, size, generator=g)
    cond = torch.rand(b, 1, size, size, generator=g)
    t = torch.randint(1, 101, (b,), generator=g)
    return x, mu, cond, t


def _call(net, role, x, mu, cond, t):
    if role == "discriminator":
        return net(x, cond, t)
    return net(x, mu, t, cond=cond if role == "texture" else None)


@pytest.mark.parametrize("preset", ["tiny", "small"])
@pytest.mark.parametrize("role", sorted(ROLES))
def test_output_shapes(role, preset):
    net = build_net(role, preset)
    x, mu, cond, t = _inputs(role)
    out = _call(net, role, x, mu, cond, t)
    assert out.shape == ((2,) if role == "discriminator" else x.shape)
    assert torch.isfinite(out).all()


def test_paper_preset_shapes_and_sizes():
    # the paper's U-Net: nf 64, depth 4 (ch_mult 1,2,4,8), 2 res blocks; one forward at 64 px
    kw = net_kwargs("texture", "paper")
    assert (kw["nf"], len(kw["ch_mult"]), kw["num_res_blocks"]) == (64, 4, 2)
    assert PRESETS["paper"]["size"] == 256
    counts = {role: count_params(build_net(role, "paper")) for role in ROLES}
    assert counts["texture"] > counts["irsde"] > counts["structure"] > 10_000_000
    with torch.no_grad():
        net = build_net("texture", "paper")
        x, mu, cond, t = _inputs("texture", b=1, size=64)
        assert net(x, mu, t, cond=cond).shape == x.shape
        D = build_net("discriminator", "paper")
        assert D(x, cond, t).shape == (1,)


def test_param_counts_grow_with_presets():
    for role in ROLES:
        n = [count_params(build_net(role, p)) for p in ("tiny", "small", "paper")]
        assert n[0] < n[1] < n[2], (role, n)
    net = build_net("irsde", "tiny")
    assert count_params(net) == sum(p.numel() for p in net.parameters())


def test_size_not_divisible_is_a_clear_error():
    net = build_net("irsde", "tiny")  # ch_mult of length 3 -> multiple of 4
    x = torch.rand(1, 3, 30, 30)
    with pytest.raises(ConfigError, match="not divisible by 4"):
        net(x, x, 5)
    build_net("irsde", "tiny")(torch.rand(1, 3, 36, 36), torch.rand(1, 3, 36, 36), 5)  # 36 = 9 * 4 is fine


def test_zero_init_output_and_time_dependence():
    net = build_net("irsde", "tiny")
    x, mu, _, t = _inputs("irsde")
    assert torch.count_nonzero(net(x, mu, t)) == 0  # the output conv starts at zero (DDPM)
    _randomize(net)
    a, b = net(x, mu, torch.tensor([3, 3])), net(x, mu, torch.tensor([90, 90]))
    assert (a - b).abs().max() > 1e-4  # the time embedding reaches the output


def test_net_uses_the_difference_and_the_mean():
    net = _randomize(build_net("structure", "tiny"))
    x, mu, _, t = _inputs("structure")
    ref = net(x, mu, t)
    assert (net(x + 0.1, mu + 0.1, t) - ref).abs().max() > 1e-4  # same x - mu, other mu
    assert (net(x + 0.1, mu, t) - ref).abs().max() > 1e-4  # same mu, other x - mu


def test_texture_output_changes_with_structure():
    net = _randomize(build_net("texture", "tiny"))
    x, mu, cond, t = _inputs("texture")
    out1 = net(x, mu, t, cond=cond)
    out2 = net(x, mu, t, cond=1 - cond)
    assert (out1 - out2).abs().max() > 1e-4
    # gradient reaches the structure map
    c = cond.clone().requires_grad_(True)
    net(x, mu, t, cond=c).square().sum().backward()
    assert c.grad.abs().sum() > 0


def test_texture_structure_enters_only_through_the_modulators():
    net = _randomize(build_net("texture", "tiny"))
    with torch.no_grad():
        for m in net.modulators:
            m.conv_gamma.weight.zero_(); m.conv_gamma.bias.zero_()
            m.conv_beta.weight.zero_(); m.conv_beta.bias.zero_()
    x, mu, cond, t = _inputs("texture")
    assert torch.equal(net(x, mu, t, cond=cond), net(x, mu, t, cond=1 - cond))


def test_texture_modulators_after_each_downsample():
    net = build_net("texture", "tiny")
    seen = []
    for k, m in enumerate(net.modulators):
        m.register_forward_hook(lambda mod, inp, out, k=k: seen.append((k, tuple(out.shape))))
    x, mu, cond, t = _inputs("texture", size=32)
    net(x, mu, t, cond=cond)
    # tiny: ch_mult (1, 2, 2), nf 16 -> downsamples to 16 px (16 ch) and 8 px (32 ch)
    assert seen == [(0, (2, 16, 16, 16)), (1, (2, 32, 8, 8))]


def test_texture_is_a_wrapper_around_the_backbone():
    from strbench.nets import StructureGuidedNet, UNet

    net = build_net("texture", "tiny")
    assert isinstance(net, StructureGuidedNet) and type(net.backbone) is UNet
    plain = build_net("irsde", "tiny")
    assert count_params(net) - count_params(net.modulators) == count_params(plain)


def test_cond_rules():
    x, mu, cond, t = _inputs("texture")
    with pytest.raises(ValueError, match="no structure condition"):
        build_net("irsde", "tiny")(x, mu, t, cond=cond)
    with pytest.raises(ValueError, match="needs the structure state"):
        build_net("texture", "tiny")(x, mu, t)


def test_channel_normalize_is_per_pixel_over_channels():
    h = torch.randn(2, 8, 5, 5) * 3 + 2
    n = channel_normalize(h)
    assert torch.allclose(n.mean(1), torch.zeros(2, 5, 5), atol=1e-5)
    assert torch.allclose(n.var(1, unbiased=False), torch.ones(2, 5, 5), atol=1e-3)


@pytest.mark.parametrize("overrides", [{"norm": "group"}, {"attention": True}, {"cond_resize": "nearest"},
                                       {"cond_resize": "area"}, {"num_res_blocks": 2, "nf": 8}])
def test_options(overrides):
    net = build_net("texture", "tiny", **overrides)
    x, mu, cond, t = _inputs("texture")
    assert net(x, mu, t, cond=cond).shape == x.shape
    if "norm" in overrides or "attention" in overrides:
        assert count_params(net) > count_params(build_net("texture", "tiny"))


def test_discriminator_depends_on_both_inputs_and_time():
    D = _randomize(build_net("discriminator", "tiny"), std=0.1)
    y, _, x, t = _inputs("discriminator")
    ref = D(y, x, t)
    assert (D(1 - y, x, t) - ref).abs().max() > 1e-5
    assert (D(y, 1 - x, t) - ref).abs().max() > 1e-5
    assert (D(y, x, t + 7) - ref).abs().max() > 1e-5


@pytest.mark.parametrize("call,match", [
    (lambda: build_net("nope"), "unknown network role"),
    (lambda: build_net("irsde", "huge"), "unknown preset"),
    (lambda: build_net("irsde", "tiny", width=3), "unknown key"),
    (lambda: build_net("irsde", "tiny", cond_hidden=3), "unknown key"),
    (lambda: build_net("irsde", "tiny", norm="batch"), "unknown norm"),
    (lambda: build_net("texture", "tiny", cond_resize="cubic"), "unknown mode"),
])
def test_bad_options_raise(call, match):
    with pytest.raises(ConfigError, match=match):
        call()
