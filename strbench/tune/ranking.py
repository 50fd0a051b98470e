"""Does a fast solver rank trials as Euler does? (`strbench tune X.yaml --check-ranking K`)

A tune YAML may ask for a fast solver in its fixed keys (``set``: ``solver``, ``steps``, ... of a method) so that
every validation pass costs fewer network calls. That is only worth it when the trials come out in the same order
as with the reference loop (Euler-Maruyama over every level). This check draws K overlays from the search space
(Optuna's random sampler, seeded with ``study.seed``: the same K overlays on every run), evaluates each on the
validation split twice, once with the YAML's keys and once with every solver key removed from ``set`` (the
methods' default, ``euler``), and compares the two orderings: Spearman's rank correlation (scipy.stats), the
reference's best trial's rank under the fast solver, and the cost of each pass (network calls and seconds per
image, sampling only: the models are trained once, by the first pass, and shared through the experiment cache).
Nothing is written to the study's storage; MLflow gets nothing either (evaluate() on the validation split never
logs). The overlays are the space's keys plus ``set`` exactly as a trial would use them.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from strbench.errors import ConfigError
from strbench.solvers import SOLVER_KEYS
from strbench.tune.spec import OBJECTIVES, TuneSpec, sample_overlay

Evaluate = Callable[[dict], dict]  # overlay -> validation metrics


def split_solver_keys(fixed: dict) -> tuple[dict, dict]:
    """A tune ``set`` split into (the set without any method's solver keys, those keys dotted as
    ``methods.<case>.<key>``). Solver keys are found dotted (``methods.<case>.<key>``) or nested under ``methods`` /
    ``methods.<case>``; ``train.steps`` and other sections are kept."""
    kept, solver = {}, {}

    def split_case(case: str, settings: Any) -> Any:
        if not isinstance(settings, dict):
            return settings
        for k, v in settings.items():
            if k in SOLVER_KEYS:
                solver[f"methods.{case}.{k}"] = v
        return {k: v for k, v in settings.items() if k not in SOLVER_KEYS}

    for key, value in fixed.items():
        parts = key.split(".")
        if parts[0] != "methods" or len(parts) > 3:
            kept[key] = value
        elif len(parts) == 3 and parts[2] in SOLVER_KEYS:
            solver[key] = value
        elif len(parts) == 3:
            kept[key] = value
        elif len(parts) == 2:
            kept[key] = split_case(parts[1], value)
        elif isinstance(value, dict):
            kept[key] = {case: split_case(case, settings) for case, settings in value.items()}
        else:
            kept[key] = value
    return kept, solver


def without_solver_keys(fixed: dict) -> tuple[dict, int]:
    """A tune ``set`` with every method's solver keys removed, and how many were removed (see split_solver_keys)."""
    kept, solver = split_solver_keys(fixed)
    return kept, len(solver)


def solver_keys(fixed: dict) -> dict:
    """The solver keys of a tune ``set``, dotted (``methods.<case>.<key>``): what the check compares with euler."""
    return split_solver_keys(fixed)[1]


def draw_overlays(spec: TuneSpec, n: int) -> list[dict]:
    """`n` overlays of the space (+ ``set``), drawn by Optuna's RandomSampler seeded with ``study.seed`` in an
    in-memory study: reproducible, and free of the TPE model (which would make later draws depend on values)."""
    from strbench.tune.storage import quiet_optuna

    optuna = quiet_optuna()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec.study.seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(sample_overlay(trial, spec))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)  # nothing is measured here
    return out


@dataclass
class RankingCheck:
    objective: str
    direction: str  # maximize | minimize
    reference: list[float]  # per overlay, Euler (set without solver keys)
    fast: list[float]  # per overlay, the YAML's set
    overlays: list[dict]
    cost: dict = field(default_factory=dict)  # {"reference"|"fast": {"nfe_per_image", "sec_per_image", "wall_s"}}
    spearman: float = math.nan
    p_value: float = math.nan
    best_rank_fast: Optional[int] = None  # 1-based rank, under the fast solver, of the reference's best overlay


def _ranks(values: list[float], direction: str) -> list[int]:
    """1-based rank of each value, best first (ties: earlier overlay first)."""
    sign = -1.0 if direction == "maximize" else 1.0
    order = sorted(range(len(values)), key=lambda i: (sign * values[i], i))
    ranks = [0] * len(values)
    for r, i in enumerate(order, 1):
        ranks[i] = r
    return ranks


