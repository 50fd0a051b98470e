"""Sampling: one signature for every registered method.

    sample(method, models, image, known, *, sdes, generator=None, noise_sampler=None, callback=None, **settings)
        -> SampleResult

``method`` is a name of the method registry (:mod:`strbench.methods`: ``irsde``, ``repaint``,
``strdiffusion``, ``biharmonic``, ...); ``settings`` are its settings model's fields plus its declared
inputs (e.g. StrDiffusion's ``variant``, ``canny_sigma``, precomputed ``x0``/``mu_x``). Every method:
- is batched and runs under ``torch.no_grad()``; it never reads or writes files;
- draws all its noise through one source, given as exactly one of ``generator`` (a ``torch.Generator``
  on the input's device: standard normal draws from it) or ``noise_sampler(like) -> Tensor`` (e.g.
  :class:`strbench.steps.PerImageNoise`, or zero / scripted noise in a test: k-diffusion's hook), so a seed
  fixes the output bit for bit on a given device;
- returns the composited output ``gt * known + clamp(y_0, 0, 1) * (1 - known)`` (known pixels are
  the ground truth exactly);
- counts network evaluations per image: ``SampleResult.nfe`` = noise-network evaluations +
  discriminator evaluations. Calls are batched, so one call is one evaluation of every image in the
  batch; ``info["nfe_by_net"]`` splits the count by network (``irsde``, ``structure``, ``texture``,
  ``discriminator``). When adaptive resampling stops early for some images of a batch, those images
  still ride along in the remaining batched calls (their results are discarded): ``nfe`` counts what
  was spent, ``info["tries"]`` says how many resampling candidates each image actually used;
- calls ``callback(dict)`` after every move with keys ``t`` (the level of the states in the dict),
  ``y`` (texture), ``x`` (structure or None), ``score``, ``threshold``, ``accepted`` ((B,) tensors or
  None), ``phase`` (``step`` | ``resample`` | ``undo``) and ``nfe`` (evaluations so far). Tensors are
  the live states (no copies); the caller keeps what it needs (Fig. 8 KL curves, MLflow strips).

Settings are validated by the method's settings model: an unknown name raises ``ConfigError`` (a
ValueError) naming the valid ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from pydantic import ValidationError
from torch import Tensor

from strbench import methods as registry
from strbench.errors import ConfigError
from strbench.methods.base import Models, SampleContext
from strbench.sde import SDEPair
from strbench.steps import NoiseSampler, generator_noise

__all__ = ["Models", "SampleResult", "sample", "resolve_settings", "defaults"]


@dataclass
class SampleResult:
    output: Tensor  # (B, 3, H, W) composited: gt * known + y_0 * (1 - known)
    nfe: int  # network evaluations per image (noise nets + discriminator)
    info: dict = field(default_factory=dict)


def _settings_error(method: str, err: ValidationError, valid: list[str]) -> ConfigError:
    e = err.errors(include_url=False)[0]
    key = ".".join(str(p) for p in e["loc"]) or "settings"
    if e["type"] == "extra_forbidden":
        bad = sorted(str(x["loc"][0]) for x in err.errors() if x["type"] == "extra_forbidden")
        return ConfigError(f"unknown setting(s) {bad} for method {method!r}; valid: {valid}")
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "value_error":
        return ConfigError(msg)
    return ConfigError(f"sampler setting {key!r}: {msg[0].lower() + msg[1:]}, got {e.get('input')!r}")


def defaults(method: str) -> dict:
    """Every setting and input of `method` with its default (None where it depends on others)."""
    m = registry.get(method)
    return {**{k: f.default for k, f in m.settings.model_fields.items() if k != "method"}, **m.inputs}


def resolve_settings(method: str, settings: dict) -> dict:
    """The effective settings and inputs of `method` (defaults filled in, mode-dependent ones too),
    checked; unknown names raise ConfigError naming the valid ones."""
    m = registry.get(method)
    fields = [k for k in m.settings.model_fields if k != "method"]
    valid = sorted([*fields, *m.inputs])
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown} for method {method!r}; valid: {valid}")
    try:
        model = m.make(**{k: v for k, v in settings.items() if k in fields})
    except ValidationError as e:
        raise _settings_error(method, e, valid) from None
    inputs = {**m.inputs, **{k: v for k, v in settings.items() if k in m.inputs}}
    return m.check({**model.effective(), **inputs})


def _check_inputs(image: Tensor, known: Tensor) -> None:
    if not isinstance(image, Tensor) or image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be a (B, 3, H, W) tensor, got {getattr(image, 'shape', type(image))}")
    if not isinstance(known, Tensor) or known.shape != (image.shape[0], 1, *image.shape[-2:]):
        raise ValueError(f"known must be (B, 1, H, W) = {(image.shape[0], 1, *image.shape[-2:])}, "
                         f"got {getattr(known, 'shape', type(known))}")
    if known.device != image.device:
        raise ValueError(f"image is on {image.device} but known on {known.device}")


def _noise_source(image: Tensor, generator, noise_sampler) -> NoiseSampler:
    """The one source of the sampling noise: a noise sampler, or standard normal draws from a generator."""
    if (generator is None) == (noise_sampler is None):
        raise ValueError("sample: give exactly one noise source, generator= (a torch.Generator on the image's "
                         "device) or noise_sampler= (like -> Tensor), "
                         + ("not both" if generator is not None else "got neither"))
    if noise_sampler is not None:
        if not callable(noise_sampler):
            raise ValueError(f"noise_sampler must be callable (like -> Tensor), got {type(noise_sampler).__name__}")
        return noise_sampler
    if not isinstance(generator, torch.Generator):
        raise ValueError("generator must be a torch.Generator (all sampling noise is drawn from it)")
    g, d = generator.device, image.device
    if g.type != d.type or (g.index is not None and d.index is not None and g.index != d.index):
        raise ValueError(f"generator is on {g} but the image on {d}: create it with "
                         f"torch.Generator(device=image.device)")
    return generator_noise(generator)


def sample(method: str, models: Models, image: Tensor, known: Tensor, *, sdes: SDEPair,
           generator: Optional[torch.Generator] = None, noise_sampler: Optional[NoiseSampler] = None,
           callback: Optional[Callable[[dict], None]] = None, **settings: Any) -> SampleResult:
    """Inpaint `image` where `known` == 0 with `method`; the noise comes from exactly one of `generator` and
    `noise_sampler`. See the module docstring for the contract."""
    s = resolve_settings(method, settings)
    _check_inputs(image, known)
    noise = _noise_source(image, generator, noise_sampler)
    known = (known > 0.5).to(image.dtype)
    counter: dict[str, int] = {}
    ctx = SampleContext(models=models, sdes=sdes, noise=noise,
                        callback=callback, counter=counter)
    with torch.no_grad():
        y0, info = registry.get(method).run(ctx, image, known, s)
        output = torch.where(known > 0.5, image, y0.clamp(0.0, 1.0))
    shown = {k: v for k, v in s.items() if not isinstance(v, Tensor)}
    info = {"settings": shown, "nfe_by_net": dict(counter), **info}
    return SampleResult(output=output, nfe=int(sum(counter.values())), info=info)
