"""``hpo report``: an HTML and a Markdown report of a search, built from its MLflow records.

The HTML page is one self-contained file (every plot embedded); the Markdown file links the plots,
written next to it in ``<name>-report-plots/``. Both carry the search's summary, its best
configuration, the leaderboard (:mod:`hpo.leaderboard`) and every PNG at the top level of the
search's parent run (the plots the search logged, in :data:`PLOT_ORDER`, then by name).
"""

from __future__ import annotations

import html
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpo.errors import HpoConfigError
from hpo.leaderboard import Leaderboard, sig
from hpo.pages import embedded_png, html_page

# the plots a search logs, in the order a report shows them; any other PNG of the parent run follows by name
PLOT_ORDER = ("optimization_history.png", "learning_curves.png", "parallel_coordinates.png",
              "param_importances.png", "pareto_front.png")


@dataclass
class ReportFiles:
    html: Path
    markdown: Path
    parent_run_id: str
    plots: list[Path]  # the PNGs the Markdown file links (in ``<name>-report-plots/``)


def plot_names(artifact_paths: list[str]) -> list[str]:
    """The PNGs among a run's top-level artifact paths, in the order a report shows them.

    Example:
        >>> plot_names(["summary.json", "zeta.png", "pareto_front.png", "optimization_history.png"])
        ['optimization_history.png', 'pareto_front.png', 'zeta.png']
    """
    pngs = [p for p in artifact_paths if p.lower().endswith(".png") and "/" not in p]
    rank = {name: i for i, name in enumerate(PLOT_ORDER)}
    return sorted(pngs, key=lambda p: (rank.get(p, len(rank)), p))


def build_report(name: str, tracking_uri: str | None = None, out_dir: str | Path = ".",
                 run_id: str | None = None) -> ReportFiles:
    """Write ``<name>-report.html`` and ``.md`` (with its plots in ``<name>-report-plots/``) for the
    newest search of ``name`` (or ``run_id``) and attach them to that search's parent run under
    ``report/``."""
    from mlflow.tracking import MlflowClient

    from hpo.validate import default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    client = MlflowClient(uri)
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
    metrics = params.get("metric", "").split(",")
    modes = params.get("mode", "max").split(",")
    children = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
                                  max_results=50000)
    board = Leaderboard.from_runs(children, metrics, modes, uri, exp.experiment_id)
    best = json.loads(parent.data.tags.get("hpo.best_config", "null"))
    best_value = parent.data.metrics.get(f"best_{metrics[0]}")
    out = Path(out_dir)
    plots_dir = out / f"{name}-report-plots"
    if plots_dir.exists():
        shutil.rmtree(plots_dir)  # a report written again shows only what the run has now
    plots_dir.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="hpo-report-") as tmp:
        names = plot_names([a.path for a in client.list_artifacts(run_id) if not a.is_dir])
        plots = [Path(shutil.copy(client.download_artifacts(run_id, p, tmp), plots_dir / p)) for p in names]
    title = f"hpo search {name} ({parent.info.run_name})"
    tags = parent.data.tags
    summary = [("searcher", params.get("searcher")), ("scheduler", params.get("scheduler")),
               ("trials", tags.get("hpo.num_trials")), ("pruned", tags.get("hpo.num_pruned")),
               ("errored", tags.get("hpo.num_errored")),
               (f"best {metrics[0]} ({modes[0]})", sig(best_value) if best_value is not None else None)]
    md_path, html_path = out / f"{name}-report.md", out / f"{name}-report.html"
    md_path.write_text(_markdown(title, summary, best, board, [f"{plots_dir.name}/{p.name}" for p in plots]))
    html_path.write_text(_html(title, summary, best, board, plots))
    client.log_artifact(run_id, str(md_path), "report")
    client.log_artifact(run_id, str(html_path), "report")
    client.log_artifacts(run_id, str(plots_dir), f"report/{plots_dir.name}")
    return ReportFiles(html_path, md_path, run_id, plots)


def _markdown(title: str, summary: list, best: Any, board: Leaderboard, plots: list[str]) -> str:
    lines = [f"# {title}", "", *(f"- **{k}**: {v}" for k, v in summary), "", "## Best configuration", "",
             "```json", json.dumps(best, indent=2, default=str), "```", "",
             f"## Leaderboard (by {board.metric})", "", *board.markdown()]
    if plots:
        lines += ["", "## Plots", "", *(f"![{Path(p).stem}]({p})" for p in plots)]
    return "\n".join(lines) + "\n"


def _html(title: str, summary: list, best: Any, board: Leaderboard, plots: list[Path]) -> str:
    e = html.escape
    imgs = "".join(f"<h3>{e(p.stem)}</h3>{embedded_png(p, p.stem)}" for p in plots)
    items = "".join(f"<li><b>{e(str(k))}</b>: {e(str(v))}</li>" for k, v in summary)
    return html_page(title, f"<ul>{items}</ul><h2>Best configuration</h2>"
                     f"<pre>{e(json.dumps(best, indent=2, default=str))}</pre>"
                     f"<h2>Leaderboard (by {e(board.metric)})</h2>{board.html()}"
                     f"<h2>Plots</h2>{imgs or '<p>none</p>'}")
