"""Reports from tracked runs: the paper's Tables 1-3, Fig. 8, paired comparisons, the paper's claims, quality
against compute and a static HTML page, with the paper's numbers beside the measured ones.

Modules by concern (data flows down this list):
- `reference`  the paper's numbers (reports/paper_reference.yaml), its tables' layout, the default experiments.
- `load`       where to read (an experiment YAML's tracking settings or strbench.contract's defaults), the
               selected runs (strbench.selection) and their artifacts, through strbench.tracking (lazily: this
               package never imports mlflow); the assembled data of each report.
- `build`      pure: runs -> ReportTable (the paper's layout), the tidy long frame, paired comparisons
               (strbench.paired), the frontier points.
- `tables`     every table as one format-free TextTable; `render` turns it into Markdown, LaTeX (`latex`,
               widths by `texwidth`) or HTML; CSV is the tidy data.
- `figures`    Fig. 8 and the frontier (matplotlib figures), saved as PNG and PDF.
- `html`       the self-contained HTML page.
- `outputs`    what one `strbench report` request produces (text, notes, files): the command's library call.

Run selection: by default every FINISHED cell run of the experiment counts, pooled over invocations (parent
runs) by cell identity (the latest FINISHED run of each cell hash); `run` (a parent run id or unique prefix),
`profile` (the parent's profile) and `since` (cell runs started at or after a date) narrow it. What was used
(parent ids, dates, profiles) is part of every output.
"""
from strbench.report.build import (DETAIL_COLUMNS, FRONTIER_COLUMNS, MISSING, TIDY_COLUMNS, ReportTable, Row,
                                   build_table, describe_data, frontier_frame, mask_sets_warning,
                                   mixed_configurations, other_mask_sets, paired_for_table, paired_notes,
                                   table_row_labels, tidy_frame)
from strbench.report.figures import figure8, figure_frontier, save_figure
from strbench.report.latex import fit_latex, latex_escape
from strbench.report.load import (TableReport, claims_report, frontier_report, load_kl_trajectories, load_per_image,
                                  load_selection, resolve_source, table_report)
from strbench.report.outputs import Output, report
from strbench.report.reference import (CASE_ORDER, FIGURE8_EXPERIMENT, FRONTIER_EXPERIMENT, METRICS, TABLES,
                                       VARIANT_ORDER, MetricSpec, TableSpec, load_reference)
from strbench.report.render import (CSV_FLOAT, PAIRED_CSV_COLUMNS, RENDERERS, claims_latex, claims_markdown,
                                    frontier_markdown, paired_csv, paired_latex, paired_markdown, to_csv, to_latex,
                                    to_markdown)
from strbench.report.tables import NA, Cell, TextTable
from strbench.selection import Selection, SelectionError, select_runs

__all__ = ["CASE_ORDER", "CSV_FLOAT", "DETAIL_COLUMNS", "FIGURE8_EXPERIMENT", "FRONTIER_COLUMNS",
           "FRONTIER_EXPERIMENT", "METRICS", "MISSING", "NA", "PAIRED_CSV_COLUMNS", "RENDERERS", "TABLES",
           "TIDY_COLUMNS", "VARIANT_ORDER", "Cell", "MetricSpec", "Output", "ReportTable", "Row", "Selection",
           "SelectionError", "TableReport", "TableSpec", "TextTable", "build_table", "claims_latex",
           "claims_markdown", "claims_report", "describe_data", "figure8", "figure_frontier", "fit_latex",
           "frontier_frame", "frontier_markdown", "frontier_report", "latex_escape", "load_kl_trajectories",
           "load_per_image", "load_reference", "load_selection", "mask_sets_warning", "mixed_configurations",
           "other_mask_sets", "paired_csv", "paired_for_table", "paired_latex", "paired_markdown", "paired_notes",
           "report", "resolve_source", "save_figure", "select_runs", "table_report", "table_row_labels",
           "tidy_frame", "to_csv", "to_latex", "to_markdown"]
