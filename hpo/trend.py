"""``hpo nightly-report``: the trend across the nights of ``hpo nightly``.

One row per night (date order), read from each night's ``night.json``: its lineage (and whether it
started a new one), trials that night and in the lineage's study, the night's best metric, the
champion/challenger decision and scores, the champion after the night, the data fingerprint
(marked where it differs from the night before), the exit code and why the search stopped. Written
as ``trend.md``, ``trend.html`` (self-contained: the plot is embedded) and ``trend.png``, and
logged under ``trend/`` on every night's MLflow parent run (the same paths each time, so a later
report replaces an earlier one).

Older ``night.json`` files (before champion promotion) lack the decision and scores: their cells
stay empty. A night that has not ended (running, or killed) shows what its record knows.

Example (``hpo nightly`` at the end of a night)::

    trend = write_trend(storage_path, name)
    log_trend(tracking_uri, trend["files"], trend["parent_run_ids"])
"""

from __future__ import annotations

import html
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hpo.errors import HpoConfigError
from hpo.pages import embedded_png, html_page, html_table, markdown_table
from hpo.plots import pyplot
from hpo.rundir import NIGHT_FILE, night_run_dirs, read_json

__all__ = ["ARTIFACT_DIR", "log_trend", "nightly_report", "trend_dir", "trend_rows", "write_trend"]

log = logging.getLogger("hpo")

ARTIFACT_DIR = "trend"  # where the files go on each night's MLflow parent run
DATA_CHANGED = "data changed"
NEW_LINEAGE = "new"


def trend_dir(storage_path: str | os.PathLike[str], name: str) -> Path:
    """The default output directory: ``<storage_path>/<name>-trend``."""
    return Path(storage_path).resolve() / f"{name}-trend"


def trend_rows(storage_path: str | os.PathLike[str], name: str) -> list[dict[str, Any]]:
    """One dict per night of ``name`` under ``storage_path``, in date order (see the module's doc).

    Raises:
        HpoConfigError: no night of that name is there.
    """
    rows: list[dict[str, Any]] = []
    for date, run_dir in night_run_dirs(storage_path, name).items():
        record = read_json(run_dir / NIGHT_FILE)
        if not isinstance(record, dict):
            continue  # a directory named like a night that hpo nightly did not write
        s = {**record, **(record.get("summary") or {})}  # a night that has not ended has no summary yet
        prev = rows[-1] if rows else None
        fingerprint = s.get("data_fingerprint")
        metric = s.get("metric")
        rows.append({
            "night": date, "lineage": s.get("lineage"), "new_lineage": bool(s.get("new_lineage")),
            "lineage_changed": prev is not None and s.get("lineage") != prev["lineage"],
            "previous_lineage": s.get("previous_lineage"),
            "trials_this_night": s.get("trials_this_night"), "trials_in_study": s.get("trials_in_study"),
            "best_metric": s.get("best_metric"), "metric": metric[0] if isinstance(metric, list) else metric,
            "mode": s["mode"][0] if isinstance(s.get("mode"), list) else s.get("mode"),
            "decision": s.get("decision"), "dry_run": bool(s.get("dry_run")),
            "challenger_score": s.get("challenger_score"), "challenger_version": s.get("challenger_version"),
            "champion_score": s.get("champion_score"), "compared_on": s.get("compared_on"),
            "champion_before": s.get("champion_before"), "champion_after": s.get("champion_after"),
            "registered_model": s.get("registered_model"), "data_fingerprint": fingerprint,
            "data_changed": prev is not None and fingerprint != prev["data_fingerprint"],
            "exit_code": record.get("exit_code"), "stop_reason": s.get("stop_reason"),
            "ended": "summary" in record, "parent_run_id": s.get("parent_run_id"), "run_dir": str(run_dir),
        })
    if not rows:
        raise HpoConfigError("name", f"must name an experiment with nights of `hpo nightly` under "
                             f"{Path(storage_path).resolve()} (directories <name>-YYYY-MM-DD with {NIGHT_FILE})",
                             name)
    return rows


def _promoted(row: dict[str, Any]) -> bool:
    """The night moved the champion alias (a dry run decides without moving it)."""
    return row["decision"] == "promoted" and not row["dry_run"]


