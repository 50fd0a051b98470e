"""`strbench schedule`: print a theta/delta schedule as a table or JSON, and optionally plot it."""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import yaml

from strbench import atomic
from strbench.errors import ConfigError

if TYPE_CHECKING:
    from strbench.sde import SDE


def parse_params(items: list[str], flag: str = "--param") -> dict:
    """['power=2', 'start=0.01'] -> {'power': 2, 'start': 0.01} (values parsed as YAML scalars)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} power=2")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def build(T: int, kind: str, lam: float, eps: float, params: dict) -> SDE:
    from strbench.sde import make_sde  # torch: only when the command runs

    try:
        return make_sde(T=T, kind=kind, lam=lam, eps=eps, **params)
    except ValueError as e:
        raise ConfigError(f"schedule: {e}") from None


def as_json(theta: SDE, delta: SDE) -> dict:
    """Arrays theta, thetabar, sigma, sigmabar (index t = 0..T) and the scalar dt; delta likewise."""
    d = theta.to_dict()
    d["delta"] = delta.to_dict()
    return d


def as_table(theta: SDE, delta: SDE, every: int = 0) -> str:
    from tabulate import tabulate

    T = theta.T
    step = every if every > 0 else max(1, T // 20)
    ts = sorted(set(range(0, T + 1, step)) | {1, T})
    rows = [[t, float(theta.theta[t]), float(theta.thetabar[t] * theta.dt), float(theta.sigma[t]),
             float(theta.sigmabar[t]), float(delta.theta[t]), float(delta.sigmabar[t])] for t in ts]
    head = (f"theta: {theta.kind} {theta.params or ''} T={T} lambda={theta.lam:.6g} eps={theta.eps:g} "
            f"dt={theta.dt:.5f} sigmabar_T={float(theta.sigmabar[-1]):.5f}\n"
            f"delta: {delta.kind} {delta.params or ''} dt={delta.dt:.5f}\n")
    return head + tabulate(rows, headers=["t", "theta_t", "thetabar_t*dt", "sigma_t", "sigmabar_t",
                                          "delta_t", "sigmabar_x,t"], floatfmt=".6g")


def plot_schedule(theta: SDE, delta: SDE, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = list(range(theta.T + 1))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].plot(t, theta.theta.numpy(), label=f"theta ({theta.kind})")
    axes[0].plot(t, delta.theta.numpy(), "--", label=f"delta ({delta.kind})")
    axes[0].set(xlabel="t", ylabel="rate", title="mean-reversion speed")
    axes[1].plot(t, theta.sigmabar.numpy(), label="sigmabar (texture)")
    axes[1].plot(t, delta.sigmabar.numpy(), "--", label="sigmabar (structure)")
    axes[1].set(xlabel="t", ylabel="std", title="forward marginal std")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fmt = os.path.splitext(path)[1].lstrip(".") or "png"
    with atomic.atomic_open(path) as f:
        fig.savefig(f, dpi=120, format=fmt)
    plt.close(fig)


def run(T: int, kind: str, lam: float, eps: float, params: list[str], delta_kind: str | None,
        delta_params: list[str], *, fmt: str = "table", every: int = 0, plot: str | None = None) -> int:
    theta = build(T, kind, lam, eps, parse_params(params))
    if delta_kind is None and not delta_params:
        delta = theta
    else:
        delta = build(T, delta_kind or kind, lam, eps, parse_params(delta_params, "--delta-param"))
    print(json.dumps(as_json(theta, delta)) if fmt == "json" else as_table(theta, delta, every))
    if plot:
        plot_schedule(theta, delta, plot)
    return 0


def add_schedule(sub):
    p = sub.add_parser("schedule", help="print or plot a theta/delta noise schedule")
    p.add_argument("--T", type=int, default=100, help="number of diffusion steps (default 100)")
    p.add_argument("--kind", default="cosine", help="cosine | linear | constant | power (default cosine)")
    p.add_argument("--lam", type=float, default=30 / 255, help="stationary std lambda (default 30/255)")
    p.add_argument("--eps", type=float, default=0.005, help="terminal mean-reversion residual (default 0.005)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="schedule family parameter, e.g. --param power=2 --param start=0.01")
    p.add_argument("--delta-kind", default=None, help="structure (delta) schedule kind; default = theta's")
    p.add_argument("--delta-param", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--every", type=int, default=0, help="table: print every k-th step (default: ~20 rows)")
    p.add_argument("--plot", default=None, metavar="PNG", help="also plot theta, delta and sigmabar to this file")
    p.set_defaults(func=_cmd_schedule)


def _cmd_schedule(a) -> int:
    return run(a.T, a.kind, a.lam, a.eps, a.param, a.delta_kind, a.delta_param, fmt=a.format, every=a.every,
               plot=a.plot)
