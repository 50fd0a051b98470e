"""Training: objectives learn, closed forms of the losses, exact resume, config-hash refusal, NaN handling."""
import json
import math

import pytest
import torch

from strbench import objectives as O
from strbench import sde as sdelib
from strbench import train as T
from strbench.checkpoint import load_checkpoint
from strbench.errors import CheckpointError, ConfigError, TrainingDiverged
from strbench.hashing import config_hash
from strbench.train import TrainConfig, Trainer, train_model, load_model

from helpers import poison_losses, train_data

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: single-threaded tiny nets

SIZE = 32


def _eval_loss(tr: Trainer, n=3, batch=16):
    """The role's objective on fixed batches (own generators): comparable before/after training."""
    tot = 0.0
    tr.batch_size = batch
    with torch.no_grad():
        for s in range(n):
            g = torch.Generator().manual_seed(1000 + s)
            tot += float(tr.objective(tr, tr.inference_model(), g))
    tr.batch_size = tr.cfg.batch
    return tot / n


@pytest.mark.parametrize("role,kw,steps,drop", [
    ("irsde", {}, 100, 0.25),
    ("structure", {}, 100, 0.25),
    ("texture", {"target": "official_code", "weighting": "official"}, 100, 0.25),
    # Eq. 11's target holds the structure's forward noise coef * sigmabar_x * n_x; the net sees it only
    # through x*_{t-1} at the downsampled scales of Eq. 12, so much of the loss is irreducible: slower
    ("texture", {"target": "paper_eq11", "variant": "gray2gray"}, 120, 0.05),
])
def test_objective_drives_loss_down(role, kw, steps, drop):
    imgs, masks = train_data()
    cfg = TrainConfig(**{"batch": 4, "lr": 2e-3, "lr_schedule": "constant", "steps": steps, **kw})
    tr = Trainer(role, cfg, imgs, masks, device="cpu")
    before = _eval_loss(tr)
    for _ in range(steps):
        tr.step()
    after = _eval_loss(tr)
    assert after < (1 - drop) * before, (before, after)


def test_discriminator_learns_to_separate_real_from_fake():
    """Eq. 16 goes down and D ranks real (y*_{t-1}, x_{t-1}) above fake (y_t, x_{t-1}) better than chance."""
    imgs, masks = train_data()
    cfg = TrainConfig(batch=8, lr=2e-3, lr_schedule="constant", steps=150, ema=0.95)
    tr = Trainer("discriminator", cfg, imgs, masks, device="cpu")
    before = _eval_loss(tr)
    for _ in range(cfg.steps):
        tr.step()
    assert _eval_loss(tr) < 0.75 * before
    out = {}
    tr.batch_size = 128
    with torch.no_grad():
        tr.objective(tr, tr.inference_model(), torch.Generator().manual_seed(7), out)
    acc = float((out["s_real"] > out["s_fake"]).float().mean())  # chance: 0.5
    assert acc > 0.75, acc


def test_discriminator_loss_closed_form():
    """A constant-logit D: Eq. 14 gives 2 log 2 at logit 0, and Eq. 15 gives exactly the margin."""
    D = lambda y, x, t: torch.zeros(y.shape[0])
    y = torch.rand(3, 3, 8, 8)
    x = torch.rand(3, 1, 8, 8)
    loss = O.discriminator_loss(D, y, y, y, x, torch.ones(3, dtype=torch.long), lambda_tri=0.5, margin=0.7)
    assert math.isclose(float(loss), 2 * math.log(2) + 0.5 * 0.7, rel_tol=1e-6)
    # a D that scores real +a, fake -a, anchor = real: BCE softplus(-a)*2, triplet max(0 - 2a + m, 0)
    a = 2.0
    D2 = lambda yy, xx, t: torch.full((yy.shape[0],), a if yy is y else -a)
    loss2 = O.discriminator_loss(D2, y, y.clone(), y, x, 1, lambda_tri=1.0, margin=1.0)
    assert math.isclose(float(loss2), 2 * math.log1p(math.exp(-a)) + max(1.0 - 2 * a, 0), rel_tol=1e-6)


