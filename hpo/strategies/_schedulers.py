"""Ray Tune schedulers, and the one wrapper that records every scheduler's early stops.

:class:`RecordingScheduler` wraps whatever a scheduler factory returns, built-in or plug-in:
a STOP before the trial's budget (``max_t``) is written to the shared :class:`TrialOutcomes`
as a pruned trial, which the searcher and the driver callbacks read; a STOP at ``max_t`` is a
normal completion. A scheduler therefore returns plain Ray decisions and nothing else.

The built-in scheduler classes below only set hpo's time attribute (each trial's own step) and
keep the names that searches saved by earlier hpo versions refer to.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.schedulers import (
    AsyncHyperBandScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    PopulationBasedTraining,
    TrialScheduler,
)

from hpo._compat.ray import asha_bracket, bracket_rungs
from hpo.strategies._outcomes import TrialOutcomes
from hpo.wire import with_epoch_step

__all__ = ["ASHA", "FIFO", "PBT", "TIME_ATTR", "HyperBand", "MedianStopping", "RecordingScheduler"]

TIME_ATTR = "training_iteration"


class RecordingScheduler(TrialScheduler):
    """Any Ray ``TrialScheduler``, with its early decisions recorded in :class:`TrialOutcomes`.

    Records a STOP before ``budget`` (the trial's step from its result) and a paused trial that
    the scheduler removes (HyperBand ends a bracket's paused losers without a STOP decision).
    Hands every scheduler the result with ``training_iteration`` set to the trial's own step,
    and removes inactive conditional parameters from a new trial's config (Ray's variant
    generator, used by PBT, cannot leave a key out, so it samples them as ``None``).
    Every other call and attribute goes to the wrapped scheduler unchanged.

    Example:
        >>> from ray.tune.schedulers import FIFOScheduler
        >>> s = RecordingScheduler(FIFOScheduler(), TrialOutcomes(), budget=3)
        >>> s.inner.__class__.__name__, s.supports_buffered_results
        ('FIFOScheduler', True)
    """

    def __init__(self, inner: Any, outcomes: TrialOutcomes, budget: int | None, space: Any = None) -> None:
        # TrialScheduler.__init__ only tags the class for Ray's usage statistics: the wrapped
        # scheduler did that already.
        self.inner = inner
        self.outcomes = outcomes
        self.budget = budget
        self.space = space

    # -- attributes Ray reads ------------------------------------------------------------------

    @property
    def metric(self) -> Any:  # TuneController checks results against it
        return self.inner.metric

    @property
    def _metric(self) -> Any:  # type: ignore[override]  # ResourceChangingScheduler reads it
        return getattr(self.inner, "_metric", None)

    @property
    def supports_buffered_results(self) -> bool:  # HyperBand: False (tune.run reads it)
        return bool(getattr(self.inner, "supports_buffered_results", True))

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes the wrapper lacks; never while unpickling (no `inner` yet).
        if name.startswith("__") or "inner" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["inner"], name)

    # -- TrialScheduler --------------------------------------------------------------------------

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return bool(self.inner.set_search_properties(metric, mode, **spec))

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if self.space is not None and isinstance(getattr(trial, "config", None), dict):
            for name in self.space.inactive_names(trial.config):
                trial.config.pop(name, None)
                params = getattr(trial, "evaluated_params", None)
                if isinstance(params, dict):
                    params.pop(name, None)
        self.inner.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self.inner.on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        result = with_epoch_step(result)
        decision = self.inner.on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP:
            self._note_stop(trial, result)
        return str(decision)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self.inner.on_trial_complete(tune_controller, trial, with_epoch_step(result) if result else result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        # HyperBand stops paused losers of a bracket directly, without a STOP decision.
        if getattr(trial, "status", None) == "PAUSED":
            self._note_stop(trial, None)
        self.inner.on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        return self.inner.choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        return str(self.inner.debug_string())

    def save(self, checkpoint_path: str) -> None:
        self.inner.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.inner.restore(checkpoint_path)

    def _note_stop(self, trial: Any, result: dict | None) -> None:
        step = with_epoch_step(result or getattr(trial, "last_result", None) or {}).get(TIME_ATTR)
        if step is not None and (self.budget is None or step < self.budget):
            self.outcomes.record_pruned(trial.trial_id, int(step))


class ASHA(AsyncHyperBandScheduler):
    """Ray's asynchronous successive halving, also recording the highest rung each trial reaches.

    The rung a trial was recorded at lives only in Ray's private bracket state, read through
    :mod:`hpo._compat.ray`.
    """

    def __init__(self, outcomes: TrialOutcomes, **kwargs: Any) -> None:
        self.outcomes = outcomes
        super().__init__(time_attr=TIME_ATTR, **kwargs)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        bracket = asha_bracket(self, trial.trial_id)
        decision = super().on_trial_result(tune_controller, trial, result)
        self._note_rung(trial, bracket)
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        # A trial at max_t is stopped first and recorded at the top rung only here.
        bracket = asha_bracket(self, trial.trial_id)
        super().on_trial_complete(tune_controller, trial, result)
        self._note_rung(trial, bracket)

    def _note_rung(self, trial: Any, bracket: Any) -> None:
        """The rung a trial reached: the highest milestone its result was recorded at."""
        if bracket is None:
            return
        rungs = bracket_rungs(bracket)
        milestones = sorted(m for m, _ in rungs)
        for milestone, recorded in rungs:  # highest first
            if trial.trial_id in recorded:
                self.outcomes.record_rung(trial.trial_id, milestones.index(milestone), int(milestone))
                return


class HyperBand(HyperBandScheduler):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(time_attr=TIME_ATTR, **kwargs)


class MedianStopping(MedianStoppingRule):
    """Ray's median stopping rule on each trial's own step, that never pauses a trial.

    With too few other trials at a step to take a median, Ray's rule pauses the trial whenever
    Ray Tune holds trials waiting for a place (PENDING or PAUSED) — so that they catch up — and
    lets it go on otherwise. hpo's median searches keep no checkpoints, so a paused trial would
    start again from its first epoch when resumed, its work thrown away (seen: a trial paused four
    times re-ran up to 9 epochs each time); here it always goes on. Asked from a packed trial's
    worker (:mod:`hpo.decisions`, no controller) it is the same rule. Every other decision is
    Ray's, from the same table of results.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(time_attr=TIME_ATTR, **kwargs)

    def _on_insufficient_samples(self, tune_controller: Any, trial: Any, time: float) -> str:
        return TrialScheduler.CONTINUE


class FIFO(FIFOScheduler):
    pass


class _ClipToSpace:
    """PBT's explore step multiplies values by 0.8 or 1.2: keep them inside the space, on its
    ``step`` lattice (``low + k * step``) where it has one."""

    def __init__(self, bounds: dict[str, tuple[Any, ...]]) -> None:
        self.bounds = bounds  # name -> (low, high, is_int, step)

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for name, (low, high, is_int, *rest) in self.bounds.items():
            if name not in config:
                continue
            step = rest[0] if rest else None
            v = min(max(config[name], low), high)
            if step:
                k = min(round((v - low) / step), math.floor((high - low) / step + 1e-9))
                v = low + k * step
            config[name] = int(round(v)) if is_int else _clean_float(v)
        return config


def _clean_float(v: float) -> float:
    """``low + k * step`` without binary noise (0.30000000000000004 -> 0.3)."""
    return float(f"{v:.12g}")


class PBT(PopulationBasedTraining):
    """Ray's population-based training, mutating the space's numeric parameters within their bounds.

    Mutated values reach the trainable as its new config when it continues from the copied
    trial's checkpoint; the built-in task applies them to the restored optimizer. ``mutate``
    was checked before launch (the strategy's relations); this only builds Ray's mutation spec.
    """

    def __init__(self, space: Any, *, mutate: list[str] | None, **kwargs: Any) -> None:
        from hpo.params import Int

        names = list(mutate) if mutate is not None else space.numeric_names()
        domains = space.to_ray()
        bounds = {n: (space.params[n].low, space.params[n].high, isinstance(space.params[n], Int),
                      space.params[n].step) for n in names}
        super().__init__(time_attr=TIME_ATTR, hyperparam_mutations={n: domains[n] for n in names},
                         custom_explore_fn=_ClipToSpace(bounds), **kwargs)
