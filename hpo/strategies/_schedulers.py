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
    TrialScheduler,
)

from hpo.strategies._outcomes import TrialOutcomes

TIME_ATTR = "training_iteration"


class _RecordsPruning:
    """Mixin: record early STOP decisions and removals of paused trials."""

    outcomes: TrialOutcomes
    budget: int | None

    def _hpo_note(self, trial: Any, result: dict | None) -> None:
        step = (result or getattr(trial, "last_result", None) or {}).get(TIME_ATTR)
        if step is not None and (self.budget is None or step < self.budget):
            self.outcomes.record_pruned(trial.trial_id, int(step))

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
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
