"""Plots of a search's results (matplotlib, headless): history, parallel coordinates,
parameter importances and the Pareto front."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

from hpo.results import Results


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the headless Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def optimization_history(results: Results, path: Path) -> Path | None:
    """Each completed trial's value (in trial order) and the best so far."""
    done = [t for t in results.trials if t.status == "completed" and results.metric in t.metrics]
    if not done:
        return None
    plt = pyplot()
    values = [t.metrics[results.metric] for t in done]
    better = max if results.modes[0] == "max" else min
    best = [better(values[: i + 1]) for i in range(len(values))]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(1, len(values) + 1), values, "o", alpha=0.6, label="trial")
    ax.plot(range(1, len(values) + 1), best, "-", label="best so far")
    ax.set(xlabel="completed trial", ylabel=results.metric, title=f"{results.name}: optimization history")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def parallel_coordinates(results: Results, path: Path) -> Path | None:
    """Numeric hyperparameters (min-max scaled) of completed trials, coloured by the metric."""
    done = [t for t in results.trials if t.status == "completed" and results.metric in t.metrics]
    keys = sorted({k for t in done for k, v in t.config.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)})
    keys = [k for k in keys if len({t.config.get(k) for t in done}) > 1]
    if len(done) < 2 or not keys:
        return None
    plt = pyplot()
    lo = {k: min(t.config[k] for t in done if k in t.config) for k in keys}
    hi = {k: max(t.config[k] for t in done if k in t.config) for k in keys}
    vals = [t.metrics[results.metric] for t in done]
    vmin, vmax = min(vals), max(vals)
    cmap = plt.get_cmap("viridis")
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(keys)), 4))
    for t, v in zip(done, vals):
        ys = [(t.config[k] - lo[k]) / ((hi[k] - lo[k]) or 1) if k in t.config else math.nan for k in keys]
        ax.plot(range(len(keys)), ys, color=cmap((v - vmin) / ((vmax - vmin) or 1)), alpha=0.7)
    ax.set_xticks(range(len(keys)), keys, rotation=30)
    ax.set(ylabel="scaled value", title=f"parallel coordinates (colour: {results.metric})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def param_importances(results: Results, path: Path) -> Path | None:
    """Importances from Optuna's default evaluator over completed trials (Optuna searchers only)."""
    study = results.study
    if study is None or len(results.metrics) != 1:
        return None
    from optuna.importance import get_param_importances
    from optuna.trial import TrialState

    if len([t for t in study.trials if t.state == TrialState.COMPLETE]) < 3:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "few trials in some regimes": expected on small searches
            imp = get_param_importances(study)
    except (RuntimeError, ValueError):
        return None  # e.g. a single distinct value per parameter
    if not imp:
        return None
    plt = pyplot()
    names = list(imp)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1.5))
    ax.barh(names, [imp[n] for n in names])
    ax.set(xlabel="importance (Optuna default evaluator)", title="hyperparameter importances")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def pareto_front(results: Results, path: Path) -> Path | None:
    """The first two objectives of completed trials, with the Pareto front highlighted."""
    if len(results.metrics) < 2:
        return None
    m1, m2 = results.metrics[:2]
    done = [t for t in results.trials if t.status == "completed" and m1 in t.metrics and m2 in t.metrics]
    if not done:
        return None
    plt = pyplot()
    front = sorted(results.pareto_front(), key=lambda t: t.metrics[m1])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([t.metrics[m1] for t in done], [t.metrics[m2] for t in done], alpha=0.5, label="trials")
    ax.plot([t.metrics[m1] for t in front], [t.metrics[m2] for t in front], "r-o", label="Pareto front")
    ax.set(xlabel=f"{m1} ({results.modes[0]})", ylabel=f"{m2} ({results.modes[1]})", title="Pareto front")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def all_plots(results: Results, directory: Path) -> list[Path]:
    """Write every plot that applies to these results; return the files written."""
    out = []
    for name, fn in (("optimization_history", optimization_history), ("parallel_coordinates", parallel_coordinates),
                     ("param_importances", param_importances), ("pareto_front", pareto_front)):
        p = fn(results, directory / f"{name}.png")
        if p is not None:
            out.append(p)
    return out


def write_search_files(results: Results, directory: Path) -> list[Path]:
    """What a search logs on its MLflow parent run at the end: the leaderboard (CSV and HTML,
    best first) and every plot that applies."""
    directory = Path(directory)
    table = results.table()
    if len(table) and results.metric in table:
        table = table.sort_values(results.metric, ascending=results.modes[0] == "min", na_position="last")
    table.to_csv(directory / "leaderboard.csv", index=False)
    table.to_html(directory / "leaderboard.html", index=False)
    return [directory / "leaderboard.csv", directory / "leaderboard.html", *all_plots(results, directory)]