def test_texture_loss_weighting_and_targets():
    torch.manual_seed(0)
    pair = sdelib.make_sde_pair({"T": 20})
    y0 = torch.rand(2, 3, 8, 8)
    known = (torch.rand(2, 1, 8, 8) > 0.5).float()
    x0 = y0.mean(1, keepdim=True)
    mu_y, mu_x = y0 * known, x0 * known
    t = torch.tensor([3, 15])
    y_t = sdelib.q_sample(pair.texture, y0, mu_y, t, torch.randn_like(y0))
    x_t = sdelib.q_sample(pair.structure, x0, mu_x, t, torch.randn_like(x0))
    s = O.TextureStates(y0=y0, mu_y=mu_y, known=known, t=t, y_t=y_t, x0=x0, mu_x=mu_x, x_t=x_t,
                        x_prev=sdelib.optimal_reverse_state(pair.structure, x_t, x0, mu_x, t))
    net = lambda a, b, tt, cond: torch.zeros_like(a)
    pred = sdelib.reverse_mean(pair.texture, y_t, mu_y, torch.zeros_like(y0), t)
    for target in ("paper_eq11", "official_code"):
        tgt = sdelib.texture_target(target, pair.texture, pair.structure, y0=y0, mu_y=mu_y, x_t=x_t, x0=x0,
                                    mu_x=mu_x, t=t, y_t=y_t)
        err = (pred - tgt).abs()
        uni = O.texture_loss(net, pair, s, target=target, weighting="uniform")
        off = O.texture_loss(net, pair, s, target=target, weighting="official")
        assert torch.allclose(uni, err.mean())
        assert torch.allclose(off, (err * (known + 10 * (1 - known))).mean())
    with pytest.raises(ConfigError, match="weighting"):
        O.texture_loss(net, pair, s, weighting="l2")


def test_irsde_loss_is_eq5_l1():
    pair = sdelib.make_sde_pair({"T": 20})
    y0 = torch.rand(2, 3, 8, 8)
    mu = y0 * (torch.rand(2, 1, 8, 8) > 0.5)
    t, noise = torch.tensor([1, 20]), torch.randn(2, 3, 8, 8)
    eps = torch.randn(2, 3, 8, 8) * 0.1
    net = lambda a, b, tt: eps
    y_t = sdelib.q_sample(pair.texture, y0, mu, t, noise)
    want = (sdelib.reverse_mean(pair.texture, y_t, mu, eps, t)
            - sdelib.optimal_reverse_state(pair.texture, y_t, y0, mu, t)).abs().mean()
    assert torch.allclose(O.irsde_loss(net, pair.texture, y0, mu, t, noise), want)