def _num(v: Any) -> str | None:
    return f"{v:.6g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def _table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as the report shows them: column title -> cell text."""
    metric = next((f"best {r['metric']} ({r['mode']})" for r in rows if r["metric"]), "best metric")
    out = []
    for r in rows:
        data = r["data_fingerprint"] or "none"
        counts = f"{r['trials_this_night']} / {r['trials_in_study']}" if r["trials_this_night"] is not None else None
        out.append({
            "night": r["night"], "lineage": r["lineage"], "new lineage": NEW_LINEAGE if r["new_lineage"] else "",
            "trials night / study": counts, metric: _num(r["best_metric"]),
            "decision": f"{r['decision']} (dry run)" if r["decision"] and r["dry_run"] else r["decision"],
            "challenger": _num(r["challenger_score"]), "champion": _num(r["champion_score"]),
            "champion after": r["champion_after"],
            "data": f"{data} ({DATA_CHANGED})" if r["data_changed"] else data,
            "exit": r["exit_code"], "stop reason": r["stop_reason"] if r["ended"] else "not ended (running or killed)",
        })
    return out


def _plot(rows: list[dict[str, Any]], title: str, path: Path) -> Path:
    """Best metric per night (a line), promotions (stars), the champion's and the challenger's
    scores when there are any, and vertical marks where the data changed or a new lineage started."""
    plt = pyplot()
    xs = list(range(len(rows)))

    def values(key: str) -> list[float]:
        return [float(r[key]) if isinstance(r[key], (int, float)) else math.nan for r in rows]

    best = values("best_metric")
    fig, ax = plt.subplots(figsize=(9, 4.5))
    metric = next((r["metric"] for r in rows if r["metric"]), "best metric")
    ax.plot(xs, best, "-o", color="tab:blue", label=f"best {metric} of the night")
    promoted = [i for i, r in enumerate(rows) if _promoted(r)]
    if promoted:
        ax.plot(promoted, [best[i] for i in promoted], "*", color="tab:green", markersize=16, label="promoted")
    scored = ax
    if any(not math.isnan(v) for v in values("champion_score") + values("challenger_score")):
        compared = next((r["compared_on"] for r in rows if r["compared_on"]), None) or metric
        scored = ax if compared == metric else ax.twinx()  # scores on another metric get their own axis
        scored.plot(xs, values("champion_score"), "--s", color="tab:orange", label=f"champion score ({compared})")
        scored.plot(xs, values("challenger_score"), ":^", color="tab:green", alpha=0.7,
                    label=f"challenger score ({compared})")
        if scored is not ax:
            scored.set_ylabel(f"{compared} (champion / challenger)")
    for kind, key, style in ((DATA_CHANGED, "data_changed", dict(color="tab:red", linestyle="--")),
                             ("new lineage", "lineage_changed", dict(color="tab:purple", linestyle=":"))):
        for n, i in enumerate(i for i, r in enumerate(rows) if r[key]):
            ax.axvline(i, alpha=0.6, label=kind if n == 0 else None, **style)
    if all(math.isnan(v) for v in best):
        ax.text(0.5, 0.5, "no night has a best metric yet", transform=ax.transAxes, ha="center")
    ax.set_xticks(xs, [r["night"] for r in rows], rotation=30 if len(rows) > 4 else 0)
    ax.set(xlabel="night", ylabel=metric, title=title, xlim=(-0.5, len(rows) - 0.5))
    handles = [h for a in dict.fromkeys((ax, scored)) for h in a.get_legend_handles_labels()[0]]
    scored.legend(handles=handles, loc="best", fontsize="small")  # on the axis drawn last: on top
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_trend(storage_path: str | os.PathLike[str], name: str,
                out_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Write ``trend.md``, ``trend.html`` and ``trend.png`` for every night of ``name`` under
    ``storage_path`` into ``out_dir`` (default :func:`trend_dir`).

    Returns:
        ``{"html", "markdown", "png": Path, "files": [the three], "rows": trend_rows(...),
        "parent_run_ids": [each night's MLflow parent run, without repeats or None]}``.

    Raises:
        HpoConfigError: no night of that name is there.
    """
    rows = trend_rows(storage_path, name)
    out = Path(out_dir) if out_dir is not None else trend_dir(storage_path, name)
    out.mkdir(parents=True, exist_ok=True)
    title = f"hpo nightly trend: {name}"
    png = _plot(rows, title, out / "trend.png")
    table = _table(rows)
    changed = sum(r["data_changed"] for r in rows)
    lineages = len({r["lineage"] for r in rows})
    promoted = sum(_promoted(r) for r in rows)
    facts = [("nights", f"{len(rows)} ({rows[0]['night']} to {rows[-1]['night']})"), ("lineages", lineages),
             ("promotions", promoted), ("nights whose data changed", changed),
             ("registered model", next((r["registered_model"] for r in reversed(rows) if r["registered_model"]),
                                       None)),
             ("storage", Path(storage_path).resolve())]
    legend = (f"`{NEW_LINEAGE}`: the night started a new lineage (a changed search space, or the first night); "
              f"`({DATA_CHANGED})`: its data fingerprint differs from the night before; "
              "champion: the previous champion re-scored on that night's data.")
    md = "\n".join([f"# {title}", "", *(f"- **{k}**: {v}" for k, v in facts if v is not None), "",
                    *markdown_table(table), "", legend, "", "![trend](trend.png)", ""])
    e = html.escape
    items = "".join(f"<li><b>{e(k)}</b>: {e(str(v))}</li>" for k, v in facts if v is not None)
    page = html_page(title, f"<ul>{items}</ul>{html_table(table)}<p>{e(legend)}</p>{embedded_png(png, 'trend')}")
    md_path, html_path = out / "trend.md", out / "trend.html"
    md_path.write_text(md)
    html_path.write_text(page)
    parents = list(dict.fromkeys(r["parent_run_id"] for r in rows if r["parent_run_id"]))
    return {"html": html_path, "markdown": md_path, "png": png, "files": [html_path, md_path, png], "rows": rows,
            "parent_run_ids": parents}


def log_trend(tracking_uri: str, paths: Iterable[str | os.PathLike[str]],
              parent_run_ids: Iterable[str | None]) -> dict[str, str | None]:
    """Log ``paths`` under ``trend/`` on each MLflow parent run (None entries and repeats skipped);
    a file logged again replaces the one there. A run that cannot take them (deleted, another
    store) is reported, not raised: the report must not fail a night.

    Returns:
        run id -> None where logged, else the error.
    """
    runs = list(dict.fromkeys(r for r in parent_run_ids if r))
    if not runs:
        return {}  # nothing to log on: not even a client (it would create an empty SQLite store)
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    files = [str(p) for p in paths]
    done: dict[str, str | None] = {}
    for run_id in runs:
        try:
            for f in files:
                client.log_artifact(run_id, f, ARTIFACT_DIR)
            done[run_id] = None
        except (MlflowException, OSError) as exc:
            log.warning("could not log the trend report on MLflow run %s: %s", run_id, exc)
            done[run_id] = f"{type(exc).__name__}: {exc}"
    return done


def nightly_report(name_or_experiment: str, storage_path: str | None = None, out_dir: str | None = None,
                   tracking_uri: str | None = None, mlflow: bool = True) -> dict[str, Any]:
    """``hpo nightly-report``: :func:`write_trend` for an experiment file (its name and
    ``storage_path``) or a plain name (under ``storage_path``, default ``hpo_results``), then,
    unless ``mlflow`` is False, :func:`log_trend` to ``tracking_uri`` (default: the experiment
    file's, ``MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``).

    Returns:
        what :func:`write_trend` returns, with ``name``, ``storage_path``, ``tracking_uri`` and
        ``logged`` (what :func:`log_trend` returned; empty without MLflow).
    """
    from hpo.config import mask_url
    from hpo.validate import default_tracking_uri, tracking_uri_of

    if name_or_experiment.endswith((".yaml", ".yml")) or Path(name_or_experiment).is_file():
        from hpo.config import load_experiment

        exp = load_experiment(name_or_experiment)
        name, storage = exp.name, storage_path or exp.storage_path
        uri = tracking_uri_of(exp, tracking_uri) if mlflow else None
    else:
        name, storage = name_or_experiment, storage_path or "hpo_results"
        uri = (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()) if mlflow else None
    trend = write_trend(storage, name, out_dir)
    logged = log_trend(uri, trend["files"], trend["parent_run_ids"]) if uri else {}
    return {**trend, "name": name, "storage_path": str(Path(storage).resolve()), "tracking_uri": uri and mask_url(uri),
            "logged": logged}