def compare(reference: list[float], fast: list[float], direction: str) -> tuple[float, float, int]:
    """Spearman's rho and its p-value (scipy.stats.spearmanr), and the fast solver's rank of the reference's best."""
    from scipy import stats

    res = stats.spearmanr(reference, fast)
    best_ref = _ranks(reference, direction).index(1)
    return float(res.statistic), float(res.pvalue), _ranks(fast, direction)[best_ref]


def ranking_check(spec: TuneSpec, n: int, evaluate: Evaluate, *,
                  say: Optional[Callable[[str], None]] = None) -> RankingCheck:
    """Evaluate `n` drawn overlays with Euler (reference) and with the YAML's solver keys; compare the rankings.
    `evaluate(overlay) -> metrics` is the tuning objective's evaluation (validation split)."""
    if n < 3:
        raise ConfigError(f"--check-ranking needs at least 3 trials to rank, got {n}")
    base_set, solver = split_solver_keys(spec.set)
    if not solver or all(v in (None, "euler") for v in solver.values()):
        raise ConfigError("--check-ranking: the tune YAML's `set` has no solver keys (solver, steps, order, "
                          "solver_type, time_schedule under a method): its trials already use each method's "
                          "default solver; set e.g. methods: {StrDiffusion: {solver: posterior, steps: 10}}")
    say = say or (lambda line: None)
    objective = spec.study.objectives[0]
    direction = OBJECTIVES[objective]
    overlays = draw_overlays(spec, n)
    passes = {"reference": [], "fast": []}
    cost = {k: {"nfe_per_image": [], "sec_per_image": [], "wall_s": 0.0} for k in passes}
    for i, overlay in enumerate(overlays):
        fixed = {k: v for k, v in overlay.items() if k not in spec.set}
        for name, ov in (("reference", {**base_set, **fixed}), ("fast", overlay)):  # reference first: it trains
            t0 = time.perf_counter()
            m = evaluate(ov)
            cost[name]["wall_s"] += time.perf_counter() - t0
            v = m.get(objective)
            if v is None or not math.isfinite(float(v)):
                raise ConfigError(f"--check-ranking: trial {i} gave no finite {objective} with the {name} solver "
                                  f"({m.get(objective)!r}); pick an objective every cell reports")
            passes[name].append(float(v))
            for k in ("nfe_per_image", "sec_per_image"):
                if m.get(k) is not None:
                    cost[name][k].append(float(m[k]))
        say(f"trial {i}: {objective} euler {passes['reference'][-1]:.4g}, fast {passes['fast'][-1]:.4g}  {fixed}")
    for c in cost.values():
        for k in ("nfe_per_image", "sec_per_image"):
            c[k] = sum(c[k]) / len(c[k]) if c[k] else math.nan
    rho, p, best = compare(passes["reference"], passes["fast"], direction)
    return RankingCheck(objective, direction, passes["reference"], passes["fast"], overlays, cost, rho, p, best)


def format_check(r: RankingCheck, solver_set: dict) -> str:
    ref_rank, fast_rank = _ranks(r.reference, r.direction), _ranks(r.fast, r.direction)
    lines = [f"ranking check: {len(r.reference)} trials drawn at random from the space, validation {r.objective} "
             f"({r.direction}); fast = the YAML's set {solver_set}, reference = euler at every level",
             f"{'trial':>5}{'euler':>10}{'rank':>6}{'fast':>10}{'rank':>6}"]
    for i, (a, b) in enumerate(zip(r.reference, r.fast)):
        lines.append(f"{i:>5}{a:>10.4g}{ref_rank[i]:>6}{b:>10.4g}{fast_rank[i]:>6}")
    c, f = r.cost["reference"], r.cost["fast"]
    lines += [f"Spearman rho {r.spearman:+.3f} (p = {r.p_value:.3g}); euler's best trial ranks "
              f"{r.best_rank_fast} of {len(r.fast)} with the fast solver",
              f"network calls per image: euler {c['nfe_per_image']:.1f}, fast {f['nfe_per_image']:.1f} "
              f"({c['nfe_per_image'] / f['nfe_per_image']:.1f}x fewer); sampling s/image: euler "
              f"{c['sec_per_image']:.4f}, fast {f['sec_per_image']:.4f}",
              f"wall time: euler passes {c['wall_s']:.0f} s (training included), fast passes {f['wall_s']:.0f} s"]
    return "\n".join(lines)
