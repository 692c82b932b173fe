"""Table → Markdown / CSV / LaTeX text, all from one formatted copy of the numbers.

Why one formatting step: the issue requires the three outputs to show the same
numbers.  :func:`cells_text` turns a table's frame into strings once (each float
column with its format spec); Markdown, CSV and LaTeX only differ in the
punctuation around those strings.  The CSV therefore carries the rounded values
a reader sees in the report (full precision would differ from the Markdown).
No ``tabulate`` dependency: a pipe table is twenty lines.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd

from analysis.tables import Table

MISSING_MD = "–"


def _fmt_value(v: object, spec: str | None) -> str:
    if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if spec is None:
            return f"{v:.2f}"
        text = format(float(v), spec)
        if text.startswith("-") and float(text) == 0:
            text = text[1:]  # "-0.00" reads as a sign that is not there
        return text
    return str(v)


def cells_text(table: Table) -> list[list[str]]:
    """Every cell of the table as the string all renderers print ("" = missing)."""
    cols = list(table.frame.columns)
    out = []
    columns = [table.frame[c].tolist() for c in cols]
    for i in range(len(table.frame)):
        out.append([_fmt_value(columns[j][i], table.formats.get(c)) for j, c in enumerate(cols)])
    return out


def _is_numeric(table: Table, col: str) -> bool:
    return pd.api.types.is_numeric_dtype(table.frame[col]) and not pd.api.types.is_bool_dtype(table.frame[col])


def to_markdown(table: Table) -> str:
    """A GitHub pipe table (numbers right-aligned); missing values as an en dash."""
    cols = [str(c) for c in table.frame.columns]
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in cols) + " |"]
    lines.append("|" + "|".join("---:" if _is_numeric(table, c) else "---" for c in table.frame.columns) + "|")
    for row in cells_text(table):
        lines.append("| " + " | ".join(esc(v) if v else MISSING_MD for v in row) + " |")
    return "\n".join(lines)


def to_csv(table: Table) -> str:
    """CSV with the same strings as the Markdown (missing = empty field)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([str(c) for c in table.frame.columns])
    w.writerows(cells_text(table))
    return buf.getvalue()


_TEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "Δ": r"$\Delta$", "≥": r"$\geq$", "×": r"$\times$", "–": "--", "∅": r"$\emptyset$",
}


def tex_escape(text: str) -> str:
    """Escape LaTeX specials (and the few non-ASCII symbols the headers use)."""
    return "".join(_TEX.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A booktabs ``table`` (needs the booktabs and adjustbox packages); missing as --."""
    cols = list(table.frame.columns)
    align = "".join("r" if _is_numeric(table, c) else "l" for c in cols)
    lines = [
        r"\begin{table}[htbp]",
        r"\centering",
        r"\caption{" + tex_escape(table.title) + "}",
        r"\label{tab:" + table.name.replace("_", "-") + "}",
        r"\begin{adjustbox}{max width=\linewidth}",
        r"\begin{tabular}{" + align + "}",
        r"\toprule",
        " & ".join(tex_escape(str(c)) for c in cols) + r" \\",
        r"\midrule",
    ]
    for row in cells_text(table):
        lines.append(" & ".join(tex_escape(v) if v else "--" for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{adjustbox}", r"\end{table}"]
    return "\n".join(lines)
