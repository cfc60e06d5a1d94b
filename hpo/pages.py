"""The pieces of a self-contained report page: Markdown and HTML tables (with link cells), PNGs
embedded in the page, the page itself. Used by ``hpo report`` (:mod:`hpo.reports`), the
leaderboard (:mod:`hpo.leaderboard`) and the nightly trend (:mod:`hpo.trend`).

Example:
    >>> markdown_table([{"run": Link("ab12", "http://mlflow:5000/#/experiments/1/runs/ab12"), "x": 1}])
    ['| run | x |', '|---|---|', '| [ab12](http://mlflow:5000/#/experiments/1/runs/ab12) | 1 |']
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["Link", "embedded_png", "html_page", "html_table", "markdown_table"]


class Link(NamedTuple):
    """A table cell that links ``text`` to ``url``; without a URL it is the text alone."""

    text: str
    url: str | None = None


def _text(value: Any) -> str:
    if isinstance(value, Link):
        return value.text
    return "" if value is None else str(value)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r))


def markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    """A Markdown table of ``rows`` (columns: every key, in first-seen order; None is an empty cell)."""
    def cell(value: Any) -> str:
        text = _text(value).replace("|", "\\|")
        if isinstance(value, Link) and value.url:
            return f"[{text}]({value.url.replace(')', '%29').replace(' ', '%20')})"
        return text

    cols = _columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return lines + ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]


def html_table(rows: list[dict[str, Any]]) -> str:
    """An HTML table of ``rows``, as :func:`markdown_table` lays them out."""
    e = html.escape

    def cell(value: Any) -> str:
        if isinstance(value, Link) and value.url:
            return f"<a href='{e(value.url)}'>{e(value.text)}</a>"
        return e(_text(value))

    cols = _columns(rows)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{''.join(f'<th>{e(c)}</th>' for c in cols)}</tr>{body}</table>"


def embedded_png(path: Path, alt: str) -> str:
    """An ``<img>`` carrying the PNG file itself (a ``data:`` URI): the page needs no other file."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def html_page(title: str, body: str) -> str:
    """A self-contained HTML page: ``title`` as its title and heading, then ``body`` (HTML)."""
    e = html.escape
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}"
            "img{max-width:100%}</style></head><body>"
            f"<h1>{e(title)}</h1>{body}</body></html>")
