"""strbench command line: parse and dispatch, nothing else (every command is one library call)."""
from __future__ import annotations

import argparse
import sys

from strbench.errors import StrbenchError


def build_parser() -> argparse.ArgumentParser:
    from strbench import __version__
    from strbench.cli import bench, ls, report, run, schedule, tune

    parser = argparse.ArgumentParser(prog="strbench", description=__doc__)
    parser.add_argument("--version", action="version", version=f"strbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (run.add_run, run.add_validate, ls.add_ls, report.add_report, bench.add_rescore, tune.add_tune,
                schedule.add_schedule, bench.add_bench):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from strbench.experiment.launch import split_slurm_args

    try:
        argv, slurm = split_slurm_args(list(sys.argv[1:] if argv is None else argv))
    except StrbenchError as e:
        print(f"strbench: error: {e}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    args.slurm = slurm
    try:
        return int(args.func(args) or 0)
    except StrbenchError as e:  # user-facing errors: one line, exit 2
        print(f"strbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("strbench: interrupted", file=sys.stderr)
        return 130

