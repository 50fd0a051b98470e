"""LaTeX for reports: escaping, and a TextTable (strbench.report.tables) laid out through pandas' Styler
(booktabs) in a `table` or `table*` that fits, with widths estimated by strbench.report.texwidth (no TeX needed)."""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from strbench.report import texwidth
from strbench.report.tables import Cell, TextTable

_LATEX_ESCAPE = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "–": "--",
                 "−": "$-$", "±": r"$\pm$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "<": r"\textless{}",
                 ">": r"\textgreater{}", "|": r"\textbar{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials; Markdown `code` becomes \\texttt{code}."""
    parts = str(text).split("`")
    esc = ["".join(_LATEX_ESCAPE.get(ch, ch) for ch in part) for part in parts]
    return "".join(rf"\texttt{{{e}}}" if i % 2 else e for i, e in enumerate(esc))


def latex_cell(c: Cell) -> str:
    """A cell's LaTeX: escaped, its footnote as a superscript, bold as \\textbf."""
    text = latex_escape(c.text) + (f"$^{{{c.note}}}$" if c.note is not None else "")
    return rf"\textbf{{{text}}}" if c.bold else text


def _cells(t: TextTable, groups: Sequence[int]) -> tuple[list[tuple[str, str]], list[list[str]]]:
    """(group header, column header) and the rows' LaTeX texts of the key columns and the chosen groups."""
    cols = [("", latex_escape(k)) for k in t.keys]
    idx = list(range(len(t.keys)))
    for g in groups:
        head, subs = t.groups[g]
        cols += [(latex_escape(head), latex_escape(s)) for s in subs]
        idx += list(t.group_span(g))
    return cols, [[latex_cell(r[i]) for i in idx] for r in t.rows]


def _block_width(t: TextTable, groups: Sequence[int], size: float | None = None) -> float:
    cols, body = _cells(t, groups)
    spans, j = [], len(t.keys)
    for g in groups:
        head, subs = t.groups[g]
        if head:
            spans.append((j, len(subs), latex_escape(head)))
        j += len(subs)
    return texwidth.tabular_width([[s for _, s in cols]] + body, spans=[spans], size=size or texwidth.FONT_PT)


LATEX_SIZES = ((8.0, r"\footnotesize"), (7.0, r"\scriptsize"))  # pt in a 10 pt document


def _styler_latex(b: TextTable, groups: Sequence[int], env: str, caption: str, label: str, notes: Sequence[str],
                  resize: bool = False, size_cmd: str = r"\footnotesize") -> str:
    """One table environment through pandas' Styler (booktabs rules), the font size `size_cmd`, tabcolsep
    texwidth.TABCOLSEP_PT."""
    cols, data = _cells(b, groups)
    frame = pd.DataFrame(data, columns=pd.MultiIndex.from_tuples(cols))
    if not any(h for h, _ in cols):
        frame.columns = [s for _, s in cols]
    spec = "l" * len(b.keys) + "".join("r" * len(b.groups[g][1]) for g in groups)
    tex = frame.style.hide(axis="index").to_latex(environment=env, hrules=True, multicol_align="c",
                                                  column_format=spec, caption=caption, label=label,
                                                  position="t", position_float="centering")
    lines = tex.splitlines()
    i = lines.index(r"\centering")
    lines[i + 1:i + 1] = [size_cmd, rf"\setlength{{\tabcolsep}}{{{texwidth.TABCOLSEP_PT:g}pt}}"]
    top = lines.index(r"\toprule")
    if any(h for h, _ in cols):  # \cmidrule under each group header
        j, rules = len(b.keys) + 1, ""
        for g in groups:
            n = len(b.groups[g][1])
            if b.groups[g][0]:
                rules += rf"\cmidrule(lr){{{j}-{j + n - 1}}}"
            j += n
        if rules:
            lines.insert(top + 2, rules)
    if b.rule_after:
        mid = lines.index(r"\midrule")
        lines.insert(mid + 1 + b.rule_after, r"\midrule")
    if resize:
        start = next(k for k, ln in enumerate(lines) if ln.startswith(r"\begin{tabular}"))
        end = lines.index(r"\end{tabular}")
        lines[start] = r"\resizebox{\textwidth}{!}{" + lines[start]
        lines[end] = lines[end] + "}"
    if notes:
        end = lines.index(rf"\end{{{env}}}")
        lines[end:end] = [r"\par\smallskip\scriptsize", r" \\ ".join(notes)]
    return "\n".join(lines)


def fit_latex(b: TextTable, caption: str, label: str, notes: Sequence[str] = (), *,
              optional: Sequence[int] = (), optional_note: str = "") -> list[str]:
    """The block as one table that fits: a `table` (column, 241 pt) or else a `table*` (text width, 505 pt),
    trying in order all groups at \\footnotesize, without the `optional` groups (said in `optional_note`) at
    \\footnotesize, then both at \\scriptsize; else split by column group into tables that each fit (as papers
    split wide tables); a group too wide even alone is scaled to the text width. Widths: strbench.report.texwidth.
    Caption, label and notes are LaTeX already."""
    everything = list(range(len(b.groups)))
    core = [g for g in everything if g not in optional]
    tries = [(everything, notes)]
    if optional and core:
        tries.append((core, [*notes, optional_note] if optional_note else notes))
    for size, cmd in LATEX_SIZES:
        for groups, nts in tries:
            env = texwidth.environment_for(_block_width(b, groups, size))
            if env:
                return [_styler_latex(b, groups, env, caption, label, nts, size_cmd=cmd)]
    size, cmd = LATEX_SIZES[0]
    out = []
    for g in everything:
        w = _block_width(b, [g], size)
        env = texwidth.environment_for(w) or "table*"
        part = f" ({latex_escape(b.groups[g][0] or ', '.join(b.groups[g][1]))})"
        out.append(_styler_latex(b, [g], env, caption + part, f"{label}-{g + 1}", notes if g == everything[-1] else (),
                                 resize=texwidth.environment_for(w) is None, size_cmd=cmd))
    return out