def test_lr_schedules():
    c = TrainConfig(steps=100, lr=1.0, lr_schedule="cosine", warmup=10, lr_min=0.1)
    assert math.isclose(T.lr_at(c, 0), 0.1)  # warmup 1/10
    assert math.isclose(T.lr_at(c, 9), 1.0)
    assert math.isclose(T.lr_at(c, 10), 1.0)
    assert math.isclose(T.lr_at(c, 55), 0.55, rel_tol=1e-9)  # half way: (1 + 0.1) / 2
    assert T.lr_at(c, 99) < 0.11
    m = TrainConfig(steps=100, lr=1.0, lr_schedule="multistep", lr_milestones=[30, 60], lr_gamma=0.5)
    assert [T.lr_at(m, s) for s in (0, 29, 30, 59, 60, 99)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_config_strict_and_hash():
    with pytest.raises(ConfigError, match="unknown key"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ConfigError, match="train.steps: expected int"):
        TrainConfig.from_dict({"steps": "3"})
    with pytest.raises(ConfigError, match="train.target"):
        TrainConfig(target="eq99")
    with pytest.raises(ConfigError, match="train.variant"):
        TrainConfig(variant="rgb2rgb")
    with pytest.raises(ConfigError, match="train.sde"):
        TrainConfig(sde={"kind": "zigzag"})
    with pytest.raises(ConfigError, match=r"train.lr_min: must be in \[0, lr\]"):
        TrainConfig(lr=1e-4, lr_min=1e-3)
    with pytest.raises(ConfigError, match="unknown training role"):
        TrainConfig().validate("painter")
    c = TrainConfig.from_dict({"steps": 5, "lr": 1, "sde": {"T": 50}})
    assert c.lr == 1.0 and isinstance(c.lr, float)
    assert TrainConfig.from_dict(c.to_dict()) == c  # round trip
    # bookkeeping does not change the hash; role-relevant fields do, irrelevant ones do not
    assert c.hash("irsde") == c.replace(log_every=1, checkpoint_every=2).hash("irsde")
    assert c.hash("irsde") != c.replace(lr=2.0).hash("irsde")
    assert c.hash("irsde") == c.replace(target="official_code").hash("irsde")
    assert c.hash("texture") != c.replace(target="official_code").hash("texture")
    assert c.hash("irsde") != c.hash("structure")
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": (1, 2), "a": 1})


def _run(tmp_path, cfg, role="texture", stop_at=None, replayed=None, **kw):
    """The (step, loss) pairs trained by this call; `replayed` (a list) receives those replayed on resuming."""
    imgs, masks = train_data()
    losses = []
    nets = []

    class Stop(Exception):
        pass

    def cb(ev):
        if ev["event"] == "loss" and ev.get("replayed"):
            replayed.append((ev["step"], ev["loss"]))
        elif ev["event"] == "loss":
            losses.append((ev["step"], ev["loss"]))
            if stop_at is not None and ev["step"] == stop_at:
                raise Stop

    try:
        nets.append(train_model(role, cfg, imgs, masks, ckpt_path=tmp_path / "m.pt", callback=cb, device="cpu",
                                **kw))
    except Stop:
        pass
    for net in nets:  # the returned (EMA) model is a plain inference module
        assert all(p.is_leaf and p.grad_fn is None for p in net.parameters())
    return losses


def test_resume_reproduces_the_uninterrupted_loss_sequence(tmp_path):
    cfg = TrainConfig(steps=12, batch=2, lr=1e-3, warmup=3, ema=0.9, checkpoint_every=5, log_every=1)
    full = _run(tmp_path / "a", cfg)
    assert [s for s, _ in full] == list(range(1, 13))
    part = _run(tmp_path / "b", cfg, stop_at=8)  # interrupted after the step-5 checkpoint
    assert part == full[:8]
    assert load_checkpoint(tmp_path / "b" / "m.pt")["step"] == 5
    again: list = []
    resumed = _run(tmp_path / "b", cfg, replayed=again)
    assert resumed == full[5:]  # steps 6..12, bit for bit
    assert again == full[:5]  # the losses logged up to the checkpoint travel in it and are replayed first
    a = load_model(tmp_path / "a" / "m.pt", cfg.hash("texture"))
    b = load_model(tmp_path / "b" / "m.pt", cfg.hash("texture"))
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    again.clear()
    assert _run(tmp_path / "b", cfg, replayed=again) == []  # finished: nothing left to train
    assert again == full  # ... and its whole loss history is replayed
    assert not [p for p in (tmp_path / "b").iterdir() if p.name not in ("m.pt", "m.prev.pt")]  # no temp files left


def test_resume_between_log_points_keeps_the_mean_of_the_whole_window(tmp_path):
    """log_every 3, checkpoint_every 2: stopped at the step-3 log, the run resumes from the step-2 checkpoint,
    whose losses of steps 1-2 travel in it, so the step-3 log is again the mean over steps 1..3."""
    cfg = TrainConfig(steps=9, batch=2, lr=1e-3, checkpoint_every=2, log_every=3)
    full = _run(tmp_path / "a", cfg, role="irsde")
    assert [s for s, _ in full] == [3, 6, 9]
    assert _run(tmp_path / "b", cfg, role="irsde", stop_at=3) == full[:1]
    assert load_checkpoint(tmp_path / "b" / "m.pt")["step"] == 2
    again: list = []
    assert _run(tmp_path / "b", cfg, role="irsde", replayed=again) == full and again == []


def test_checkpoint_from_another_config_is_refused(tmp_path):
    cfg = TrainConfig(steps=3, batch=2, checkpoint_every=2, log_every=1)
    _run(tmp_path, cfg, role="irsde")
    other = cfg.replace(lr=5e-4)
    with pytest.raises(CheckpointError) as e:
        _run(tmp_path, other, role="irsde")
    msg = str(e.value)
    assert cfg.hash("irsde") in msg and other.hash("irsde") in msg and "m.pt" in msg
    with pytest.raises(CheckpointError, match="config hash"):
        load_model(tmp_path / "m.pt", other.hash("irsde"))
    # the checkpoint is plain tensors/primitives: a weights_only load succeeds
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert json.loads(state["config"])["lr"] == cfg.lr and state["role"] == "irsde"


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    poison_losses(monkeypatch, "irsde", 7)
    cfg = TrainConfig(steps=20, batch=2, checkpoint_every=5, log_every=4)
    with pytest.raises(TrainingDiverged, match=r"at step 7\b.*step 5"):
        _run(tmp_path, cfg, role="irsde")
    state = load_checkpoint(tmp_path / "m.pt", cfg.hash("irsde"))
    assert state["step"] == 5
    net = load_model(tmp_path / "m.pt", cfg.hash("irsde"))
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_guidance_net_needs_a_structure_net_and_uses_it():
    imgs, masks = train_data()
    cfg = TrainConfig(batch=2, guidance="net")
    with pytest.raises(ConfigError, match="structure net"):
        Trainer("texture", cfg, imgs, masks, device="cpu")
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x_t, mu, t, cond=None):
            seen.append(x_t.shape)
            return torch.zeros_like(x_t)

    tr = Trainer("texture", cfg, imgs, masks, device="cpu", structure_net=Spy())
    assert torch.isfinite(tr.step())
    assert seen == [(2, 1, SIZE, SIZE)]


