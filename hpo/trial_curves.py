"""What the pictures of a search draw, computed without drawing: every trial's curve of a metric
(its value at each step, from the run directory's per-step records), the order trials started
in, the compute spent when each ended, the epochs where a scheduler decided, and the searched
hyperparameters as columns of values.

With early stopping most trials are pruned: these work over every trial that reported the
metric, whatever its end, not over the completed ones alone.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo.errors import HpoConfigError
from hpo.results import Results, Step, TrialRecord

__all__ = ["STATUS_ORDER", "Column", "Curve", "compute_at_end", "curves", "param_columns", "rung_epochs",
           "search_space"]

STATUS_ORDER = ("completed", "pruned", "cut", "errored", "diverged")  # how plots group and list trials
_PRIMITIVES = (type(None), bool, int, float, str)


@dataclass
class Curve:
    """One trial's values of a metric, in step order (finite values only).

    ``number`` is its place, from 1, among the trials that reported the metric, in the order they
    started (their first report); ``start`` and ``end`` are its first and last report times
    (None when its records carry none).
    """

    trial: TrialRecord
    steps: list[int]
    values: list[float]
    number: int = 0
    start: float | None = None
    end: float | None = None
    epochs: int = 0  # steps it ran (its last step number)
    by_step: dict[int, float] = field(default_factory=dict, repr=False)

    @property
    def last(self) -> float:
        """The value at its last step: where a pruned trial stopped, a completed one's final value."""
        return self.values[-1]

    @property
    def status(self) -> str:
        return self.trial.status


def curves(results: Results, metric: str | None = None) -> list[Curve]:
    """A :class:`Curve` of ``metric`` (default: the search's first) for every trial that reported a
    finite value of it, numbered in the order the trials started.

    A trial with no per-step record (its result files are gone, or the results were built by
    hand) is one point: its last reported value at its last step.

    Example:
        >>> r = Results("s", ["loss"], ["min"], [TrialRecord("a", {}, {"loss": 0.5}, "completed", steps=3)], "/none")
        >>> [(c.number, c.steps, c.values) for c in curves(r)]
        [(1, [3], [0.5])]
    """
    metric = metric or results.metric
    histories = results.step_histories()
    out: list[tuple[tuple[bool, float, int], Curve]] = []
    for i, t in enumerate(results.trials):
        steps: list[Step] = histories.get(t.trial_id, [])
        points = [(s.step, s.metrics[metric]) for s in steps if _finite(s.metrics.get(metric))]
        times = [s.time for s in steps if s.time is not None]
        if not points and _finite(t.metrics.get(metric)):
            points = [(max(t.steps, 1), t.metrics[metric])]
        if not points:
            continue
        c = Curve(t, [p[0] for p in points], [p[1] for p in points], start=min(times) if times else None,
                  end=max(times) if times else None, epochs=max(steps[-1].step if steps else 0, t.steps, points[-1][0]))
        c.by_step = dict(points)
        out.append(((c.start is None, c.start or 0.0, i), c))
    ordered = [c for _, c in sorted(out, key=lambda kc: kc[0])]
    for n, c in enumerate(ordered, 1):
        c.number = n
    return ordered


def compute_at_end(results: Results, trial_curves: list[Curve]) -> list[int]:
    """For each curve (in the order given), the epochs all trials together had run when it
    reported its last value: the compute the search had spent by then. Without report times
    (hand-built results), the epochs of the trials that started before it, plus its own.

    Example:
        >>> r = Results("s", ["loss"], ["min"], [TrialRecord("a", {}, {"loss": 0.5}, "completed", steps=3),
        ...                                     TrialRecord("b", {}, {"loss": 0.7}, "pruned", steps=1)], "/none")
        >>> compute_at_end(r, curves(r))
        [3, 4]
    """
    if trial_curves and all(c.end is not None for c in trial_curves):
        times = sorted(s.time for steps in results.step_histories().values() for s in steps if s.time is not None)
        return [bisect.bisect_right(times, c.end or 0.0) for c in trial_curves]
    total, out = 0, {}
    for c in sorted(trial_curves, key=lambda c: c.number):
        total += c.epochs
        out[id(c)] = total
    return [out[id(c)] for c in trial_curves]


