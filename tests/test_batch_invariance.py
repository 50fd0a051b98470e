"""Outputs do not depend on how the work was split: with strbench.steps.PerImageNoise (what the experiment
runner uses), image j's sampling noise comes from (seed, j, step), so a cell gives the same images whether
they are sampled at batch 1, 2 or 4 (or on several ranks, each taking a slice)."""
import pytest
import torch

from strbench.roles import build_net
from strbench.sample import Models, sample
from strbench.sde import make_sde_pair
from strbench.steps import PerImageNoise

N, H = 4, 16
CASES = [("irsde", {}), ("repaint", {"jump_length": 2, "jump_n_sample": 2}),
         ("strdiffusion", {"mode": "paper", "u_max": 2}),
         ("strdiffusion", {"mode": "official", "u_max": 3, "u_min": 2, "jump": 2, "re": 2}),
         ("biharmonic", {})]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    models = Models(**{r: build_net(r).eval() for r in ("irsde", "structure", "texture", "discriminator")})
    g = torch.Generator().manual_seed(1)
    img = torch.rand(N, 3, H, H, generator=g)
    known = torch.ones(N, 1, H, H)
    for i in range(N):
        known[i, :, 2 + i:8 + i, 3:11] = 0
    return models, img, known, make_sde_pair({"T": 6})


def run(setup, method, settings, splits):
    models, img, known, sdes = setup
    out = []
    for a, b in splits:
        r = sample(method, models, img[a:b], known[a:b], sdes=sdes,
                   noise_sampler=PerImageNoise(3, range(a, b), "cpu"), **settings)
        out.append(r.output)
    return torch.cat(out)


@pytest.mark.parametrize("method, settings", CASES, ids=[f"{m}-{s.get('mode', '')}" for m, s in CASES])
def test_same_images_at_batch_1_2_and_4(setup, method, settings):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    whole = run(setup, method, settings, [(0, 4)])
    halves = run(setup, method, settings, [(0, 2), (2, 4)])
    single = run(setup, method, settings, [(i, i + 1) for i in range(N)])
    torch.set_num_threads(n)
    assert torch.equal(halves, whole) and torch.equal(single, whole)  # bit for bit (CPU, one thread)


def test_the_seed_and_the_position_matter(setup):
    models, img, known, sdes = setup
    a = PerImageNoise(3, [0, 1], "cpu")(img[:2])
    b = PerImageNoise(3, [1, 0], "cpu")(img[:2])
    c = PerImageNoise(4, [0, 1], "cpu")(img[:2])
    assert torch.equal(a[0], b[1]) and not torch.equal(a[0], a[1]) and not torch.equal(a, c)


def test_one_noise_source(setup):
    """sample() takes a generator or a noise sampler: exactly one (no dummy generator beside a noise sampler)."""
    models, img, known, sdes = setup
    with pytest.raises(ValueError, match="exactly one noise source.*neither"):
        sample("irsde", models, img, known, sdes=sdes)
    with pytest.raises(ValueError, match="exactly one noise source.*not both"):
        sample("irsde", models, img, known, sdes=sdes, generator=torch.Generator(),
               noise_sampler=PerImageNoise(3, range(4), "cpu"))