def test_callbacks_and_images(tmp_path):
    imgs, masks = train_data()
    events = []
    cfg = TrainConfig(steps=4, batch=2, log_every=2, images_every=4, checkpoint_every=4)
    net = train_model("structure", cfg, imgs, masks, ckpt_path=tmp_path / "s.pt", callback=events.append,
                      device="cpu")
    assert not net.training
    losses = [e for e in events if e["event"] == "loss"]
    assert [e["step"] for e in losses] == [2, 4] and all(e["role"] == "structure" for e in losses)
    assert all(math.isfinite(e["loss"]) and e["lr"] > 0 for e in losses)
    (img,) = [e for e in events if e["event"] == "images"]
    assert img["images"]["pred"].shape == (2, 1, SIZE, SIZE)


def test_bad_data_is_refused():
    from strbench.errors import DataError

    imgs, masks = train_data()
    with pytest.raises(DataError, match="mask size"):
        Trainer("irsde", TrainConfig(), imgs, masks[:, :, :16, :16], device="cpu")
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        Trainer("irsde", TrainConfig(), imgs * 2, masks, device="cpu")


def test_bench_train_runs_and_reports():
    from strbench.bench import BENCHES, bench_train
    from strbench.cli.bench import bench_command, format_train

    res = bench_train(device="cpu", size=16, batch=2, repeats=1, block=1, roles=("irsde", "discriminator"))
    assert [r["role"] for r in res["overhead"]] == ["irsde", "discriminator"]
    assert all(r["full_ms"] > 0 and r["bare_ms"] > 0 and r["ratio"] > 0 for r in res["overhead"])
    assert [p["preset"] for p in res["params"]] == ["tiny", "small", "paper"]
    assert "ratio" in format_train(res).splitlines()[1]
    assert "train" in BENCHES
    with pytest.raises(ConfigError, match="no benchmark named"):
        bench_command("nope")
