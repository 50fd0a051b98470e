"""The classical floor `biharmonic` (baselines/biharmonic.py): registered, network-free, exact on smooth images,
and part of every experiment (so Tables 1-3 show it)."""
import torch

from strbench import config as C
from strbench import experiment, methods
from strbench.sample import Models, sample
from strbench.sde import make_sde_pair


def test_registered_as_a_floor_needing_no_network():
    m = methods.get("biharmonic")
    assert m.floor and m.roles(m.make()) == () and "biharmonic" in methods.floors()


def test_fills_a_linear_ramp_exactly_and_keeps_known_pixels():
    """A biharmonic function through a linear image is the image itself: holes are filled to ~1e-6."""
    H = 24
    ramp = torch.linspace(0, 1, H)
    img = torch.stack([ramp.view(1, -1).expand(H, H), ramp.view(-1, 1).expand(H, H),
                       0.5 * (ramp.view(1, -1) + ramp.view(-1, 1))]).unsqueeze(0).repeat(2, 1, 1, 1)
    known = torch.ones(2, 1, H, H)
    known[0, :, 6:14, 5:17] = 0
    known[1, :, 10:20, 2:9] = 0
    r = sample("biharmonic", Models(), img, known, sdes=make_sde_pair({"T": 3}), generator=torch.Generator())
    assert r.nfe == 0
    assert torch.equal(r.output[known.expand_as(img) > 0.5], img[known.expand_as(img) > 0.5])
    err = (r.output - img).abs()[known.expand_as(img) < 0.5]
    assert float(err.max()) < 1e-4
    zero_filled = (img * known - img).abs()[known.expand_as(img) < 0.5]
    assert float(zero_filled.mean()) > 0.2  # the check above could fail: holes start far from the image


def test_every_experiment_gets_the_floor_unless_floors_is_off():
    exp = C.load_experiment("experiments/quickstart.yaml")
    cells = experiment.expand(exp)
    floor = [c for c in cells if c.axes["case"] == "biharmonic"]
    assert len(floor) == len(exp.masks.bins) and all(c.models == () for c in floor)
    off = C.load_experiment("experiments/quickstart.yaml", overrides=["floors=false"])
    assert not any(c.axes["case"] == "biharmonic" for c in experiment.expand(off))


def test_the_ground_truth_in_the_holes_is_never_used():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 16, 16, generator=g)
    known = torch.ones(1, 1, 16, 16)
    known[..., 4:11, 5:12] = 0
    other = torch.where(known > 0.5, img, torch.rand(1, 3, 16, 16, generator=g))  # same known pixels
    run = lambda x: sample("biharmonic", Models(), x, known, sdes=make_sde_pair({"T": 3}), generator=torch.Generator())
    assert torch.equal(run(img).output[known.expand_as(img) < 0.5], run(other).output[known.expand_as(img) < 0.5])
