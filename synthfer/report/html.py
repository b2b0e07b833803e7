"""report.html: one self-contained page. Every image is a data: URI and the style sheet is inline,
so the file can be mailed, archived or opened offline and shows the same thing; nothing in it
points outside itself (no links, scripts, fonts or remote images)."""

from __future__ import annotations

import base64
import html
import re

from synthfer.report.tables import Section

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05em; margin-top: 1.5em; }
table { border-collapse: collapse; font-size: 0.8em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
p.note { color: #555; font-size: 0.85em; margin: 0.3em 0; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.sheet { overflow-x: auto; } .sheet img { max-width: none; }
nav a { margin-right: 1em; }
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _table(section: Section) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in section.header)
    body = "\n".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in section.rows)
    note = f'<p class="note">{e(section.note)}</p>' if section.note else ""
    return (f'<h3 id="{_slug(section.title)}">{e(section.title)}</h3>\n{note}\n'
            f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>")


def page(title: str, summary: list[str], plots: list[tuple[str, str, bytes]], sections: list[Section],
         compare: list[Section], sheets: list[tuple[str, bytes]]) -> str:
    """plots: (heading, description, png); sheets: (caption, png)."""
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{e(title)}</title>", f"<style>{_CSS}</style>", "</head><body>", f"<h1>{e(title)}</h1>"]
    parts += [f"<p>{e(line)}</p>" for line in summary]
    nav = [("plots", "Plots"), ("tables", "Tables")] + ([("compare", "Comparison")] if compare else []) \
        + ([("sheets", "Contact sheets")] if sheets else [])
    parts.append("<nav>" + "".join(f'<a href="#{a}">{e(t)}</a>' for a, t in nav) + "</nav>")
    parts.append('<h2 id="plots">Plots</h2>')
    for heading, description, png in plots:
        parts += [f"<h3>{e(heading)}</h3>", f'<p class="note">{e(description)}</p>',
                  f'<img src="{data_uri(png)}" alt="{e(heading)}">']
    parts.append('<h2 id="tables">Tables</h2>')
    parts += [_table(s) for s in sections]
    if compare:
        parts.append('<h2 id="compare">Comparison</h2>')
        parts += [_table(s) for s in compare]
    if sheets:
        parts.append('<h2 id="sheets">Contact sheets</h2>')
        for caption, png in sheets:
            parts += [f"<h3>{e(caption)}</h3>",
                      f'<div class="sheet"><img src="{data_uri(png)}" alt="{e(caption)}"></div>']
    parts.append("</body></html>\n")
    return "\n".join(parts)
