"""A Ray Tune searcher driving an Optuna study through ask-and-tell, honestly.

Ray's own ``OptunaSearch`` tells Optuna that a trial stopped early by ASHA *completed* with
its early, low-budget value. Here a trial the scheduler stopped is told as PRUNED, with every
intermediate value reported at its step, so samplers that use all values (GP, CMA-ES), Pareto
fronts and best-trial picks only ever see full-budget values as final.
"""

from __future__ import annotations

import math
import pickle
import warnings
from typing import Any

from ray.tune.search import Searcher

from hpo._trials import result_steps
from hpo.space import SearchSpace
from hpo.strategies._outcomes import TrialOutcomes


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


class OptunaSearcher(Searcher):
    """Suggests configs from an Optuna sampler (define-by-run, so conditionals work).

    Args:
        space: the search space.
        sampler: an ``optuna.samplers.BaseSampler``.
        metrics: metric names; more than one makes the study multi-objective.
        modes: ``"min"``/``"max"`` for each metric.
        outcomes: shared record of scheduler-pruned trials.
        storage: optional Optuna storage URL (e.g. PostgreSQL) for a persistent study.
        study_name: study name in ``storage``.
    """

    def __init__(
        self,
        space: SearchSpace,
        sampler: Any,
        metrics: list[str],
        modes: list[str],
        outcomes: TrialOutcomes,
        storage: str | None = None,
        study_name: str | None = None,
    ) -> None:
        import optuna

        _quiet_optuna()
        super().__init__()  # metrics and modes live here; Ray's single metric comes via TuneConfig
        self.space = space
        self.metrics = list(metrics)
        self.modes = list(modes)
        self.outcomes = outcomes
        directions: list[Any] = ["maximize" if m == "max" else "minimize" for m in modes]
        self.study = optuna.create_study(
            sampler=sampler,
            directions=directions,
            storage=storage,
            study_name=study_name,
            load_if_exists=storage is not None,
        )
        self._trials: dict[str, Any] = {}  # ray trial id -> optuna.Trial
        self._last: dict[str, dict[str, Any]] = {}  # ray trial id -> last result seen

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # metrics and modes are fixed at construction

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        trial = self.study.ask()
        self._trials[trial_id] = trial
        return self.space.suggest(trial)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._last[trial_id] = result
        self._report(self._trials.get(trial_id), result)

    def _report(self, trial: Any, result: dict | None) -> None:
        if trial is None or result is None or len(self.metrics) != 1:
            return  # Optuna keeps intermediate values for single-objective studies only
        for step, entry in result_steps(result):
            value = entry.get(self.metrics[0])
            if isinstance(value, (int, float)) and step:
                with warnings.catch_warnings():
                    # A restored trial may replay a step Optuna already holds; Optuna keeps the first.
                    warnings.simplefilter("ignore")
                    trial.report(float(value), step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        from optuna.trial import TrialState

        trial = self._trials.pop(trial_id, None)
        last = result or self._last.get(trial_id)
        self._last.pop(trial_id, None)
        if trial is None:
            return
        if error:
            self.study.tell(trial, state=TrialState.FAIL)
            return
        self._report(trial, last)  # the final result: Ray skips on_trial_result for a stopping one
        if self.outcomes.is_pruned(trial_id) and len(self.metrics) == 1:
            self.study.tell(trial, state=TrialState.PRUNED)
            return
        raw = [last.get(m) if last else None for m in self.metrics]
        values = [float(v) for v in raw if isinstance(v, (int, float)) and math.isfinite(v)]
        if len(values) != len(raw):
            self.study.tell(trial, state=TrialState.FAIL)  # never reported, or diverged (NaN/inf)
            return
        self.study.tell(trial, values if len(values) > 1 else values[0])

    # -- checkpointing: Ray calls save/restore so `hpo resume` continues the same study -----

    def get_state(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "trials": {tid: t.number for tid, t in self._trials.items()},
            "last": self._last,
            "pruned": self.outcomes.as_dict(),
            "rungs": self.outcomes.rungs(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        import optuna

        self.study = state["study"]
        storage, study_id = self.study._storage, self.study._study_id
        self._trials = {
            tid: optuna.Trial(self.study, storage.get_trial_id_from_study_id_trial_number(study_id, n))
            for tid, n in state["trials"].items()
        }
        self._last = state["last"]
        self.outcomes.update(state["pruned"], state.get("rungs"))

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))
