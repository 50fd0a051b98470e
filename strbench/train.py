"""The training loop: :class:`Trainer` (one optimisation step) and :func:`train_model` (train, resume, load).

The settings are :class:`strbench.trainset.TrainConfig`; each role's network and objective (paper Eqs. 5, 13,
14-16, :mod:`strbench.objectives`) come from its :class:`strbench.roles.Role`. The loop streams its data
from :mod:`strbench.stream` (a DataLoader whose workers crop, flip, draw the mask and compute the structure
maps of every sample, each a pure function of (seed, step, slot)); levels and noise come from one seeded torch.Generator on the device, so a resumed run
reproduces the loss sequence exactly. Under torchrun the net is trained with DistributedDataParallel,
each rank on its slice of the global batch; rank 0 checkpoints (atomically) and reports.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

import strbench
from strbench import roles
from strbench.roles import build_net
from strbench import sde as sdelib
from strbench import stream
from strbench.checkpoint import FORMAT, load_checkpoint, load_resumable, save_checkpoint
from strbench.dist import DistInfo, barrier, current_dist, init_distributed, resolve_device
from strbench.errors import CheckpointError, ConfigError, DataError, TrainingDiverged
from strbench.objectives import Batch
from strbench.sde import SDE, SDEPair
from strbench.trainset import TrainConfig, lr_at

# --------------------------------------------------------------------------------------------
# devices (resolve_device, ranks and the process group: strbench.dist)
# --------------------------------------------------------------------------------------------


def sde_to(sde: SDE, device: torch.device) -> SDE:
    """Copy of the SDE with its per-level arrays on `device` (no host->device copy per step)."""
    return dataclasses.replace(sde, **{f.name: getattr(sde, f.name).to(device) for f in dataclasses.fields(sde)
                                       if isinstance(getattr(sde, f.name), Tensor)})


# --------------------------------------------------------------------------------------------
# the trainer: one object holding net, EMA, optimiser, generator, data stream; step() is one full step
# --------------------------------------------------------------------------------------------


class Trainer:
    """Holds everything one training run needs; ``step()`` runs one optimisation step (no host sync).

    The data come from a strbench.stream loader (worker processes: crop, flip, mask, structure maps);
    levels and noise from one seeded torch.Generator on the device, drawn for the whole global batch
    on every rank and sliced. Inside an initialised process group the net is wrapped in
    DistributedDataParallel and this rank takes its slots of the global batch.
    """

    def __init__(self, role: str, cfg: TrainConfig, dataset, masks, *, device: str | torch.device = "auto",
                 structure_net: Optional[nn.Module] = None):
        cfg.validate(role)
        declared = roles.get(role)  # its objective and the settings it reads
        if cfg.guidance == "net" and declared.guided and structure_net is None:
            raise ConfigError("train.guidance = 'net' needs a trained structure net (pass structure_net=...); "
                              "or use guidance 'optimal'")
        self.role, self.cfg = role, cfg
        self.device = resolve_device(device)
        self.dist = current_dist()
        if cfg.world_size != self.dist.world_size:
            raise ConfigError(f"train.world_size is {cfg.world_size} but this run has {self.dist.world_size} "
                              f"rank(s); set train.world_size: {self.dist.world_size} (the global batch "
                              "batch x world_size is part of the model hash)")
        pair = sdelib.make_sde_pair(cfg.sde, cfg.sde_structure)
        self.sdes = SDEPair(texture=sde_to(pair.texture, self.device), structure=sde_to(pair.structure, self.device))
        self.T = pair.texture.T
        if pair.structure.T != self.T:
            raise ConfigError(f"train.sde_structure.T ({pair.structure.T}) must equal train.sde.T ({self.T})")
        self.source, self.masks = stream.image_source(dataset), stream.mask_source(masks)
        if tuple(self.masks.hw) != tuple(self.source.hw):
            raise DataError(f"mask size {tuple(self.masks.hw)} differs from image size {tuple(self.source.hw)}")
        self.spec = stream.StreamSpec(seed=cfg.seed, batch=cfg.batch, world_size=self.dist.world_size,
                                      rank=self.dist.rank, flip=cfg.flip,
                                      variant=cfg.variant if declared.uses_structure else None,
                                      canny_sigma=cfg.canny_sigma)
        self.workers = cfg.workers if cfg.workers >= 0 else stream.default_workers()
        self._it, self._it_step = None, -1  # loader iterator and the step of its next batch
        self._current: Optional[tuple[int, dict]] = None  # (step, device batch) being trained on
        self._override: Optional[dict] = None  # a preview batch
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
            torch.manual_seed(cfg.seed)
            self.net = build_net(role, cfg.preset, **cfg.net).to(self.device)
        self.net.train()
        self.model = self.net
        if self.dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids)
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.ema = None
        if cfg.ema > 0:
            self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
            self.ema_params = list(self.ema.parameters())
            self.ema_buffers = list(self.ema.buffers())
            self.net_buffers = list(self.net.buffers())
        extra = {"fused": True} if self.device.type == "cuda" else {"foreach": True}
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr, betas=(0.9, 0.99), **extra)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(cfg.seed)
        self.structure_net = None
        if structure_net is not None:
            self.structure_net = structure_net.to(self.device).eval().requires_grad_(False)
        self.amp = bool(cfg.amp) and self.device.type == "cuda"
        self.step_count = 0
        self.objective = declared.objective  # (trainer, model, generator, out=None) -> loss

    # --- data ---
    def _to_device(self, b: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) for k, v in b.items()}

    def data_batch(self) -> dict:
        """This rank's batch of step ``step_count`` on the device (from the loader, fetched once)."""
        if self._current is None or self._current[0] != self.step_count:
            if self._it is None or self._it_step != self.step_count:
                self.close()
                loader = stream.make_loader(self.source, self.masks, self.spec, start=self.step_count,
                                            workers=self.workers, pin_memory=self.device.type == "cuda")
                self._it, self._it_step = iter(loader), self.step_count
            b = stream.next_batch(self._it)
            self._it_step += 1
            self._current = (self.step_count, self._to_device(b))
        return self._current[1]

    def close(self) -> None:
        """Stop the loader's worker processes (a later step starts a new loader where it left off)."""
        self._it, self._it_step = None, -1

    def noise(self, b: Batch, like: Tensor, g: torch.Generator) -> Tensor:
        """Standard normal noise shaped like `like`: drawn for the whole global batch, this rank's slice."""
        full = torch.randn((b.n_global or like.shape[0], *like.shape[1:]), generator=g, device=self.device)
        return full[b.offset:b.offset + like.shape[0]]

    def sample_batch(self, g: torch.Generator) -> Batch:
        """The step's data (stream) and levels t ~ U{1..T} from the generator (global batch, sliced)."""
        d = self._override if self._override is not None else self.data_batch()
        n = d["image"].shape[0]
        whole = self._override is not None and self.spec.world_size == 1  # a given batch is all of it
        n_global = n if whole else self.spec.global_batch
        offset = 0 if whole else self.spec.rank * self.spec.batch
        t = torch.randint(1, self.T + 1, (n_global,), generator=g, device=self.device)[offset:offset + n]
        return Batch(y0=d["image"], known=d["known"], t=t, x0=d.get("x0"), mu_x=d.get("mu_x"), n_global=n_global,
                     offset=offset)

    def autocast(self):
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # --- one step ---
    def step(self, batch: Optional[dict] = None) -> Tensor:
        """One full training step: lr, batch, targets, forward, backward (gradients averaged over the
        ranks), clip, Adam, EMA. Returns this rank's loss. `batch` (a ``data_batch()``) trains on those
        data instead of the stream's (benchmarks: the step without the loader)."""
        lr = lr_at(self.cfg, self.step_count)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self._override = batch
        try:
            with self.autocast():
                loss = self.objective(self, self.model, self.gen)
        finally:
            self._override = None
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip, foreach=True)
        self.opt.step()
        if self.ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(self.ema_params, self.params, 1.0 - self.cfg.ema)
                if self.ema_buffers:  # e.g. spectral norm's u, v (authors' texture net): follow the live net
                    torch._foreach_copy_(self.ema_buffers, self.net_buffers)
        self.step_count += 1
        return loss.detach()

    @torch.no_grad()
    def preview(self, n: int = 4, seed: int = 12345) -> dict:
        """Tensors of one fixed small batch (own stream seed and generator: training is untouched)."""
        g = torch.Generator(device=self.device)
        g.manual_seed(seed)
        out: dict = {}
        model = self.inference_model()
        was = model.training
        model.eval()
        spec = dataclasses.replace(self.spec, seed=seed, batch=min(n, self.cfg.batch), world_size=1, rank=0)
        world = self.spec
        try:
            self._override = self._to_device(stream.make_batch(self.source, self.masks, spec, step=0))
            self.spec = spec  # the preview batch is the whole batch
            self.objective(self, model, g, out)
        finally:
            self._override, self.spec = None, world
            model.train(was)
        return {k: v.detach().float().cpu() for k, v in out.items() if v.ndim == 4}

    def inference_model(self) -> nn.Module:
        return self.ema if self.ema is not None else self.net

    # --- state ---
    def state_dict(self) -> dict:
        rng = {"generator": self.gen.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": FORMAT, "strbench_version": strbench.__version__, "role": self.role,
            "config": json.dumps(self.cfg.to_dict(), sort_keys=True), "config_hash": self.cfg.hash(self.role),
            "step": self.step_count, "world_size": self.dist.world_size, "model": self.net.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.opt.state_dict(), "rng": rng,
        }

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["model"])
        if self.ema is not None:
            if state["ema"] is None:
                raise ConfigError("checkpoint has no EMA weights but the config asks for ema > 0")
            self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["rng"]["generator"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step_count = int(state["step"])  # the stream restarts at this step (data_batch)


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------


def _check_finite(pending: list[tuple[int, Tensor]], ckpt_path: Path, last_good: int,
                  info: DistInfo = DistInfo()) -> list[tuple[int, float]]:
    """One host sync for all pending losses, averaged over the ranks (each rank's loss is the mean over
    its equal share of the global batch, so the average is the global batch's loss); raise
    TrainingDiverged at the first NaN/Inf (on every rank alike)."""
    if not pending:
        return []
    values = torch.stack([v for _, v in pending]).float()
    if info.world_size > 1:
        dist.all_reduce(values)
        values = values / info.world_size
    out = list(zip([s for s, _ in pending], values.cpu().tolist()))
    for step, v in out:
        if not math.isfinite(v):
            where = f"the last good checkpoint (step {last_good}) in {ckpt_path} is intact" if last_good \
                else f"no checkpoint was written yet ({ckpt_path})"
            raise TrainingDiverged(f"training diverged: loss is {v} at step {step}; {where}; "
                                   f"lower train.lr or set train.grad_clip")
    return out


def _same_step_on_all_ranks(tr: Trainer, ckpt_path: Path) -> None:
    """Every rank resumed from the same step (the checkpoint folder must be shared by the ranks)."""
    if tr.dist.world_size == 1:
        return
    steps = torch.tensor([tr.step_count], device=tr.device)
    got = [torch.zeros_like(steps) for _ in range(tr.dist.world_size)]
    dist.all_gather(got, steps)
    got = [int(s) for s in got]
    if len(set(got)) > 1:
        raise CheckpointError(f"ranks resumed {ckpt_path} at different steps {got}; put the cache folder on a "
                              "file system that every rank sees")


def train_model(role: str, cfg: TrainConfig, dataset, masks, *, ckpt_path: str | Path,
                callback: Optional[Callable[[dict], Any]] = None, device: str | torch.device = "auto",
                structure_net: Optional[nn.Module] = None, stop_at: Optional[int] = None) -> nn.Module:
    """Train (or resume, or just load when finished) the `role` network; return the inference model
    (EMA weights when ema > 0) in eval mode.

    stop_at: train only up to step min(stop_at, cfg.steps) and write a resumable checkpoint there (the
    same content as a regular one, written after the pending losses were checked finite); a later call
    resumes it, and training in stages ends with the same weights and loss log, bit for bit, as training
    straight through (no extra log points are made at the stop). A checkpoint already past stop_at is
    returned as it is (training never goes back).

    dataset: a folder dataset (read file by file by the stream's workers), the built-in patches, any
    Dataset of Tensor[3,H,W], or a Tensor (N,3,H,W); masks: a MaskSet / Tensor (M,1,H,W) pool, or a
    stream.MaskGenerator (a fresh mask per sample).

    Under torchrun (WORLD_SIZE > 1, cfg.world_size equal to it) every rank calls this: the process group
    is joined (NCCL on CUDA, gloo on CPU), the net trained with DistributedDataParallel on this rank's
    slice of each global batch; every rank resumes from ckpt_path, rank 0 alone writes it and calls the
    callback. callback receives ``{"event": "loss", "step", "loss" (mean over the ranks and the steps
    since the previous log), "lr", "role"}`` every ``log_every`` steps and ``{"event": "images", "step",
    "role", "images": {name: Tensor}}`` every ``images_every`` steps. The losses logged so far are kept in
    the checkpoint: on resuming, the callback first receives ``{"event": "resumed", "step", "role"}`` and
    then every loss logged before that step again (the same dicts, plus ``"replayed": True``), so that the
    caller ends with the whole loss history of an interrupted training. A NaN/Inf loss raises
    TrainingDiverged naming the step; checkpoints are only written after the losses since the previous
    one were checked finite.
    """
    ckpt_path = Path(ckpt_path)
    info, dev = init_distributed(device)
    tr = Trainer(role, cfg, dataset, masks, device=dev, structure_net=structure_net)
    try:
        state = load_resumable(ckpt_path, expected_hash=cfg.hash(role))  # a corrupt file -> *.corrupt, previous one
        resumed = state is not None
        if resumed:
            tr.load_state_dict(state)
        _same_step_on_all_ranks(tr, ckpt_path)  # also: no rank writes before every rank has read
        last_good = tr.step_count if resumed else 0
        pending: list[tuple[int, Tensor]] = []  # losses since the last finiteness check
        log = state.get("log", {}) if resumed else {}  # the logged losses so far travel in the checkpoint
        history: list[list] = [list(e) for e in log.get("history", [])]  # [step, loss, lr] per log point
        synced: list[tuple[int, float]] = [tuple(e) for e in log.get("synced", [])]  # checked losses since the last log
        if resumed and callback is not None and info.is_main:  # the resumed run gets the whole loss history
            callback({"event": "resumed", "step": tr.step_count, "role": role})
            for step, loss, lr in history:
                callback({"event": "loss", "step": step, "loss": loss, "lr": lr, "role": role, "replayed": True})
        end = cfg.steps if stop_at is None else min(int(stop_at), cfg.steps)
        saved = tr.step_count if resumed and ckpt_path.is_file() else None  # the step of the checkpoint on disk
        while tr.step_count < end:
            loss = tr.step()
            step = tr.step_count
            pending.append((step, loss))
            do_log = step % cfg.log_every == 0 or step == cfg.steps
            do_ckpt = step % cfg.checkpoint_every == 0 or step == cfg.steps
            do_img = cfg.images_every > 0 and step % cfg.images_every == 0
            if do_log or do_ckpt or do_img:
                synced += _check_finite(pending, ckpt_path, last_good, info)
                pending = []
            if do_log:
                history.append([step, sum(v for _, v in synced) / len(synced), lr_at(cfg, step - 1)])
                synced = []
            if do_ckpt:
                if info.is_main:
                    save_checkpoint(ckpt_path, {**tr.state_dict(), "log": {"history": history, "synced": synced}},
                                    keep_previous=True)
                barrier(info)
                last_good = saved = step
            if do_log and callback is not None and info.is_main:
                _, mean, lr = history[-1]
                callback({"event": "loss", "step": step, "loss": mean, "lr": lr, "role": role})
            if callback is not None and do_img and info.is_main:
                callback({"event": "images", "step": step, "role": role, "images": tr.preview()})
        if tr.step_count not in (saved, 0):  # stopped (stop_at) between checkpoints: one there, resumable
            synced += _check_finite(pending, ckpt_path, last_good, info)
            if info.is_main:
                save_checkpoint(ckpt_path, {**tr.state_dict(), "log": {"history": history, "synced": synced}},
                                keep_previous=True)
            barrier(info)
    finally:
        tr.close()
    return tr.inference_model().eval()


def load_model(ckpt_path: str | Path, expected_hash: Optional[str] = None, *, device: str | torch.device = "cpu",
               use_ema: bool = True) -> nn.Module:
    """Rebuild a trained network from its checkpoint (weights_only load; refuses another config hash)."""
    state = load_checkpoint(ckpt_path, expected_hash=expected_hash)
    cfg = TrainConfig.from_dict(json.loads(state["config"]))
    net = build_net(state["role"], cfg.preset, **cfg.net)
    weights = state["ema"] if use_ema and state["ema"] is not None else state["model"]
    net.load_state_dict(weights)
    return net.to(resolve_device(device)).eval()
