"""Pictures of a search (matplotlib, headless), drawn over every trial: with early stopping most
trials are pruned, and pictures of the completed ones alone say almost nothing.

* ``optimization_history.png``: every trial's value at its last epoch (completed, pruned at its
  rung, cut and errored trials marked apart) and the best so far among completed trials, by
  trial number and by the epochs all trials had run (the compute view);
* ``learning_curves.png``: the metric (and the validation loss) at every epoch of every trial,
  coloured by how it ended, rung epochs marked, the best trial highlighted; past
  :data:`DENSITY_OVER` trials a density of all curves with the best completed ones drawn over it;
* ``parallel_coordinates.png``: every trial's hyperparameters, coloured by its last value,
  pruned and cut trials faded;
* ``param_importances.png``: importances at the highest epoch enough trials reached
  (:mod:`hpo.importance`), so they do not vanish under early stopping;
* ``pareto_front.png`` (several metrics): the front, with the dominated completed trials faded.

Each ``*_figure`` function builds a matplotlib ``Figure`` without pyplot's global state (safe in
the MLflow writer's thread), or returns None when its picture does not apply; the function of
the file's name writes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.importance import rung_importances
from hpo.results import Results
from hpo.trial_curves import STATUS_ORDER, Column, Curve, compute_at_end, curves, param_columns, rung_epochs

if TYPE_CHECKING:
    from hpo.pages import Link  # write_search_files's annotation

__all__ = ["DENSITY_OVER", "PLOT_FILES", "all_plots", "history_figure", "importances_figure", "learning_curves",
           "learning_curves_figure", "optimization_history", "parallel_coordinates", "parallel_coordinates_figure",
           "param_importances", "pareto_figure", "pareto_front", "pyplot", "SearchFiles", "write_search_files"]

DENSITY_OVER = 500  # learning curves of more trials than this are drawn as a density
_STYLE = {  # status -> colour, marker
    "completed": ("tab:blue", "o"),
    "pruned": ("tab:orange", "v"),
    "cut": ("tab:gray", "s"),
    "errored": ("tab:red", "X"),
    "diverged": ("tab:purple", "X"),
}
_LOSSES = ("val_loss", "loss", "train_loss")  # the loss panel of the learning curves: the first one reported


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the headless Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig: Any, path: Path | None) -> Path | None:
    if fig is None or path is None:
        return None
    fig.savefig(path, dpi=100)
    return Path(path)


def _style(status: str) -> tuple[str, str]:
    return _STYLE.get(status, ("black", "."))


def _statuses(items: list[Curve]) -> list[str]:
    present = {c.status for c in items}
    return [s for s in STATUS_ORDER if s in present] + sorted(present.difference(STATUS_ORDER))


def _counts(results: Results, items: list[Curve], metric: str) -> str:
    """``24 trials: 1 completed, 23 pruned`` (and how many never reported the metric)."""
    parts = [f"{sum(c.status == s for c in items)} {s}" for s in _statuses(items)]
    text = f"{len(items)} trials: {', '.join(parts)}"
    silent = len(results.trials) - len(items)
    return text + (f" ({silent} more never reported {metric})" if silent > 0 else "")


def _rung_note(rungs: list[int]) -> str:
    return f"; rungs at epoch {', '.join(map(str, rungs))}" if rungs else ""


# -- optimization history -------------------------------------------------------------------------


def history_figure(results: Results) -> Any:
    """Every trial that reported the metric as exactly one marker (its value at its last epoch,
    shaped and coloured by how it ended) and the best so far among completed trials: left by
    trial number (in order of start), right by the epochs all trials had run when it ended."""
    items = curves(results)
    if not items:
        return None
    from matplotlib.ticker import MaxNLocator

    metric = results.metric
    better = max if results.modes[0] == "max" else min
    compute = compute_at_end(results, items)
    fig = _figure(12, 4.8)
    by_number, by_compute = fig.subplots(1, 2, sharey=True)
    for ax, xs, xlabel in ((by_number, [c.number for c in items], "trial (in order of start)"),
                           (by_compute, compute, "epochs run by all trials when the trial ended")):
        for status in _statuses(items):
            group = [(x, c.last) for x, c in zip(xs, items) if c.status == status]
            colour, marker = _style(status)
            label = f"{status} ({len(group)})" + (", where it stopped" if status in ("pruned", "cut") else "")
            ax.scatter([g[0] for g in group], [g[1] for g in group], c=colour, marker=marker, s=36,
                       alpha=0.9 if status == "completed" else 0.6, edgecolors="none", label=label,
                       zorder=3 if status == "completed" else 2)
        done = sorted((x, c.last) for x, c in zip(xs, items) if c.status == "completed")
        if done:
            best_x, best_y, best = [], [], done[0][1]
            for x, v in done:
                best = better(best, v)
                best_x.append(x)
                best_y.append(best)
            best_x.append(max(xs))
            best_y.append(best)
            ax.step(best_x, best_y, where="post", color="tab:green", lw=1.8, zorder=4,
                    label="best so far (completed trials)")
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    by_number.set_ylabel(f"{metric} at the trial's last epoch")
    by_number.legend(fontsize=8)
    fig.suptitle(f"{results.name}: optimization history of {_counts(results, items, metric)}"
                 f"{_rung_note(rung_epochs(results))}", fontsize=10)
    return fig


def optimization_history(results: Results, path: Path) -> Path | None:
    """Write :func:`history_figure` to ``path``; None when no trial reported the metric."""
    return _save(history_figure(results), path)


# -- learning curves -------------------------------------------------------------------------------


def _line_alpha(n: int) -> float:
    """Opacity of one curve among ``n``: opaque for a few, faint for hundreds."""
    return min(0.8, max(0.05, 12 / max(n, 1) ** 0.75))


def _limits(values: list[float]) -> tuple[float, float]:
    """The y range: every value, unless a few outliers (an exploding loss) would flatten the rest."""
    import numpy as np

    lo, hi = min(values), max(values)
    p_lo, p_hi = (float(x) for x in np.percentile(values, [1, 99]))
    if p_hi > p_lo and hi - lo > 5 * (p_hi - p_lo):
        lo, hi = p_lo, p_hi
    pad = (hi - lo) * 0.04 or abs(hi) * 0.04 or 0.04
    return lo - pad, hi + pad


def _loss_metric(results: Results) -> str | None:
    reported = {k for t in results.trials for k in t.metrics}
    return next((k for k in _LOSSES if k in reported and k != results.metric), None)


def _draw_lines(ax: Any, items: list[Curve]) -> None:
    from matplotlib.collections import LineCollection

    alpha = _line_alpha(len(items))
    for status in reversed(_statuses(items)):  # completed trials on top
        group = [c for c in items if c.status == status]
        colour, _ = _style(status)
        a = min(1.0, 2 * alpha) if status == "completed" else alpha
        ax.add_collection(LineCollection([list(zip(c.steps, c.values)) for c in group], colors=colour, alpha=a,
                                         linewidths=1.2 if status == "completed" else 0.9))
        ax.scatter([c.steps[-1] for c in group], [c.last for c in group], c=colour, s=8, alpha=a,
                   edgecolors="none")  # where each ended: a one-epoch trial is a dot, not nothing


def _draw_density(fig: Any, ax: Any, items: list[Curve], lo: float, hi: float, better_first: bool) -> str:
    import numpy as np
    from matplotlib.collections import LineCollection
    from matplotlib.colors import LogNorm

    xs = np.array([s for c in items for s in c.steps], dtype=float)
    ys = np.clip(np.array([v for c in items for v in c.values], dtype=float), lo, hi)
    top = int(xs.max())
    xbins = np.arange(0.5, top + 1.5) if top <= 200 else np.linspace(0.5, top + 0.5, 201)
    counts, xe, ye = np.histogram2d(xs, ys, bins=[xbins, np.linspace(lo, hi, 81)])
    mesh = ax.pcolormesh(xe, ye, np.ma.masked_equal(counts.T, 0), cmap="Greys",
                         norm=LogNorm(vmin=1, vmax=max(counts.max(), 2)))
    fig.colorbar(mesh, ax=ax, label="trials at that epoch and value")
    done = sorted((c for c in items if c.status == "completed"), key=lambda c: c.last, reverse=better_first)[:100]
    colour, _ = _style("completed")
    ax.add_collection(LineCollection([list(zip(c.steps, c.values)) for c in done], colors=colour, alpha=0.4,
                                     linewidths=0.9))
    return (f"{len(items)} trials, over {DENSITY_OVER}: shading counts the trials at each epoch and value "
            f"(log scale); lines: the {len(done)} best completed trials")


def learning_curves_figure(results: Results) -> Any:
    """The metric at every epoch of every trial (and, in a second panel, the first of
    ``val_loss``, ``loss``, ``train_loss`` reported), coloured by how each trial ended; rung
    epochs as dotted lines; the best trial in black. Up to :data:`DENSITY_OVER` trials every
    curve is a line, fainter the more there are; past that, a density of all curves with the
    best completed trials drawn over it (the picture says so)."""
    items = curves(results)
    if not items:
        return None
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    loss = _loss_metric(results)
    panels = [(results.metric, results.modes[0] == "max", items)]
    if loss:
        loss_items = curves(results, loss)
        if loss_items:
            panels.append((loss, False, loss_items))
    dense = len(items) > DENSITY_OVER
    rungs = rung_epochs(results)
    best = results.best_trial
    fig = _figure(6.2 * len(panels) + (1.2 if dense else 0), 4.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    note = ""
    for ax, (name, maximize, group) in zip(axes, panels):
        lo, hi = _limits([v for c in group for v in c.values])
        if dense:
            note = _draw_density(fig, ax, group, lo, hi, better_first=maximize)
        else:
            _draw_lines(ax, group)
            note = f"{len(group)} trials, one line each (opacity {_line_alpha(len(group)):.2g})"
        for e in rungs:
            ax.axvline(e, color="0.35", ls=":", lw=1, zorder=1)
        mine = next((c for c in group if best is not None and c.trial.trial_id == best.trial_id), None)
        if mine is not None:
            ax.plot(mine.steps, mine.values, color="black", lw=2.2, zorder=5)
        ax.set_xlim(0.5, max(max(c.steps) for c in group) + 0.5)
        ax.set_ylim(lo, hi)
        ax.set(xlabel="epoch", ylabel=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    shown = ["completed"] if dense else _statuses(items)  # a density has no colour per status
    handles = [Line2D([], [], color=_style(s)[0], label=f"{s} ({sum(c.status == s for c in items)})")
               for s in _statuses(items) if s in shown]
    if rungs:
        handles.append(Line2D([], [], color="0.35", ls=":", label=f"rung epochs ({', '.join(map(str, rungs))})"))
    if best is not None and any(c.trial.trial_id == best.trial_id for c in items):
        handles.append(Line2D([], [], color="black", lw=2.2,
                              label=f"best: {best.trial_id} ({best.metrics[results.metric]:.4g})"))
    axes[0].legend(handles=handles, fontsize=8)
    fig.suptitle(f"{results.name}: learning curves of {_counts(results, items, results.metric)}\n{note}",
                 fontsize=10)
    return fig


def learning_curves(results: Results, path: Path) -> Path | None:
    """Write :func:`learning_curves_figure` to ``path``; None when no trial reported the metric."""
    return _save(learning_curves_figure(results), path)


# -- parallel coordinates --------------------------------------------------------------------------


def _tick(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _colour_range(values: list[float], maximize: bool) -> tuple[float, float]:
    """The values the colours span: all but the worst tenth, so a few hopeless trials (an
    accuracy of 0.1 among 0.95s) do not paint every good trial the same colour."""
    import numpy as np

    lo, hi = (float(x) for x in np.percentile(values, [10, 100] if maximize else [0, 90]))
    return (lo, hi) if hi > lo else (min(values), max(values) if max(values) > min(values) else min(values) + 1)


def parallel_coordinates_figure(results: Results) -> Any:
    """One line per trial across its hyperparameters (numeric ones scaled over the space's range,
    log where the space is; categorical ones as evenly spaced categories) and its last value,
    coloured by that value; completed trials bold, pruned and cut ones faded."""
    items = curves(results)
    columns = param_columns(results, [c.trial for c in items])
    if len(items) < 2 or not columns:
        return None
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize

    metric = results.metric
    values = [c.last for c in items]
    value_axis = Column(metric, low=min(values), high=max(values))
    axes_ = [*columns, value_axis]
    maximize = results.modes[0] == "max"
    cmap = matplotlib.colormaps["viridis" if maximize else "viridis_r"]  # bright: better
    norm = Normalize(*_colour_range(values, maximize))

    def row(c: Curve) -> list[tuple[float, float]]:
        cfg = c.trial.config
        ys = [col.position(cfg[col.name]) if col.name in cfg else math.nan for col in columns]
        return list(enumerate([*ys, value_axis.position(c.last)]))

    fig = _figure(min(max(7.0, 0.9 * len(axes_) + 2.5), 13.0), 5.0)
    ax = fig.subplots()
    faded = [c for c in items if c.status != "completed"]
    done = [c for c in items if c.status == "completed"]
    fade = min(0.35, max(0.04, 8 / max(len(faded), 1) ** 0.75))
    ax.add_collection(LineCollection([row(c) for c in faded], colors=[cmap(norm(c.last)) for c in faded],
                                     alpha=fade, linewidths=0.8))
    ax.add_collection(LineCollection([row(c) for c in done], colors=[cmap(norm(c.last)) for c in done],
                                     alpha=0.95, linewidths=2.0))
    for j, col in enumerate(axes_):
        ax.axvline(j, color="0.3", lw=0.8, zorder=0)
        if col.categories is not None:
            for cat in col.categories:
                ax.text(j + 0.04, col.position(cat), _tick(cat), fontsize=7, va="center")
        else:
            ax.text(j, -0.04, _tick(col.low), fontsize=7, ha="center", va="top")
            ax.text(j, 1.04, _tick(col.high) + (" (log)" if col.log else ""), fontsize=7, ha="center", va="bottom")
    ax.set_xticks(range(len(axes_)), [col.name for col in axes_], rotation=25, ha="right", fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.3, len(axes_) - 0.6)
    ax.set_ylim(-0.12, 1.12)
    fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label=f"{metric} at the trial's last epoch",
                 extend="min" if maximize else "max")
    others = ", ".join(f"{sum(c.status == s for c in faded)} {s}" for s in _statuses(faded))
    ax.set_title(f"{results.name}: parallel coordinates of {len(items)} trials\n"
                 f"{len(done)} completed (bold)" + (f"; {others} (faded)" if others else ""), fontsize=10)
    return fig


def parallel_coordinates(results: Results, path: Path) -> Path | None:
    """Write :func:`parallel_coordinates_figure` to ``path``; None with under 2 trials or no
    hyperparameter that took two values."""
    return _save(parallel_coordinates_figure(results), path)


# -- importances -----------------------------------------------------------------------------------


def importances_figure(results: Results) -> Any:
    """Each evaluator's importances of the hyperparameters at the highest epoch enough trials
    reached (:func:`hpo.importance.rung_importances`), side by side; the title names the epoch
    and how many trials reached it."""
    imp = rung_importances(results)
    if imp is None or not any(imp.importances.values()):
        return None
    first = next(iter(imp.importances.values()))
    names = sorted({n for v in imp.importances.values() for n in v}, key=lambda n: first.get(n, 0.0))
    k = len(imp.importances)
    height = 0.8 / k
    fig = _figure(7, 0.32 * len(names) * k + 2.0)
    ax = fig.subplots()
    for i, (evaluator, values) in enumerate(imp.importances.items()):
        ax.barh([y - 0.4 + height * (i + 0.5) for y in range(len(names))], [float(values.get(n, 0.0)) for n in names],
                height=height, label=evaluator)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("importance (each evaluator's sum is 1)")
    ax.legend(fontsize=8)
    ax.set_title(f"{results.name}: hyperparameter importances for {imp.metric} at epoch {imp.epoch}\n"
                 f"({imp.num_trials} trials reached that epoch, {imp.num_completed} of them completed"
                 + (f"; a random {imp.num_used} of them used" if imp.num_used < imp.num_trials else "") + ")",
                 fontsize=10)
    return fig


def param_importances(results: Results, path: Path) -> Path | None:
    """Write :func:`importances_figure` to ``path``; None with fewer than 4 trials at any epoch."""
    return _save(importances_figure(results), path)


# -- Pareto front ----------------------------------------------------------------------------------


def pareto_figure(results: Results) -> Any:
    """The first two objectives of every completed trial: the Pareto front as a line, the
    trials it dominates faded."""
    if len(results.metrics) < 2:
        return None
    m1, m2 = results.metrics[:2]
    done = [t for t in results.trials if t.status == "completed"
            and all(isinstance(t.metrics.get(m), (int, float)) and math.isfinite(t.metrics[m]) for m in (m1, m2))]
    front = sorted(results.pareto_front(), key=lambda t: t.metrics[m1])
    if not done or not front:
        return None
    on_front = {t.trial_id for t in front}
    dominated = [t for t in done if t.trial_id not in on_front]
    fig = _figure(6.5, 4.5)
    ax = fig.subplots()
    ax.scatter([t.metrics[m1] for t in dominated], [t.metrics[m2] for t in dominated], color="0.5", alpha=0.35,
               edgecolors="none", label=f"dominated ({len(dominated)})")
    ax.plot([t.metrics[m1] for t in front], [t.metrics[m2] for t in front], "-o", color="tab:red",
            label=f"Pareto front ({len(front)})")
    ax.set(xlabel=f"{m1} ({results.modes[0]})", ylabel=f"{m2} ({results.modes[1]})",
           title=f"{results.name}: Pareto front of {len(done)} completed trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def pareto_front(results: Results, path: Path) -> Path | None:
    """Write :func:`pareto_figure` to ``path``; None with one metric or no completed trial."""
    return _save(pareto_figure(results), path)


PLOT_FILES = {  # file name (without .png) -> the function that writes it
    "optimization_history": optimization_history,
    "learning_curves": learning_curves,
    "parallel_coordinates": parallel_coordinates,
    "param_importances": param_importances,
    "pareto_front": pareto_front,
}


def all_plots(results: Results, directory: Path) -> list[Path]:
    """Write every plot that applies to these results; return the files written."""
    out = []
    for name, fn in PLOT_FILES.items():
        p = fn(results, Path(directory) / f"{name}.png")
        if p is not None:
            out.append(p)
    return out


def write_search_files(results: Results, directory: Path, runs: Mapping[str, Link] | None = None) -> list[Path]:
    """What a search logs on its MLflow parent run at the end: the leaderboard (:mod:`hpo.leaderboard`:
    ``leaderboard.csv`` with full precision, ``leaderboard.html`` as a page; ``runs`` links each trial
    to its MLflow run) and every plot that applies."""
    from hpo.leaderboard import Leaderboard
    from hpo.pages import html_page

    directory = Path(directory)
    board = Leaderboard.from_results(results, runs)
    board.write_csv(directory / "leaderboard.csv")
    (directory / "leaderboard.html").write_text(html_page(f"{results.name}: leaderboard", board.html()))
    return [directory / "leaderboard.csv", directory / "leaderboard.html", *all_plots(results, directory)]


class SearchFiles:
    """:func:`write_search_files` as a search's MLflow tracker takes it, with :meth:`prepare`, which
    the tracker's writer calls while the search runs."""

    def __call__(self, results: Results, directory: Path, runs: Mapping[str, Link] | None = None) -> list[Path]:
        return write_search_files(results, directory, runs)

    def prepare(self) -> None:
        """What drawing the plots first costs, paid ahead (the tracker's writer calls it at the lowest
        CPU priority while the trials run): importing matplotlib and Optuna's importance evaluators,
        and drawing one small figure (Agg's and the fonts' first use)."""
        import io

        from optuna.importance import FanovaImportanceEvaluator  # noqa: F401  (imports scikit-learn)

        fig = _figure(2, 1)
        fig.subplots().plot([0, 1], [0, 1], "-o", label="x")
        fig.savefig(io.BytesIO(), format="png", dpi=100)
