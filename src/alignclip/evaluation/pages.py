"""The HTML pieces every report page is built from (eval, compare, the demo): one page frame, one table, one figure.

One place decides how a table marks its best cells and how figures are laid out, so the pages look alike.
"""
from __future__ import annotations

import html
import re
from typing import Sequence

STYLE = ("body{font-family:sans-serif;margin:1.5em 2em;max-width:1500px;color:#222}"
         "table{border-collapse:collapse;margin:.3em 0 1em;font-size:.92em}td,th{border:1px solid #ccc;padding:3px 9px;"
         "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
         "td{white-space:nowrap}td.best{font-weight:bold;background:#e6f4e6}td.text{text-align:left;white-space:normal;overflow-wrap:anywhere;min-width:8em}"
         "p.label{font-size:1.2em;margin:.2em 0 1em}"
         ".figures{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0;flex:1 1 640px;max-width:900px}"
         "figure.wide{flex-basis:100%;max-width:none}img{width:100%;height:auto;border:1px solid #eee}"
         "figcaption{font-size:.95em;color:#444}.note{color:#555;font-size:.95em}.scroll{overflow-x:auto}")
NUMBER = re.compile(r"[-+]?\d[\d.]*(e[-+]?\d+)?( ± [\d.]+)?\**")  # numeric cells align right


def html_page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], best: set[tuple[int, int]] = frozenset(),
               tooltips: Sequence[str] | None = None) -> str:
    """<table> of plain-text cells (escaped here); (row, column) in `best` is bold; tooltips: per header cell."""
    tips = tooltips or [""] * len(header)
    head = "".join(f"<th title=\"{html.escape(t)}\">{html.escape(h)}</th>" if t else f"<th>{html.escape(h)}</th>"
                   for h, t in zip(header, tips))

    def td(r: int, i: int, c: str) -> str:
        css = "best" if (r, i) in best else "" if NUMBER.fullmatch(c) else "text"
        return f"<td class=\"{css}\">{html.escape(c)}</td>" if css else f"<td>{html.escape(c)}</td>"

    body = "".join("<tr>" + "".join(td(r, i, c) for i, c in enumerate(row)) + "</tr>" for r, row in enumerate(rows))
    return f"<div class=\"scroll\"><table><tr>{head}</tr>{body}</table></div>"  # wide tables scroll, never squeeze


def figure_html(src: str, caption: str, width: int | None = None) -> str:
    """One figure with its caption (src relative to the page); `width`: its own row, at most that many pixels."""
    css = f' class="wide" style="max-width:{width}px"' if width else ""
    return (f"<figure{css}><img src=\"{html.escape(src)}\" alt=\"{html.escape(caption)}\">"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def figure_grid(figures: Sequence[str]) -> str:
    """figure_html pieces laid out side by side, wrapping (the `.figures` rule of STYLE)."""
    return f"<div class=\"figures\">{''.join(figures)}</div>"
