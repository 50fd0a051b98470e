"""The method registry: every inpainting method strbench can run, loaded from entry points.

    from strbench import methods
    methods.get("repaint").make(jump_length=5)      # its settings (defaults from its own module)
    methods.names()                                 # ('biharmonic', 'irsde', 'repaint', 'strdiffusion')

A method is one module exposing a :class:`~strbench.methods.base.Method` (with, when it brings a network of
its own, the :class:`strbench.roles.Role` of that network in ``networks=``) and one line under
``[project.entry-points."strbench.methods"]`` in ``pyproject.toml`` (``name = "package.module:METHOD"``);
an installed package of someone else's can register its own methods the same way. The paper's method
lives in :mod:`strbench.methods.strdiffusion`, the comparison methods in ``baselines/``.
"""
from __future__ import annotations

import functools
from importlib.metadata import entry_points

from strbench.errors import ConfigError
from strbench.methods.base import Method, MethodSettings, Models, SampleContext

GROUP = "strbench.methods"

__all__ = ["GROUP", "Method", "MethodSettings", "Models", "SampleContext", "registry", "get", "names",
           "default_cases", "floors"]


@functools.cache
def registry() -> dict[str, Method]:
    """name -> Method, from the ``strbench.methods`` entry points (sorted by name)."""
    out: dict[str, Method] = {}
    for ep in entry_points(group=GROUP):
        m = ep.load()
        if not isinstance(m, Method) or m.name != ep.name:
            raise ConfigError(f"entry point {ep.name} = {ep.value} (group {GROUP}) must be a "
                              f"strbench.methods.Method named {ep.name!r}")
        fld = m.settings.model_fields.get("method")
        if fld is None or getattr(fld.annotation, "__args__", None) != (m.name,):
            raise ConfigError(f"method {m.name!r}: its settings model {m.settings.__name__} must declare "
                              f"method: Literal[{m.name!r}]")
        out[m.name] = m
    if not out:
        raise ConfigError(f"no methods registered under the entry-point group {GROUP!r}: install strbench "
                          "(pip install -e . or make setup) so its pyproject entry points are known")
    return dict(sorted(out.items()))


def names() -> tuple[str, ...]:
    return tuple(registry())


def get(name: str) -> Method:
    reg = registry()
    if name not in reg:
        raise ConfigError(f"unknown sampling method {name!r}; choose one of {sorted(reg)} (a new method needs "
                          f"an entry point in group {GROUP!r} and a reinstall: pip install -e .)")
    return reg[name]


def default_cases() -> dict[str, MethodSettings]:
    """The methods of an experiment that lists none: case name -> default settings."""
    return {m.default_case: m.make() for m in registry().values() if m.default_case}


def floors() -> dict[str, MethodSettings]:
    """No-learning reference methods added to every experiment with ``floors: true`` (case = name)."""
    return {m.name: m.make() for m in registry().values() if m.floor}
