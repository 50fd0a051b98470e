"""`strbench report`: tables, figures, paired comparisons, claims and the HTML page from tracked runs."""
from __future__ import annotations

import os
import sys

from strbench.contract import DEFAULT_URI
from strbench.errors import StrbenchError


def add_report(sub):
    p = sub.add_parser("report", help="render the paper's tables/figures, paired tests, claims, HTML from tracked runs",
                       description="Reports pool every FINISHED cell run of the experiment (latest per cell hash, "
                                   "across invocations) and say which runs they used; --run/--profile/--since "
                                   "narrow that.")
    p.add_argument("config", nargs="?", default=None, metavar="YAML",
                   help="an experiment YAML: read its runs (its tracking.uri and MLflow experiment)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--table", type=int, choices=[1, 2, 3])
    g.add_argument("--figure", choices=["8", "frontier"], help="8: KL along the reverse process; frontier: PSNR "
                                                               "(and FID) against NFE per image")
    g.add_argument("--claims", action="store_true", help="the paper's claims and whether the runs support them")
    g.add_argument("--html", default=None, metavar="DIR", help="write a self-contained DIR/index.html report")
    p.add_argument("--paired", action="store_true", help="with --table: paired comparisons of its measured rows "
                                                         "(bootstrap interval, Wilcoxon p) instead of the table")
    p.add_argument("--experiment", default=None,
                   help="MLflow experiment name (default: the YAML's, else the table's experiment)")
    p.add_argument("--run", default=None, metavar="PARENT_ID", help="only the cells of this parent run (id or prefix)")
    p.add_argument("--profile", default=None, help="only the cells of parent runs of this profile (e.g. cpu)")
    p.add_argument("--since", default=None, metavar="DATE", help="only cell runs started at/after DATE "
                                                                 "(e.g. 2024-05-01, UTC)")
    p.add_argument("--tracking-uri", default=None,
                   help=f"MLflow tracking URI (default: the YAML's tracking.uri, else {DEFAULT_URI})")
    p.add_argument("--format", choices=["markdown", "latex", "csv"], default="markdown")
    p.add_argument("--out", default=None, help="write to this folder (e.g. reports/) as well as printing")
    p.set_defaults(func=_cmd_report)


def _cmd_report(a) -> int:
    if a.paired and a.table is None:
        raise StrbenchError("--paired compares the rows of one table: add --table 1|2|3")
    return report_command(a.table, a.figure, a.experiment, a.tracking_uri, a.format, a.out, run=a.run,
                          profile=a.profile, since=a.since, paired=a.paired, claims=a.claims, html=a.html,
                          config=a.config)


def report_command(table: int | None, figure: int | str | None, experiment: str | None, tracking_uri: str | None,
                   fmt: str = "markdown", out: str | None = None, *, run: str | None = None,
                   profile: str | None = None, since: str | None = None, paired: bool = False,
                   claims: bool = False, html: str | None = None, config: str | None = None) -> int:
    """Print table `table` (its paired comparisons with `paired`), a figure's files (8 or "frontier"), the
    paper's claims, or write the HTML page to `html`; the runs come from `experiment` / `tracking_uri`, else
    from the experiment YAML `config`'s tracking settings, else the defaults (strbench.report.load)."""
    from strbench import report

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no download bars in the report
    uri, experiment = report.resolve_source(config, experiment, tracking_uri, profile)
    select = {"run": run, "profile": profile, "since": since}
    if html is not None:
        from strbench.report.html import write_report

        print(write_report(html, uri, experiment=experiment, select=select))
        return 0
    o = report.report(table, figure, claims=claims, experiment=experiment, uri=uri, select=select, paired=paired,
                      fmt=fmt, out=out)
    print(o.text, end="")
    for p in o.paths:
        print(p, file=sys.stderr if o.paths_to_stderr else sys.stdout)
    for line in o.notes:
        print(line, file=sys.stderr)
    return 0
