"""The ``metrics:`` section of an experiment (strbench.config re-exports it): which metrics a cell computes and
with what (docs/SCIENCE.md#metrics). Pure settings: no torch, no I/O; strict like every config section."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_serializer

# keys added after cells were first hashed: dumped (cell.yaml, the cell hash) only when set to something else than
# their default, so every earlier cell keeps its identity
ADDED_METRICS_KEYS = ("lpips", "lpips_net", "lpips_weights", "ids")


class MetricsCfg(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)  # as strbench.config.Strict

    protocol: str = "pennet"  # PSNR/SSIM protocol of strbench.metrics.PROTOCOLS
    fid: bool = True
    kid: bool = False
    fid_weights: Optional[str] = None  # local Inception weights file (default: the converted shipped ones)
    lpips: bool = True  # LPIPS per image (not in the paper); n/a with the reason without backbone weights
    lpips_net: Literal["alex", "vgg"] = "alex"  # its backbone: AlexNet (LPIPS' default) or VGG16
    lpips_weights: Optional[str] = None  # the backbone's torchvision file (default: torch.hub's cache)
    ids: bool = True  # P-IDS / U-IDS (not in the paper) from the FID/KID features
    trajectories: bool = False  # KL of masked/unmasked regions along the reverse process (Fig. 8)
    trajectory_every: int = Field(1, ge=1)  # record every k-th reverse step
    kl_bins: int = Field(64, ge=2)
    bootstrap: int = Field(1000, ge=0)  # bootstrap resamples for 95% intervals (0: off)
    grid_images: int = Field(8, ge=1)  # images in samples.png
    strip_frames: int = Field(8, ge=2)  # frames in trajectory.png

    @model_serializer(mode="wrap")
    def _added_keys_when_set(self, handler):
        out = handler(self)
        return {k: v for k, v in out.items() if k not in ADDED_METRICS_KEYS or v != type(self).model_fields[k].default}
