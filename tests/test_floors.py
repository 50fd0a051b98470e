"""The OpenCV floors `telea` and `navier_stokes` (baselines/telea.py, baselines/navier_stokes.py): registered,
network-free, known pixels kept exactly, holes filled from their surroundings, deterministic, batched, and part of
every experiment beside biharmonic (so Tables 1-3 show them)."""
import numpy as np
import pytest
import torch

from strbench import config as C
from strbench import experiment, methods
from strbench.sample import Models, sample
from strbench.sde import make_sde_pair

FLOORS = ("telea", "navier_stokes")


def _batch(n=3, size=24, seed=0):
    """Smooth images (upsampled noise) and a different rectangular hole in each."""
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=(size, size), mode="bilinear",
                                          align_corners=False)
    known = torch.ones(n, 1, size, size)
    for i in range(n):
        known[i, :, 4 + i: 12 + i, 3 + 2 * i: 13 + i] = 0
    return img, known


def _run(name, img, known, **settings):
    return sample(name, Models(), img, known, sdes=make_sde_pair({"T": 3}), generator=torch.Generator(), **settings)


@pytest.mark.parametrize("name", FLOORS)
def test_registered_as_a_floor_needing_no_network(name):
    m = methods.get(name)
    assert m.floor and m.roles(m.make()) == () and name in methods.floors()
    assert m.make().radius == 3


@pytest.mark.parametrize("name", FLOORS)
def test_known_pixels_exact_holes_filled_deterministic_batched(name):
    img, known = _batch()
    r = _run(name, img, known)
    assert r.nfe == 0 and r.output.shape == img.shape
    k = known.expand_as(img) > 0.5
    assert torch.equal(r.output[k], img[k])  # the composite keeps the known pixels bit for bit
    err = (r.output - img).abs()[~k].mean()
    zero = (img * known - img).abs()[~k].mean()
    assert float(err) < 0.25 * float(zero)  # holes filled from a smooth surrounding, far closer than zeros
    again = _run(name, img, known)
    assert torch.equal(r.output, again.output)  # no randomness
    for i in range(img.shape[0]):  # each image of the batch alone gives the same result: images are independent
        alone = _run(name, img[i:i + 1], known[i:i + 1])
        assert torch.equal(alone.output[0], r.output[i])


def test_the_two_methods_differ_and_radius_matters():
    img, known = _batch(n=1, size=32, seed=3)
    known[..., 6:26, 8:24] = 0
    t, ns = _run("telea", img, known).output, _run("navier_stokes", img, known).output
    assert not torch.equal(t, ns)
    assert not torch.equal(t, _run("telea", img, known, radius=9).output)


@pytest.mark.parametrize("name", FLOORS)
def test_the_ground_truth_in_the_holes_is_never_used(name):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 16, 16, generator=g)
    known = torch.ones(1, 1, 16, 16)
    known[..., 4:11, 5:12] = 0
    other = torch.where(known > 0.5, img, torch.rand(1, 3, 16, 16, generator=g))
    hole = known.expand_as(img) < 0.5
    assert torch.equal(_run(name, img, known).output[hole], _run(name, other, known).output[hole])


def test_no_hole_and_all_hole_images():
    from baselines.telea import cv2_inpaint

    x = (np.arange(16 * 16 * 3) % 255).astype(np.uint8).reshape(16, 16, 3)
    assert np.array_equal(cv2_inpaint(x, np.zeros((16, 16), bool), 3, "INPAINT_TELEA"), x)
    assert not cv2_inpaint(x, np.ones((16, 16), bool), 3, "INPAINT_NS").any()


def test_every_experiment_gets_the_floors_beside_biharmonic_unless_floors_is_off():
    exp = C.load_experiment("experiments/quickstart.yaml")
    cells = experiment.expand(exp)
    for name in ("biharmonic", *FLOORS):
        floor = [c for c in cells if c.axes["case"] == name]
        assert len(floor) == len(exp.masks.bins) and all(c.models == () for c in floor)
    off = C.load_experiment("experiments/quickstart.yaml", overrides=["floors=false"])
    assert not any(c.axes["case"] in FLOORS for c in experiment.expand(off))
