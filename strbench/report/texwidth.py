"""Width of a LaTeX tabular, estimated without TeX, so reports can pick `table` or `table*` and tests can check it.

How: every cell's text is measured with the advance widths of the Computer Modern fonts that ship with
matplotlib (cmr10 / cmtt10, the BaKoMa TrueType copies of Knuth's fonts, whose advances are TeX's own: "0"
5.00 pt, "M" 9.16 pt, "%" 8.33 pt at 10 pt), scaled to the table's font size. \textbf is set in cmbx10, which
matplotlib does not ship (its cmb10 is the narrower non-extended bold): bold text counts as cmr10 x 1.15
(cmbx10's digits are 5.75 pt against cmr10's 5.00). A column
is as wide as its widest cell plus 2 \\tabcolsep; a \\multicolumn cell widens its columns when it is wider
than them. TeX's smaller sizes use their own design sizes (cmr8 at \\footnotesize), which are a few percent
wider than cmr10 scaled down; `MARGIN` (8%) covers that, kerning and ligatures. The LaTeX understood is what
strbench's renderers write: \\textbf{}, \\texttt{}, \\emph{}, $^{k}$, $\\uparrow$/$\\downarrow$, $-$, \\%, --.

Widths the checks use (the usual two-column paper, e.g. CVPR/ICCV): \\columnwidth 241 pt (3.33 in),
\\textwidth 505 pt (7 in).
"""
from __future__ import annotations

import functools
import os
import re

COLUMN_PT = 241.0
TEXT_PT = 505.0
MARGIN = 1.08
FONT_PT = 8.0  # \footnotesize in a 10 pt document
TABCOLSEP_PT = 3.0  # what the renderers set (\setlength{\tabcolsep}{3pt})

_FONTS = {"rm": "cmr10.ttf", "tt": "cmtt10.ttf"}
BOLD = 1.15  # cmbx10 / cmr10 advance ratio of the digits
_MATH_PT = {r"\uparrow": 5.0, r"\downarrow": 5.0, "-": 7.78 + 2 * 2.22, r"\pm": 7.78 + 2 * 2.22}  # at 10 pt
_TOKEN = re.compile(r"\\textbf\{([^{}]*)\}|\\texttt\{([^{}]*)\}|\\emph\{([^{}]*)\}|\$\^\{([^{}]*)\}\$"
                    r"|\$([^$]*)\$|\\([%&#_$])|(--)|\\[A-Za-z]+\{\}|\\([{}])")


@functools.lru_cache(maxsize=None)
def _font(kind: str):
    import matplotlib
    from matplotlib.ft2font import FT2Font

    f = FT2Font(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", _FONTS[kind]))
    f.set_size(10, 72)
    return f


@functools.lru_cache(maxsize=4096)
def _advance(ch: str, kind: str) -> float:
    """Advance width of one character at 10 pt (pt); a glyph the font lacks counts as 0.5 em."""
    f = _font(kind)
    if ord(ch) not in f.get_charmap():
        return 5.0
    return f.load_char(ord(ch)).linearHoriAdvance / 65536


def _plain(text: str, kind: str) -> float:
    return sum(_advance(c, kind) for c in text)


def text_width(latex: str, size: float = FONT_PT) -> float:
    """Estimated width in pt of one line of LaTeX text at `size` pt (see the module docstring)."""
    w10, pos = 0.0, 0
    for m in _TOKEN.finditer(latex):
        w10 += _plain(latex[pos:m.start()], "rm")
        bf, tt, em, sup, math, esc, dash, brace = m.groups()
        if bf is not None:
            w10 += BOLD * _plain(bf, "rm")
        elif tt is not None:
            w10 += _plain(tt, "tt")
        elif em is not None:
            w10 += _plain(em, "rm") * 1.02
        elif sup is not None:
            w10 += 0.7 * _plain(sup, "rm")  # \scriptstyle
        elif math is not None:
            w10 += _MATH_PT.get(math.strip(), _plain(math, "rm"))
        elif esc is not None:
            w10 += _advance(esc, "rm") if esc != "_" else 5.0
        elif dash is not None:
            w10 += 5.0  # en dash
        elif brace is not None:
            w10 += 5.0
        else:
            w10 += 5.0
        pos = m.end()
    w10 += _plain(latex[pos:], "rm")
    return w10 * size / 10.0 * MARGIN


def tabular_width(rows: list[list[str]], *, spans: list[list[tuple[int, int, str]]] = (), size: float = FONT_PT,
                  tabcolsep: float = TABCOLSEP_PT) -> float:
    """Width in pt of a tabular whose body/header rows are `rows` (LaTeX cell texts, one list per row) and
    whose spanning header cells are `spans` (rows of (first column, number of columns, text))."""
    n = max(len(r) for r in rows)
    cols = [0.0] * n
    for r in rows:
        for j, cell in enumerate(r):
            cols[j] = max(cols[j], text_width(cell, size))
    widths = [c + 2 * tabcolsep for c in cols]
    for row in spans:
        for first, count, text in row:
            need = text_width(text, size) + 2 * tabcolsep
            have = sum(widths[first:first + count])
            if need > have:
                extra = (need - have) / count
                for j in range(first, first + count):
                    widths[j] += extra
    return sum(widths)


def environment_for(width: float) -> str | None:
    """`table` when the tabular fits one column, `table*` when it fits the text width, else None."""
    return "table" if width <= COLUMN_PT else "table*" if width <= TEXT_PT else None
