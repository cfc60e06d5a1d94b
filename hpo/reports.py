"""``hpo report``: an HTML and a Markdown report of a search, built from its MLflow records."""

from __future__ import annotations

import base64
import html
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpo.errors import HpoConfigError

PLOTS = ("optimization_history.png", "parallel_coordinates.png", "param_importances.png", "pareto_front.png")


@dataclass
class ReportFiles:
    html: Path
    markdown: Path
    parent_run_id: str


def _rows(client: Any, experiment_id: str, parent_id: str, metric: str, mode: str) -> list[dict[str, Any]]:
    runs = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
                              max_results=50000)
    rows = [{"trial": r.data.tags.get("hpo.trial_id", r.info.run_name), "status": r.data.tags.get("hpo.status", "?"),
             metric: r.data.metrics.get(metric), **{f"param.{k}": v for k, v in sorted(r.data.params.items())}}
            for r in runs]
    sign = -1 if mode == "max" else 1
    return sorted(rows, key=lambda r: (r[metric] is None, sign * (r[metric] or 0.0)))


def build_report(name: str, tracking_uri: str | None = None, out_dir: str | Path = ".",
                 run_id: str | None = None) -> ReportFiles:
    """Write ``<name>-report.html`` and ``.md`` for the newest search of ``name`` (or ``run_id``)
    and attach both to that search's parent run under ``report/``."""
    from mlflow.tracking import MlflowClient

    from hpo.validate import default_tracking_uri

    client = MlflowClient(tracking_uri or default_tracking_uri())
    exp = client.get_experiment_by_name(name)
    if exp is None:
        raise HpoConfigError("report", "must name a search recorded in MLflow (an MLflow experiment)", name)
    if run_id is None:
        parents = client.search_runs([exp.experiment_id], filter_string="tags.`hpo.search` = '" + name + "'",
                                     order_by=["attributes.start_time DESC"], max_results=1)
        if not parents:
            raise HpoConfigError("report", "found no hpo search runs in that MLflow experiment", name)
        run_id = parents[0].info.run_id
    parent = client.get_run(run_id)
    params = parent.data.params
    metric = params.get("metric", "").split(",")[0]
    mode = params.get("mode", "max").split(",")[0]
    rows = _rows(client, exp.experiment_id, run_id, metric, mode)
    best = json.loads(parent.data.tags.get("hpo.best_config", "null"))
    best_value = parent.data.metrics.get(f"best_{metric}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hpo-report-") as tmp:
        available = {a.path for a in client.list_artifacts(run_id)}
        plots = {p: Path(client.download_artifacts(run_id, p, tmp)) for p in PLOTS if p in available}
        title = f"hpo search {name} ({parent.info.run_name})"
        tags = parent.data.tags
        summary = [("searcher", params.get("searcher")), ("scheduler", params.get("scheduler")),
                   ("trials", tags.get("hpo.num_trials")), ("pruned", tags.get("hpo.num_pruned")),
                   ("errored", tags.get("hpo.num_errored")), (f"best {metric} ({mode})", best_value)]
        md = _markdown(title, summary, best, rows, metric, list(plots))
        page = _html(title, summary, best, rows, metric, plots)
    md_path, html_path = out / f"{name}-report.md", out / f"{name}-report.html"
    md_path.write_text(md)
    html_path.write_text(page)
    client.log_artifact(run_id, str(md_path), "report")
    client.log_artifact(run_id, str(html_path), "report")
    return ReportFiles(html_path, md_path, run_id)


def _markdown(title: str, summary: list, best: Any, rows: list[dict[str, Any]], metric: str, plots: list[str]) -> str:
    lines = [f"# {title}", "", *(f"- **{k}**: {v}" for k, v in summary), "", "## Best configuration", "",
             "```json", json.dumps(best, indent=2, default=str), "```", "", "## Leaderboard", ""]
    lines += markdown_table(rows)
    if plots:
        lines += ["", "## Plots", "", *(f"![{p}]({p}) (artifact `{p}` of the parent run)" for p in plots)]
    return "\n".join(lines) + "\n"


def _html(title: str, summary: list, best: Any, rows: list[dict[str, Any]], metric: str, plots: dict[str, Path]) -> str:
    e = html.escape
    imgs = "".join(f"<h3>{e(p)}</h3>{embedded_png(path, p)}" for p, path in plots.items())
    items = "".join(f"<li><b>{e(str(k))}</b>: {e(str(v))}</li>" for k, v in summary)
    return html_page(title, f"<ul>{items}</ul><h2>Best configuration</h2>"
                     f"<pre>{e(json.dumps(best, indent=2, default=str))}</pre><h2>Leaderboard (by {e(metric)})</h2>"
                     f"{html_table(rows)}<h2>Plots</h2>{imgs or '<p>none</p>'}")


# -- the pieces of a report page, shared with the nightly trend report (hpo.trend) ----------------------


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    """A Markdown table of ``rows`` (columns: every key, in first-seen order; None is an empty cell)."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return lines + ["| " + " | ".join(_cell(r.get(c)).replace("|", "\\|") for c in cols) + " |" for r in rows]


def html_table(rows: list[dict[str, Any]]) -> str:
    """An HTML table of ``rows``, as :func:`markdown_table` lays them out."""
    e = html.escape
    cols = list(dict.fromkeys(k for r in rows for k in r))
    body = "".join("<tr>" + "".join(f"<td>{e(_cell(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows)
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
            "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}</style></head><body>"
            f"<h1>{e(title)}</h1>{body}</body></html>")
