"""The leaderboard of a search: every trial ranked, in one place for the files a search logs on its
MLflow parent run (``leaderboard.csv``, ``leaderboard.html``), ``hpo report`` and the table
``hpo run`` prints at the end.

Order: completed trials first, the best on top; then pruned and cut trials, ranked by their value
at the step they stopped (the ``epochs`` column); then trials with no value; errored and diverged
trials last. Several metrics: ranked by the first. Shown to 4 significant digits (the CSV keeps
full precision). Each row links to its MLflow run when the tracking URI is an http(s) server, and
names the run id otherwise.

Example:
    >>> board = Leaderboard([Entry("a", "pruned", {"loss": 0.1}, 2, {"x": 0.123456}),
    ...                      Entry("b", "completed", {"loss": 0.2}, 9, {"x": 0.5})], ["loss"], ["min"])
    >>> [(e.trial, e.status) for e in board.entries]
    [('b', 'completed'), ('a', 'pruned')]
    >>> board.rows()[1]["x"]
    '0.1235'
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from hpo.pages import Link, html_table, markdown_table

__all__ = ["DIGITS", "Entry", "HistoryPoint", "Leaderboard", "Link", "run_link", "run_url", "sig", "state_of",
           "value_history"]

DIGITS = 4  # significant digits shown
STOPPED = ("pruned", "cut")  # stopped before their budget: ranked by their value where they stopped
FAILED = ("errored", "diverged")  # ranked last
_KEY_PARAMS = 6  # hyperparameters the terminal table shows at most


@dataclass(frozen=True)
class Entry:
    """One trial of the leaderboard: its state, its metrics at its last step (``epochs``), its
    hyperparameters (nested keys as ``a.b``) and its MLflow run."""

    trial: str
    status: str  # completed | pruned | cut | errored | diverged, or running
    values: dict[str, float]
    epochs: int | None
    params: dict[str, Any]
    run: Link | None = None
    extra: dict[str, float] = field(default_factory=dict)  # the other metrics it reported (CSV only)


def state_of(status: str) -> str:
    """The terminal state an ``hpo.status`` tag starts with: ``pruned at epoch 2`` -> ``pruned``,
    ``errored: ValueError(...)`` -> ``errored``."""
    return status.split(":", 1)[0].split(" ", 1)[0].strip() or "?"


def sig(value: Any, digits: int = DIGITS) -> str:
    """``value`` as shown: a float (or a string holding one, as MLflow keeps params) to ``digits``
    significant digits; integers, booleans and other text as they are; None as an empty cell.

    Example:
        >>> sig(0.9666666388511658), sig(2.375538334127419e-06), sig("0.0123456"), sig(128), sig("adam")
        ('0.9667', '2.376e-06', '0.01235', '128', 'adam')
    """
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, str) and any(c in value for c in ".eE") and not value.isalpha():
        try:
            return f"{float(value):.{digits}g}"
        except ValueError:
            pass
    return str(value)


def run_url(tracking_uri: str | None, experiment_id: str | None, run_id: str) -> str | None:
    """The run's page in the MLflow UI of an http(s) tracking server (credentials left out), or None
    for any other store (an SQLite file has no UI address).

    Example:
        >>> run_url("https://u:pw@mlflow.example/", "3", "ab12")
        'https://mlflow.example/#/experiments/3/runs/ab12'
    """
    if not tracking_uri or not experiment_id or not tracking_uri.startswith(("http://", "https://")):
        return None
    parts = urlsplit(tracking_uri)
    host = parts.netloc.rsplit("@", 1)[-1]
    base = urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def run_link(tracking_uri: str | None, experiment_id: str | None, run_id: str) -> Link:
    """The run id, linked to :func:`run_url` where there is one."""
    return Link(run_id, run_url(tracking_uri, experiment_id, run_id))


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    return {key: value for k, v in config.items()
            for key, value in (_flat(v, f"{prefix}{k}.") if isinstance(v, Mapping) else {f"{prefix}{k}": v}).items()}


class Leaderboard:
    """Every trial of a search, ranked (see the module's doc); ``metrics``/``modes`` as the search's."""

    def __init__(self, entries: Iterable[Entry], metrics: list[str], modes: list[str]) -> None:
        self.metrics, self.modes = list(metrics), list(modes)
        metric, sign = self.metrics[0], -1.0 if self.modes[0] == "max" else 1.0

        def key(e: Entry) -> tuple[int, float, int, str]:
            value = _finite(e.values.get(metric))
            group = (3 if e.status in FAILED else 2 if value is None
                     else 0 if e.status == "completed" else 1 if e.status in STOPPED else 2)
            return group, sign * (value or 0.0), -(e.epochs or 0), e.trial

        self.entries = sorted(entries, key=key)

    @property
    def metric(self) -> str:
        return self.metrics[0]

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_results(cls, results: Any, runs: Mapping[str, Link] | None = None) -> Leaderboard:
        """From :class:`~hpo.results.Results`; ``runs``: trial id -> its MLflow run."""
        runs = runs or {}
        entries = [Entry(t.trial_id, t.status, {m: t.metrics[m] for m in results.metrics if m in t.metrics},
                         t.steps, _flat(t.config), runs.get(t.trial_id),
                         {k: v for k, v in t.metrics.items() if k not in results.metrics})
                   for t in results.trials]
        return cls(entries, results.metrics, results.modes)

    @classmethod
    def from_runs(cls, runs: Iterable[Any], metrics: list[str], modes: list[str], tracking_uri: str | None = None,
                  experiment_id: str | None = None) -> Leaderboard:
        """From a search's MLflow child runs (``mlflow.entities.Run``): state from the ``hpo.status``
        tag, epochs from ``hpo.last_step``, the metrics' latest values."""
        entries = []
        for r in runs:
            tags, data = r.data.tags, r.data.metrics
            last = tags.get("hpo.last_step", "")
            entries.append(Entry(tags.get("hpo.trial_id", r.info.run_name), state_of(tags.get("hpo.status", "?")),
                                 {m: data[m] for m in metrics if m in data}, int(last) if last.isdigit() else None,
                                 dict(r.data.params), run_link(tracking_uri, experiment_id, r.info.run_id),
                                 {k: v for k, v in data.items() if k not in metrics}))
        return cls(entries, metrics, modes)

    # -- what the rows show ------------------------------------------------------------------

    def varying(self) -> list[str]:
        """Hyperparameters that differ between trials (or are missing in some: conditional ones), in
        the order the trials' configurations list them (the search space's)."""
        names = list(dict.fromkeys(k for e in self.entries for k in e.params))
        return [k for k in names if len({repr(e.params.get(k)) for e in self.entries}) > 1]

    def fixed(self) -> dict[str, Any]:
        """Hyperparameters the same in every trial: one line under the table, not a column each."""
        varying = set(self.varying())
        return {k: v for k, v in sorted(self.entries[0].params.items()) if k not in varying} if self.entries else {}

    def rows(self) -> list[dict[str, Any]]:
        """The table as shown: rank, trial, status, metrics (4 significant digits), epochs, the
        hyperparameters that vary, and the MLflow run (a :class:`~hpo.pages.Link` cell)."""
        varying, linked = self.varying(), any(e.run for e in self.entries)
        return [{"#": i, "trial": e.trial, "status": e.status, **{m: sig(e.values.get(m)) for m in self.metrics},
                 "epochs": e.epochs, **{k: sig(e.params.get(k)) for k in varying},
                 **({"run": e.run} if linked else {})}
                for i, e in enumerate(self.entries, 1)]

    def note(self) -> str:
        """The line under the table: how it is ordered, and what is the same in every trial."""
        text = (f"Completed trials first, the best {self.metric} ({self.modes[0]}) on top; then pruned and cut "
                f"trials, ranked by their {self.metric} at the step they stopped (the epochs column); errored "
                f"and diverged trials last. Numbers to {DIGITS} significant digits.")
        fixed = self.fixed()
        if fixed:
            text += " The same in every trial: " + ", ".join(f"{k}={sig(v)}" for k, v in fixed.items()) + "."
        return text

    # -- outputs -----------------------------------------------------------------------------

    def markdown(self) -> list[str]:
        """The table and its note, as Markdown lines."""
        return [*markdown_table(self.rows()), "", self.note()]

    def html(self) -> str:
        """The table and its note, as an HTML fragment."""
        import html

        return f"{html_table(self.rows())}<p>{html.escape(self.note())}</p>"

    def write_csv(self, path: Path) -> Path:
        """Every trial in this order with full precision: rank, trial_id, status, steps, every metric
        it reported, ``config/<name>`` for each hyperparameter, run_id, run_url."""
        params = sorted({k for e in self.entries for k in e.params})
        rows = [{"rank": i, "trial_id": e.trial, "status": e.status, "steps": e.epochs, **e.values, **e.extra,
                 **{f"config/{k}": e.params.get(k) for k in params},
                 "run_id": e.run.text if e.run else None, "run_url": e.run.url if e.run else None}
                for i, e in enumerate(self.entries, 1)]
        cols = list(dict.fromkeys(k for r in rows for k in r))
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, cols)
            writer.writeheader()
            writer.writerows(rows)
        return Path(path)

    def text(self, top: int = 5) -> str:
        """The ``top`` completed trials as a plain-text table (for a terminal).

        Example:
            >>> print(Leaderboard([Entry("a", "completed", {"loss": 0.25}, 4, {"x": 0.5})], ["loss"], ["min"]).text())
            top 1 of 1 completed trials by loss (min):
             #  loss  epochs  trial
             1  0.25       4  a
        """
        done = [e for e in self.entries if e.status == "completed" and _finite(e.values.get(self.metric)) is not None]
        if not done:
            return "no completed trial"
        keys = self.varying()
        shown = keys[:_KEY_PARAMS]
        cols = ["#", self.metric, "epochs", *shown, "trial"]
        cells = [[str(i), sig(e.values[self.metric]), sig(e.epochs), *(sig(e.params.get(k))[:14] for k in shown),
                  e.trial] for i, e in enumerate(done[:top], 1)]
        widths = [max(len(c), *(len(r[j]) for r in cells)) for j, c in enumerate(cols)]
        numeric = {0, 1, 2}  # right-aligned

        def line(values: list[str]) -> str:
            return " " + "  ".join(v.rjust(w) if j in numeric else v.ljust(w)
                                   for j, (v, w) in enumerate(zip(values, widths))).rstrip()

        head = f"top {len(cells)} of {len(done)} completed trials by {self.metric} ({self.modes[0]}):"
        hidden = len(keys) - len(shown)
        more = [f" (+{hidden} more hyperparameters in the leaderboard)"] if hidden else []
        return "\n".join([head, line(cols), *(line(r) for r in cells), *more])


