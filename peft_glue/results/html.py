"""report.html beside report.md: the same Markdown rendered (markdown-it-py, tables on), every figure inlined
as base64 PNG and those with an interactive twin (``interactive``) drawn by plotly.js, itself inlined: the one
file opens from disk with no network. Every table sorts by a click on its header."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from string import Template

from markdown_it import MarkdownIt
from plotly.offline import get_plotlyjs

from peft_glue.results.interactive import twin_path

IMAGE = re.compile(r'<img src="([^"]+)"')
FIGURE = re.compile(r'<p><img src="([^"]+)" alt="[^"]*" /></p>')

# Sorting a rendered table by a column: about fifteen lines here against an offline table library (DataTables
# via itables is a 300 kB bundle in every page and would render the tables a second, separate way).
SORT_SCRIPT = """
function sortKey(cell) {
  var text = cell ? cell.textContent.trim() : "";
  var number = text.replace(/,/g, "").replace("\\u2212", "-").match(/^\\[?(-?\\d*\\.?\\d+(e[-+]?\\d+)?)/i);
  return number ? parseFloat(number[1]) : text;
}
function compareKeys(x, y) {
  if (typeof x === typeof y) { return x < y ? -1 : x > y ? 1 : 0; }
  return typeof x === "number" ? -1 : 1;  // numbers before text such as a missing value's dash
}
document.querySelectorAll("table").forEach(function (table) {
  table.classList.add("sortable");
  table.querySelectorAll("thead th").forEach(function (header, column) {
    header.title = "sort by this column";
    header.addEventListener("click", function () {
      var ascending = header.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0];
      Array.from(body.rows).sort(function (a, b) {
        return compareKeys(sortKey(a.cells[column]), sortKey(b.cells[column])) * (ascending ? 1 : -1);
      }).forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1400px; margin: 1em auto; padding: 0 1em; }
table { border-collapse: collapse; display: block; overflow-x: auto; font-size: 0.85em; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; white-space: nowrap; }
thead th { background: #f0f0f0; cursor: pointer; position: sticky; top: 0; }
thead th[aria-sort="ascending"]::after { content: " \\25B2"; }
thead th[aria-sort="descending"]::after { content: " \\25BC"; }
tbody tr:nth-child(even) { background: #fafafa; }
img { max-width: 100%; height: auto; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>$title</title>
<style>$style</style>
$head_script
</head>
<body>
$body
<script>$script</script>
</body>
</html>
""")


def inline_images(body: str, folder: Path) -> str:
    """Each ``<img src="x.png">`` whose file lies in ``folder`` becomes a data URI holding the PNG."""

    def inline(match: re.Match) -> str:
        file = folder / html.unescape(match.group(1))
        if file.suffix != ".png" or not file.is_file():
            return match.group(0)
        data = base64.b64encode(file.read_bytes()).decode("ascii")
        return f'<img src="data:image/png;base64,{data}"'

    return IMAGE.sub(inline, body)


def interactive_figures(body: str, folder: Path) -> tuple[str, int]:
    """Each figure paragraph whose PNG has a plotly twin becomes that figure, the PNG folded below it; the
    count tells whether the page needs plotly.js."""
    count = 0

    def replace(match: re.Match) -> str:
        nonlocal count
        twin = twin_path(folder / html.unescape(match.group(1)))
        if not twin.is_file():
            return match.group(0)
        count += 1
        figure_id = f"interactive-{count}"
        spec = twin.read_text().replace("</", "<\\/")  # no "</script>" inside the script
        return (
            f'<div class="interactive" id="{figure_id}"></div>\n'
            f"<script>(function () {{\nvar figure = {spec};\n"
            f'Plotly.newPlot("{figure_id}", figure.data, figure.layout, {{responsive: true}});\n'
            "})();</script>\n"
            f"<details><summary>static image</summary>{match.group(0)}</details>"
        )

    return FIGURE.sub(replace, body), count


def write_html(report: Path) -> Path:
    """Render ``report.md`` (its figures beside it) to ``report.html`` in the same folder."""
    text = report.read_text()
    body = MarkdownIt("commonmark").enable("table").render(text)
    body, interactive = interactive_figures(body, report.parent)
    title = next((line[2:] for line in text.splitlines() if line.startswith("# ")), report.stem)
    page = PAGE.substitute(
        title=html.escape(title),
        style=STYLE,
        head_script=f"<script>{get_plotlyjs()}</script>" if interactive else "",
        body=inline_images(body, report.parent),
        script=SORT_SCRIPT,
    )
    out = report.with_suffix(".html")
    out.write_text(page)
    return out
