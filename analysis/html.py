"""The report as one static HTML file: tables sortable in place, figures embedded.

Why one file with everything inside: a report is mailed, attached to a ticket
or opened from a cluster's scratch directory, where sibling files, a server or
a CDN are not there.  Figures are PNG data URIs, the sort code is a few lines
of inline JavaScript, the style is inline CSS.  The numbers are the strings
:func:`analysis.render.cells_text` makes for Markdown, CSV and LaTeX, so the
four outputs never disagree; the sort key of a number cell is that number.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from analysis.render import MISSING_MD, _is_numeric, cells_text
from analysis.tables import Table


@dataclass
class Section:
    """One numbered part of the report: a heading, an optional sentence, tables, figures."""

    heading: str
    note: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)   # PNG files, embedded in order


_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1400px;
 padding:0 16px;color:#1d232a;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d8dde3;
 padding-bottom:3px}h3{font-size:15px;margin:18px 0 6px}
.note{color:#4f5b66;font-size:12.5px;max-width:1100px}
.scroll{overflow-x:auto;margin:6px 0 4px}
table{border-collapse:collapse;font-size:12.5px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d8dde3;padding:3px 7px;white-space:nowrap}
th{background:#eef1f4;cursor:pointer;user-select:none;position:sticky;top:0}
th.num,td.num{text-align:right}th:hover{background:#dfe5ea}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tr:nth-child(even) td{background:#f8f9fa}
td.missing{color:#9aa5b1;text-align:center}
figure{margin:10px 0}figure img{max-width:min(100%,960px);border:1px solid #eef1f4}
figcaption{font-size:12px;color:#4f5b66}
ul.facts{padding-left:18px}code{background:#f3f4f6;padding:0 3px;border-radius:3px}
"""

# Click a header to sort by that column; again to reverse.  Number cells carry
# data-v (their value), so "1,000" vs "900" and missing values sort right.
_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[col], v = cell.getAttribute("data-v");
        return v === null ? cell.textContent : (v === "" ? null : parseFloat(v));
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
        var c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def inline(text: str) -> str:
    """Escape text and turn the report's two Markdown marks (**bold**, `code`) into tags."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def table_html(table: Table, sortable: bool = True) -> str:
    """A ``<table>`` with the same strings as the Markdown; numeric cells right-aligned with a sort key."""
    cols = list(table.frame.columns)
    numeric = [_is_numeric(table, c) for c in cols]
    head = "".join(f'<th class="num" scope="col">{html.escape(str(c))}</th>' if num
                   else f'<th scope="col">{html.escape(str(c))}</th>' for c, num in zip(cols, numeric))
    frame_values = [table.frame[c].tolist() for c in cols]
    rows = []
    for i, row in enumerate(cells_text(table)):
        tds = []
        for j, text in enumerate(row):
            if not text:
                tds.append(f'<td class="missing" data-v="">{MISSING_MD}</td>' if numeric[j]
                           else f'<td class="missing">{MISSING_MD}</td>')
            elif numeric[j]:
                tds.append(f'<td class="num" data-v="{float(frame_values[j][i])!r}">{html.escape(text)}</td>')
            else:
                tds.append(f"<td>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    cls = ' class="sortable"' if sortable else ""
    return (f'<div class="scroll"><table{cls} id="t-{html.escape(table.name)}">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def figure_html(png: Path) -> str:
    """The PNG as a data URI, so the report is one file."""
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(png.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(png.stem.replace('_', ' '))}</figcaption></figure>")


def page(title: str, intro: list[str], facts: list[str], header_tables: list[Table],
         sections: list[Section]) -> str:
    """The whole document: title, what was analysed, then each section's tables and figures."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{inline(line)}</p>" for line in intro]
    parts.append("<h2>What was analysed</h2>")
    if header_tables:
        parts.append(table_html(header_tables[0], sortable=False))
    parts.append('<ul class="facts">' + "".join(f"<li>{inline(f)}</li>" for f in facts) + "</ul>")
    for t in header_tables[1:]:
        parts += [f"<h2>{html.escape(t.title)}</h2>", table_html(t, sortable=False)]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.heading)}</h2>")
        if s.note:
            parts.append(f'<p class="note">{inline(s.note)}</p>')
        for t in s.tables:
            parts.append(f"<h3>{html.escape(t.title)}</h3>")
            if t.note:
                parts.append(f'<p class="note">{inline(t.note)}</p>')
            parts.append(table_html(t))
        parts += [figure_html(p) for p in s.figures]
    parts += [f"<script>{_SCRIPT}</script>", "</body></html>"]
    return "\n".join(parts) + "\n"
