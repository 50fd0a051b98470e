"""Streaming training data: every sample a pure function of (seed, step, slot), whatever the loader's
start, worker count or rank split; DDP training under torchrun matches one process at the same global batch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from strbench import stream
from strbench.data import ImageFolderDataset
from strbench.errors import ConfigError, DataError
from strbench.train import TrainConfig, Trainer, train_model

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: single-threaded tiny nets

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import ddp_config, ddp_data  # noqa: E402

SIZE = 32


def _folder(tmp_path, n=6, corrupt=False) -> ImageFolderDataset:
    """n non-square PNGs (random colours), so random_crop has room to move; optionally one broken file."""
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(root / f"{i}.png")
    if corrupt:
        (root / f"{n}.png").write_bytes(b"not a png")
    return ImageFolderDataset(root, SIZE, split="all", resize="random_crop")


def _spec(**kw) -> stream.StreamSpec:
    return stream.StreamSpec(**{"seed": 3, "batch": 4, "variant": "gray2edge", "canny_sigma": 2.0, **kw})


MASKS = stream.MaskGenerator(SIZE, ratio=(0.1, 0.5))


def _run_loader(source, masks, spec, start, stop, workers=0) -> list[dict]:
    return list(stream.make_loader(source, masks, spec, start=start, stop=stop, workers=workers))


def _assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k


def test_stream_after_a_resume_equals_the_uninterrupted_stream(tmp_path):
    src = stream.image_source(_folder(tmp_path))
    assert isinstance(src, stream.FileSource)
    full = _run_loader(src, MASKS, _spec(), 0, 6)
    resumed = _run_loader(src, MASKS, _spec(), 3, 6)  # a loader started afresh at step 3
    _assert_same(full[3:], resumed)
    assert [int(b["key"][0, 0]) for b in full] == list(range(6))
    _assert_same(full[4:5], [stream.make_batch(src, MASKS, _spec(), 4)])  # in-process, same sample
    # the draws are really random: crops, flips and masks vary over the stream, and with the seed
    assert len({tuple(b["known"].flatten(1).sum(1).tolist()) for b in full}) == 6
    other = _run_loader(src, MASKS, _spec(seed=4), 0, 1)
    assert not torch.equal(other[0]["image"], full[0]["image"])
    # x0 = gray(image), mu_x = edge(image) * known, computed in the worker
    b = full[0]
    assert torch.allclose(b["x0"][:, 0], (b["image"] * torch.tensor([0.2125, 0.7154, 0.0721])[:, None, None]).sum(1),
                          atol=1e-6)
    assert torch.all(b["mu_x"][b["known"] == 0] == 0) and b["mu_x"].sum() > 0


def test_workers_do_not_change_the_stream(tmp_path):
    src = stream.image_source(_folder(tmp_path))
    _assert_same(_run_loader(src, MASKS, _spec(), 0, 4, workers=0), _run_loader(src, MASKS, _spec(), 0, 4, workers=2))


def test_rank_slices_make_the_global_batch(tmp_path):
    """World size 1 at batch 4 and world size 2 at batch 2 see the same samples, split by slot."""
    src = stream.image_source(_folder(tmp_path))
    one = _run_loader(src, MASKS, _spec(batch=4), 0, 3)
    ranks = [_run_loader(src, MASKS, _spec(batch=2, world_size=2, rank=r), 0, 3) for r in (0, 1)]
    for s in range(3):
        for k in one[s]:
            assert torch.equal(one[s][k], torch.cat([ranks[0][s][k], ranks[1][s][k]])), k


def test_every_image_once_per_epoch_with_fresh_crops_and_flips(tmp_path):
    ds = _folder(tmp_path, n=6)
    order = stream.IndexOrder(seed=0, n=6)
    epochs = [[order(e * 6 + r) for r in range(6)] for e in range(3)]
    assert all(sorted(e) == list(range(6)) for e in epochs) and epochs[0] != epochs[1]
    src = stream.image_source(ds)
    spec = _spec(batch=6, variant=None)
    crops = [(b["image"], b["key"][:, 2]) for b in _run_loader(src, MASKS, spec, 0, 8)]
    per_image = {}
    for img, idx in crops:
        for im, i in zip(img, idx.tolist()):
            per_image.setdefault(i, []).append(im)
    for ims in per_image.values():  # 8 views of each image: not all the same crop and flip
        assert len({float(im[:, :4, :4].sum()) for im in ims}) > 1
    # the flip: a centre-crop source shows exactly the image or its mirror
    cc = stream.FileSource(ds.files, SIZE, "center_crop")
    b = stream.make_batch(cc, MASKS, _spec(batch=6, variant=None), 0)
    from strbench.data import load_image

    flipped = 0
    for im, i in zip(b["image"], b["key"][:, 2].tolist()):
        ref = load_image(ds.files[i], SIZE, "center_crop")
        assert torch.equal(im, ref) or torch.equal(im, ref.flip(-1))
        flipped += not torch.equal(im, ref)
    assert 0 < flipped < 6  # some flipped, some not (fixed seed)
    noflip = stream.make_batch(cc, MASKS, _spec(batch=6, variant=None, flip=False), 0)
    assert all(torch.equal(im, load_image(ds.files[i], SIZE, "center_crop"))
               for im, i in zip(noflip["image"], noflip["key"][:, 2].tolist()))


def test_memoised_maps_of_an_in_memory_source_are_exact():
    imgs, masks = ddp_data()
    src, pool = stream.image_source(imgs), stream.mask_source(masks)
    ds = stream.StreamDataset(src, pool, _spec())
    assert ds.cache == {}
    keys = stream.step_keys(_spec(), stream.IndexOrder(3, len(src)), 5)
    for k in keys + keys:  # the second pass reads the memo
        a, b = ds[k], stream.make_sample(src, pool, _spec(), k)
        assert all(torch.equal(a[n], b[n]) for n in a)
    assert ds.cache


def test_trainer_streams_a_folder_and_reports_worker_errors_on_one_line(tmp_path):
    ds = _folder(tmp_path, n=3, corrupt=True)
    cfg = TrainConfig(batch=4, steps=5, workers=1, canny_sigma=2.0)
    tr = Trainer("texture", cfg, ds, MASKS, device="cpu")
    with pytest.raises(DataError) as e:
        for _ in range(5):  # some step draws the broken file
            tr.step()
    assert "\n" not in str(e.value) and "3.png" in str(e.value), str(e.value)
    tr.close()


def test_world_size_must_match_and_the_hash_sees_the_global_batch():
    imgs, masks = ddp_data()
    with pytest.raises(ConfigError, match="train.world_size is 2 but this run has 1"):
        Trainer("irsde", TrainConfig(world_size=2), imgs, masks, device="cpu")
    assert TrainConfig(batch=4).hash("texture") == TrainConfig(batch=2, world_size=2).hash("texture")
    assert TrainConfig(batch=2).hash("texture") != TrainConfig(batch=2, world_size=2).hash("texture")
    assert TrainConfig(workers=0).hash("texture") == TrainConfig(workers=3).hash("texture")
    assert TrainConfig(flip=False).hash("texture") != TrainConfig().hash("texture")
    assert stream.default_workers(cpus=16, local_world_size=4) == 3
    assert stream.default_workers(cpus=64, local_world_size=1) == stream.MAX_AUTO_WORKERS
    assert stream.default_workers(cpus=2, local_world_size=1) == 0  # one worker would just compete


def test_two_gloo_ranks_under_torchrun_match_one_process_at_the_same_global_batch(tmp_path):
    """torchrun, 2 CPU ranks x batch 2 vs 1 process x batch 4, tiny texture net, 20 steps.

    Tolerance: relative 1e-5 on every logged loss. The data, levels and noise are identical by
    construction; what differs is float32 summation order (two half-batch means averaged by DDP's
    all-reduce vs one mean over 4), ~1e-7 relative per step, which Adam carries along (measured: at
    most 2e-7 over 20 steps). A wrong sample, slot or noise draw changes a loss by percents.
    """
    steps = 20
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(__file__).parent / "ddp_worker.py"), str(out), "texture", "2", str(steps)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    two = json.loads((out / "losses.json").read_text())
    imgs, masks = ddp_data()
    one = []
    net = train_model("texture", ddp_config(4, steps, 1), imgs, masks, ckpt_path=tmp_path / "one" / "m.pt",
                      device="cpu", callback=lambda e: one.append([e["step"], e["loss"]]))
    assert [s for s, _ in two["full"]] == list(range(1, steps + 1)) == [s for s, _ in one]
    for (_, a), (_, b) in zip(one, two["full"]):
        assert abs(a - b) <= 1e-5 * abs(a), (a, b)
    assert two["resumed"] == two["full"]  # interrupted at step 15, resumed from the step-10 checkpoint
    sums = [json.loads((out / f"params_{r}.json").read_text())["checksum"] for r in (0, 1)]
    assert sums[0] == sums[1]  # the ranks hold the same weights
    ref = float(sum(p.double().abs().sum() for p in net.state_dict().values()))
    assert abs(sums[0] - ref) <= 1e-5 * ref
    assert sorted(p.name for p in (out / "full").iterdir()) == ["m.prev.pt", "m.pt"]  # rank 0 wrote them, no temp files


def test_bench_data_reports_loader_and_step_throughput():
    from strbench.bench import BENCHES, bench_data
    from strbench.cli.bench import format_data

    row = bench_data(device="cpu", size=32, batch=1, preset="small", repeats=1, images=4, workers=0)
    assert row["preset"] == "small" and row["workers"] == 0 and row["size"] == 32
    assert row["loader_img_s"] > 0 and row["step_img_s"] > 0
    assert abs(row["ratio"] - row["loader_img_s"] / row["step_img_s"]) < 1e-9
    assert "ratio" in format_data(row).splitlines()[1]
    assert BENCHES["data"] is bench_data
