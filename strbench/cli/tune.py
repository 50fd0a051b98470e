"""`strbench tune`: an Optuna study over an experiment's settings, or the export of its best overlay."""
from __future__ import annotations

import sys


def add_tune(sub):
    p = sub.add_parser("tune", help="Optuna study over the theta/delta schedules")
    p.add_argument("config")
    p.add_argument("--storage", default=None, help="optuna storage URL (default from the YAML; sqlite/journal)")
    p.add_argument("--worker", action="store_true", help="join an existing study instead of creating it")
    p.add_argument("--n-trials", type=int, default=None, help="trials for this process (default from the YAML)")
    p.add_argument("--export", default=None, metavar="YAML", help="write the best trial's overlay and exit")
    p.add_argument("--check-ranking", type=int, default=None, metavar="K",
                   help="evaluate K random trials with the YAML's solver keys and with euler; print Spearman's rho "
                        "of the two rankings and the cost of each (no study is written)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_tune)


def _cmd_tune(a) -> int:
    return tune_command(a.config, storage=a.storage, worker=a.worker, n_trials=a.n_trials, export=a.export,
                        quiet=a.quiet, check_ranking=a.check_ranking)


def tune_command(config: str, storage: str | None = None, worker: bool = False, n_trials: int | None = None,
                 export: str | None = None, quiet: bool = False, check_ranking: int | None = None) -> int:
    """`strbench tune X.yaml [--storage URL] [--worker] [--n-trials K] [--export best.yaml] [--check-ranking K]`."""
    from strbench import tune
    from strbench.errors import ConfigError

    spec = tune.load_spec(config)
    if n_trials is not None and n_trials < 1:
        raise ConfigError(f"--n-trials must be >= 1, got {n_trials}")
    if check_ranking is not None:
        from strbench.tune.ranking import format_check, ranking_check, solver_keys

        tune.check_spec(spec)  # every key path, before any training
        final_only = spec.model_copy(update={"study": spec.study.model_copy(update={"report_at": []})})
        evaluator = tune.runner_evaluator(final_only)  # final values only: no learning-curve passes
        r = ranking_check(spec, check_ranking, lambda ov: evaluator.evaluate(ov, lambda step, m: None),
                          say=None if quiet else _to_stderr)
        print(format_check(r, solver_keys(spec.set)))
        return 0
    if export is not None:
        path, best = tune.export_best(spec, export, storage=storage, tune_path=config)
        if not quiet:
            print(f"wrote {path}: trial {best.number} values {list(best.values)}")
        return 0
    s = tune.run_study(spec, storage=storage, worker=worker, n_trials=n_trials, say=None if quiet else _to_stderr)
    if not quiet:
        best = "none" if s.best_number is None else f"trial {s.best_number} {s.best_values}"
        print(f"study {s.study_name!r} ({s.storage}): this process ran {s.ran} trial(s); "
              f"{s.n_complete} complete, {s.n_pruned} pruned, {s.n_failed} failed, {s.n_running} running; "
              f"best {best}")
        print(f"export the best overlay: strbench tune {config} --export best.yaml")
    return 0


def _to_stderr(line: str) -> None:
    """The study's progress lines (study opened, each trial, waiting for workers)."""
    print(line, file=sys.stderr, flush=True)