@dataclass(frozen=True)
class HistoryPoint:
    """One trial in the optimization history (:func:`value_history`)."""

    number: int  # from 1, in the order the trials started (the history plot's trial number)
    trial: str
    value: float  # its value at the last step it reported the metric (where a pruned trial stopped)
    best: float | None  # the best value of the completed trials numbered up to here (None: none yet)
    time: float | None  # when it reported that value (seconds since the Unix epoch), if known


def value_history(results: Any) -> list[HistoryPoint]:
    """The optimization history over every trial that reported the first metric, as
    ``optimization_history.png`` draws it (:func:`hpo.trial_curves.curves`): numbered from 1 in the
    order the trials started (their first report; ties in results order), each with its value at
    its last step, and the best completed value so far. The parent run's ``trial_value`` and
    ``best_so_far`` metrics are these, with step = ``number``.

    The order comes from the trials' own report times, so the same search gives the same numbers
    however it is recorded (``hpo run``, ``hpo resume``, ``hpo sync-mlflow``), and a resumed search's
    new trials come after the ones it had.

    Example:
        >>> from hpo.results import Results, TrialRecord
        >>> r = Results("s", ["loss"], ["min"], [TrialRecord("a", {}, {"loss": 0.5}, "completed", steps=3),
        ...                                     TrialRecord("b", {}, {"loss": 0.2}, "pruned", steps=1)], "/none")
        >>> [(p.number, p.value, p.best) for p in value_history(r)]
        [(1, 0.5, 0.5), (2, 0.2, 0.5)]
    """
    from hpo.trial_curves import curves

    better = max if results.modes[0] == "max" else min
    out: list[HistoryPoint] = []
    best: float | None = None
    for c in curves(results):
        if c.status == "completed":
            best = c.last if best is None else better(best, c.last)
        out.append(HistoryPoint(c.number, c.trial.trial_id, c.last, best, c.end))
    return out
