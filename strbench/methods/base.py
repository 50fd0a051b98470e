"""What a method is: its settings model, the networks it needs, its tags and its sampler.

A method is one module that builds one :class:`Method` and is registered under the entry-point group
``strbench.methods`` (one line in ``pyproject.toml``); :mod:`strbench.methods` loads the registry. The
config schema, the experiment planner, tracking and :func:`strbench.sample.sample` ask the registry;
nothing else in strbench names a method.

A sampler is ``run(ctx, image, known, s) -> (y0, info)``: ``ctx`` a :class:`SampleContext` (models,
SDEs, the noise sampler, the callback, the evaluation counter), ``s`` the method's effective settings
and inputs as a plain dict. It returns the raw y_0 (not composited) and extra info; the shell in
:mod:`strbench.sample` checks inputs, runs it under ``torch.no_grad()`` and composites.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional

from pydantic import BaseModel, ConfigDict
from torch import Tensor

from strbench.errors import ConfigError

class MethodSettings(BaseModel):
    """Base of every method's settings (YAML ``methods.<case>``): strict, frozen, unknown keys refused.
    ``method`` is the registry name; subclasses narrow it to a Literal (the union's discriminator)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    method: str

    def effective(self) -> dict:
        """The values the sampler uses (subclasses fill settings whose default depends on others)."""
        return self.model_dump(exclude={"method"})


class Models(Mapping[str, Callable]):
    """The networks a method may use, by role name (strbench.roles): ``models.texture`` or ``models["texture"]``;
    a role not given is None (a sampler asks for what it needs with ``SampleContext.need``). Noise nets
    ``net(x_t, mu, t, cond=None)``, ``D(y, x, t)``."""

    def __init__(self, **nets: Optional[Callable]):
        self._nets = {k: v for k, v in nets.items() if v is not None}

    def __getattr__(self, role: str) -> Optional[Callable]:
        if role.startswith("_"):
            raise AttributeError(role)
        return self._nets.get(role)

    def __getitem__(self, role: str) -> Callable:
        return self._nets[role]

    def __iter__(self) -> Iterator[str]:
        return iter(self._nets)

    def __len__(self) -> int:
        return len(self._nets)

    def __repr__(self) -> str:
        return f"Models({', '.join(self._nets)})"


@dataclass
class SampleContext:
    """What a sampler gets besides the batch: networks, SDEs, noise, progress and evaluation counts."""

    models: Models
    sdes: Any  # strbench.sde.SDEPair
    noise: Callable[[Tensor], Tensor]  # like -> standard normal draw (every Gaussian draw goes through it)
    callback: Optional[Callable[[dict], None]]
    counter: dict  # network name -> evaluations (a batched call counts once)

    def begin(self, key: int) -> None:
        """A loop begins move `key` (its step): a noise sampler with a `begin` method (e.g.
        strbench.steps.PerImageNoise) re-seeds per image there; the default generator ignores it."""
        hook = getattr(self.noise, "begin", None)
        if hook is not None:
            hook(key)

    def need(self, *names: str, why: str) -> None:
        missing = [n for n in names if self.models.get(n) is None]
        if missing:
            raise ConfigError(f"{why} needs the model(s) {missing} (Models.{', Models.'.join(missing)})")

    def emit(self, **state) -> None:
        if self.callback is not None:
            self.callback({"score": None, "threshold": None, "accepted": None, "x": None, **state,
                           "nfe": sum(self.counter.values())})


def _no_tags(settings: MethodSettings) -> dict:
    return {}


def _no_check(s: dict) -> dict:
    return s


@dataclass(frozen=True)
class Method:
    """One inpainting method, as the registry knows it."""

    name: str  # registry key = ``method:`` in the YAML
    settings: type[MethodSettings]  # the only place its settings and their defaults live
    run: Callable[..., tuple]  # run(ctx, image, known, s) -> (y0, info)
    roles: Callable[[MethodSettings], tuple[str, ...]]  # trained networks it needs (strbench.roles names)
    summary: str = ""  # one line for listings and docs
    default_case: Optional[str] = None  # case name in an experiment with no `methods:` (None: not a default)
    floor: bool = False  # a no-learning reference added to every experiment (experiment key `floors`)
    inputs: Mapping[str, Any] = field(default_factory=dict)  # sampler arguments that are not YAML settings
    tags: Callable[[MethodSettings], dict] = _no_tags  # extra MLflow tags (strbench.<key>) of its cells
    check: Callable[[dict], dict] = _no_check  # checks of the inputs (settings + inputs dict) before a run
    # settings that are also training settings (same name under train:): a case that leaves one unset takes
    # the training value, a case that sets another value is refused (e.g. StrDiffusion's disc_time)
    train_settings: tuple[str, ...] = ()
    # networks it brings: strbench.roles.Role objects of its own (strbench.roles.registry learns them here; this
    # module never imports strbench.roles, which builds on the method registry)
    networks: tuple = ()

    def make(self, **values) -> MethodSettings:
        """Settings from keyword values (``method`` filled in)."""
        return self.settings(method=self.name, **values)
