"""One rank of a torchrun training test (gloo on CPU).

    python -m torch.distributed.run --standalone --nproc_per_node=N tests/ddp_worker.py OUT ROLE BATCH STEPS

Trains ROLE for STEPS steps at per-rank batch BATCH on the images of `ddp_data()` twice: straight
through into OUT/full/, and into OUT/resumed/ interrupted after step STEPS * 3 // 4 (every rank raises
there, past the checkpoint at STEPS // 2) and then resumed. Rank 0 writes OUT/losses.json
{"full": [[step, loss], ...], "resumed": [...]}; every rank writes OUT/params_<rank>.json (a checksum of
its final weights) so that a test can check the ranks agree.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from strbench import dist as D  # noqa: E402
from strbench import train as T  # noqa: E402


def ddp_data(n: int = 8, size: int = 32, seed: int = 0):
    """Smooth random RGB images (upsampled 8x8 noise) and three box masks (known = 1, holes = 0)."""
    g = torch.Generator().manual_seed(seed)
    imgs = torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=size, mode="bilinear",
                                           align_corners=False).clamp(0, 1)
    masks = torch.ones(3, 1, size, size)
    masks[0, :, 4:16, 8:20] = 0
    masks[1, :, 16:28, 12:30] = 0
    masks[2, :, 2:30, 2:10] = 0
    return imgs, masks


def ddp_config(batch: int, steps: int, world_size: int) -> T.TrainConfig:
    return T.TrainConfig(steps=steps, batch=batch, lr=1e-3, warmup=2, ema=0.9, checkpoint_every=steps // 2,
                         log_every=1, world_size=world_size, workers=0)


class Interrupt(Exception):
    pass


def main(out: Path, role: str, batch: int, steps: int) -> None:
    torch.set_num_threads(1)
    info, _ = D.init_distributed("cpu")
    imgs, masks = ddp_data()
    cfg = ddp_config(batch, steps, info.world_size)
    losses: dict = {"full": [], "resumed": []}

    def log(name):
        return lambda ev: losses[name].append([ev["step"], ev["loss"]]) if ev["event"] == "loss" else None

    net = T.train_model(role, cfg, imgs, masks, ckpt_path=out / "full" / "m.pt", callback=log("full"), device="cpu")
    stop = steps * 3 // 4
    real_step = T.Trainer.step

    def step_until(self):
        if self.step_count == stop:
            raise Interrupt
        return real_step(self)

    T.Trainer.step = step_until
    try:
        T.train_model(role, cfg, imgs, masks, ckpt_path=out / "resumed" / "m.pt", callback=log("resumed"),
                      device="cpu")
        raise AssertionError("the interruption did not happen")
    except Interrupt:
        pass
    finally:
        T.Trainer.step = real_step
    losses["resumed"] = []  # resuming replays the losses the checkpoint holds (steps 1..10), then trains the rest
    T.train_model(role, cfg, imgs, masks, ckpt_path=out / "resumed" / "m.pt", callback=log("resumed"), device="cpu")
    checksum = float(sum(p.double().abs().sum() for p in net.state_dict().values()))
    (out / f"params_{info.rank}.json").write_text(json.dumps({"checksum": checksum, "world": info.world_size}))
    if info.rank == 0:
        (out / "losses.json").write_text(json.dumps(losses))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