def rung_epochs(results: Results) -> list[int]:
    """The epochs a scheduler decided at: every trial's recorded rung epoch and the epochs where
    pruned trials stopped (empty without early stopping)."""
    found = {t.rung_epoch for t in results.trials if t.rung_epoch is not None}
    found |= {t.pruned_at for t in results.trials if t.status == "pruned" and t.pruned_at is not None}
    return sorted(e for e in found if e > 0)


def search_space(results: Results) -> Any:
    """The search's :class:`~hpo.space.SearchSpace` as recorded in its run directory, or None
    (results built by hand, or a run directory that is gone)."""
    from hpo.rundir import read_state
    from hpo.space import SearchSpace

    try:
        spec = (read_state(Path(results.storage_path)).get("experiment") or {}).get("space")
        return SearchSpace.from_dict(spec) if spec else None
    except (HpoConfigError, OSError, ValueError):
        return None  # a record this version cannot read: the plots infer the space from the values


@dataclass
class Column:
    """One searched hyperparameter as the plots see it: ``categories`` (in order) for a
    categorical one, else a numeric range, on a log scale when the space says so (or, without a
    recorded space, when positive values span two decades or more)."""

    name: str
    categories: list[Any] | None = None
    low: float = 0.0
    high: float = 1.0
    log: bool = False

    def position(self, value: Any) -> float:
        """``value`` scaled to [0, 1] along this column (NaN for a value it does not hold)."""
        if self.categories is None and not isinstance(value, (int, float)):
            return math.nan
        if self.categories is not None:
            key = _category(value)
            if key not in self.categories:
                return math.nan
            k = len(self.categories)
            return self.categories.index(key) / (k - 1) if k > 1 else 0.5
        x = float(value)
        lo, hi = self.low, self.high
        if self.log:
            x, lo, hi = math.log10(x), math.log10(lo), math.log10(hi)
        return (x - lo) / (hi - lo) if hi > lo else 0.5


_MISSING = object()


def param_columns(results: Results, trials: list[TrialRecord]) -> list[Column]:
    """The searched hyperparameters that take more than one value among ``trials``, in the
    space's order: the recorded space's non-fixed parameters (numeric ones over the space's
    range, categorical ones in the order of their choices), or, without a recorded space, every
    config key (numeric when every value is a number)."""
    space = search_space(results)
    specs: dict[str, Any] = {}
    if space is not None:
        from hpo.params import Categorical, Float, Int

        specs = {name: p for name, p in space.params.items() if isinstance(p, (Float, Int, Categorical))}
        names = list(specs)
    else:
        names = []
        for t in trials:
            names += [k for k in t.config if k not in names]
    out = []
    for name in names:
        values = [v for t in trials if (v := t.config.get(name, _MISSING)) is not _MISSING]
        seen = {_category(v) for v in values}
        if len(seen) < 2:
            continue
        spec = specs.get(name)
        choices = getattr(spec, "choices", None)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if choices is not None or not numeric:
            order = [_category(c) for c in choices or ()]
            out.append(Column(name, categories=[c for c in order if c in seen]
                              + sorted(seen.difference(order), key=lambda v: (type(v).__name__, repr(v)))))
            continue
        lo, hi = float(min(values)), float(max(values))
        if spec is not None:
            lo, hi = min(lo, float(spec.low)), max(hi, float(spec.high))
        log = bool(spec.log) if spec is not None else lo > 0 and hi / lo >= 100
        out.append(Column(name, low=lo, high=hi, log=log and lo > 0))
    return out


def _category(value: Any) -> Any:
    """A hashable, comparable stand-in for a categorical value (lists and dicts as their text)."""
    return value if isinstance(value, _PRIMITIVES) else repr(value)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
