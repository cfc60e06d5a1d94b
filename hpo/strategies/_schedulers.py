"""Ray Tune schedulers that also record which trials they stopped early (pruned).

Each class is the Ray scheduler with one addition: a STOP before the trial's budget
(``max_t``) is written to the shared :class:`TrialOutcomes`, which the searcher and the
driver callbacks read. A STOP at ``max_t`` is a normal completion.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import (
    AsyncHyperBandScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    PopulationBasedTraining,
    TrialScheduler,
)

from hpo._trials import with_epoch_step
from hpo.errors import HpoConfigError
from hpo.strategies._outcomes import TrialOutcomes

TIME_ATTR = "training_iteration"


class _RecordsPruning:
    """Mixin: record early STOP decisions and removals of paused trials."""

    outcomes: TrialOutcomes
    budget: int | None

    def _hpo_note(self, trial: Any, result: dict | None) -> None:
        step = with_epoch_step(result or getattr(trial, "last_result", None) or {}).get(TIME_ATTR)
        if step is not None and (self.budget is None or step < self.budget):
            self.outcomes.record_pruned(trial.trial_id, int(step))

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        result = with_epoch_step(result)
        decision = super().on_trial_result(tune_controller, trial, result)  # type: ignore[misc]
        if decision == TrialScheduler.STOP:
            self._hpo_note(trial, result)
        return decision

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        # HyperBand stops paused losers of a bracket directly, without a STOP decision.
        if trial.status == "PAUSED":
            self._hpo_note(trial, None)
        super().on_trial_remove(tune_controller, trial)  # type: ignore[misc]


class ASHA(_RecordsPruning, AsyncHyperBandScheduler):
    def __init__(self, outcomes: TrialOutcomes, budget: int | None, **kwargs: Any) -> None:
        self.outcomes, self.budget = outcomes, budget
        super().__init__(time_attr=TIME_ATTR, **kwargs)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        bracket = self._trial_info.get(trial.trial_id)
        decision = super().on_trial_result(tune_controller, trial, result)
        self._note_rung(trial, bracket)
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        # A trial at max_t is stopped first and recorded at the top rung only here.
        bracket = self._trial_info.get(trial.trial_id)
        super().on_trial_complete(tune_controller, trial, with_epoch_step(result) if result else result)
        self._note_rung(trial, bracket)

    def _note_rung(self, trial: Any, bracket: Any) -> None:
        """The rung a trial reached: the highest milestone its result was recorded at."""
        if bracket is None:
            return
        milestones = sorted(m for m, _ in bracket._rungs)
        for milestone, recorded in bracket._rungs:  # Ray keeps a bracket's rungs highest first
            if trial.trial_id in recorded:
                self.outcomes.record_rung(trial.trial_id, milestones.index(milestone), int(milestone))
                return


class HyperBand(_RecordsPruning, HyperBandScheduler):
    def __init__(self, outcomes: TrialOutcomes, budget: int | None, **kwargs: Any) -> None:
        self.outcomes, self.budget = outcomes, budget
        super().__init__(time_attr=TIME_ATTR, **kwargs)


class MedianStopping(_RecordsPruning, MedianStoppingRule):
    def __init__(self, outcomes: TrialOutcomes, budget: int | None, **kwargs: Any) -> None:
        self.outcomes, self.budget = outcomes, budget
        super().__init__(time_attr=TIME_ATTR, **kwargs)


class FIFO(FIFOScheduler):
    def __init__(self, outcomes: TrialOutcomes, budget: int | None) -> None:
        super().__init__()


class _ClipToSpace:
    """PBT's explore step multiplies values by 0.8 or 1.2: keep them inside the space's bounds."""

    def __init__(self, bounds: dict[str, tuple[float, float, bool]]) -> None:
        self.bounds = bounds  # name -> (low, high, is_int)

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for name, (low, high, is_int) in self.bounds.items():
            if name in config:
                v = min(max(config[name], low), high)
                config[name] = int(round(v)) if is_int else float(v)
        return config


class PBT(PopulationBasedTraining):
    """Ray's population-based training, mutating the space's numeric parameters within their bounds.

    Mutated values reach the trainable as its new config when it continues from the copied
    trial's checkpoint; the built-in task applies them to the restored optimizer.
    """

    def __init__(self, outcomes: TrialOutcomes, budget: int | None, space: Any, *, mutate: list[str] | None,
                 **kwargs: Any) -> None:
        from hpo.params import Float, Int

        self.outcomes, self.budget = outcomes, budget
        numeric = [n for n, p in space.params.items() if isinstance(p, (Float, Int)) and not p.when]
        names = list(mutate) if mutate is not None else numeric
        for n in names:
            if n not in numeric:
                raise HpoConfigError("strategy.scheduler_options.mutate", f"must list unconditional float/int "
                                     f"parameters of the space; those are {numeric}", n)
        if not names:
            raise HpoConfigError("space", "PBT needs at least one float or int parameter to mutate",
                                 list(space.params))
        domains = space.to_ray()
        bounds = {n: (space.params[n].low, space.params[n].high, isinstance(space.params[n], Int)) for n in names}
        super().__init__(time_attr=TIME_ATTR, hyperparam_mutations={n: domains[n] for n in names},
                         custom_explore_fn=_ClipToSpace(bounds), **kwargs)
