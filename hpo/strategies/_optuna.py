"""A Ray Tune searcher driving an Optuna study through ask-and-tell, honestly.

Ray's own ``OptunaSearch`` tells Optuna that a trial stopped early by ASHA *completed* with
its early, low-budget value. Here a trial the scheduler stopped is told as PRUNED, with every
intermediate value reported at its step, so samplers that use all values (GP, CMA-ES), Pareto
fronts and best-trial picks only ever see full-budget values as final.

``CappedTPESampler`` (hpo's ``tpe``) is Optuna's TPE with its per-suggestion history capped
(``max_history``), so its cost stops growing with the study while its "good" group stays exact.
"""

from __future__ import annotations

import math
import pickle
import warnings
from collections.abc import Callable, Container, Sequence
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search import Searcher

from hpo.space import SearchSpace
from hpo.strategies._outcomes import TrialOutcomes
from hpo.wire import result_steps


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
        if self.outcomes.is_stopped(trial_id):
            # Pruned by the scheduler or cut by the search (budget, interrupt): its last value is
            # not a full-budget one. Optuna 5 takes PRUNED for several objectives too.
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
            "outcomes": self.outcomes.state(),
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
        if "outcomes" in state:
            self.outcomes.load(state["outcomes"])
        else:  # saved by hpo before the cut state existed
            self.outcomes.update(state["pruned"], state.get("rungs"))

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))


class TaggedStudy(optuna.Study):
    """An Optuna study that sets ``attrs`` as user attributes on every trial it is asked for
    (``hpo nightly``: ``night=<date>``). Pickled with the searcher, so a resumed search keeps tagging.

    Example:
        >>> study = TaggedStudy("s", "sqlite:///:memory:", None, {"night": "2026-11-29"})  # doctest: +SKIP
        >>> study.ask().user_attrs  # doctest: +SKIP
        {'night': '2026-11-29'}
    """

    def __init__(self, study_name: str, storage: Any, sampler: Any, attrs: dict[str, str]) -> None:
        super().__init__(study_name=study_name, storage=storage, sampler=sampler)
        self.trial_attrs = dict(attrs)

    def ask(self, fixed_distributions: Any = None) -> Any:
        # A new trial is created with its tags, in the storage's one transaction (a template
        # trial, as Optuna's enqueue_trial creates one): a process killed between creating a
        # trial and tagging it left an untagged RUNNING trial in the lineage's study. Optuna's
        # Study.ask creates trials through its storage's create_new_trial (Optuna 4.x, 5.0).
        storage = self._storage
        created: list[bool] = []

        def create_tagged(study_id: int, template_trial: FrozenTrial | None = None) -> int:
            created.append(template_trial is None)
            if template_trial is None:
                template_trial = FrozenTrial(
                    number=-1, state=TrialState.RUNNING, value=None, datetime_start=datetime.now(),
                    datetime_complete=None, params={}, distributions={}, user_attrs=dict(self.trial_attrs),
                    system_attrs={}, intermediate_values={}, trial_id=-1)
            return storage.__class__.create_new_trial(storage, study_id, template_trial)

        storage.create_new_trial = create_tagged  # type: ignore[method-assign]  # this ask only (one asking thread)
        try:
            trial = super().ask(fixed_distributions)
        finally:
            del storage.create_new_trial
        if not any(created):  # a trial enqueued earlier (waiting): tagged as it starts
            for key, value in self.trial_attrs.items():
                trial.set_user_attr(key, value)
        return trial


# -- TPE with a capped history -------------------------------------------------------------------

try:  # Optuna's own split into TPE's "good" and "bad" groups (private; present in Optuna 4.x and 5.x)
    from optuna.samplers._tpe.sampler import _split_trials, default_gamma, default_gamma_multiobjective
except ImportError:  # pragma: no cover - a future Optuna: CappedTPESampler then warns and does not cap
    _split_trials = None  # type: ignore[assignment]

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class CappedTPESampler(optuna.samplers.TPESampler):
    """Optuna's TPE sampler that models at most ``max_history`` finished trials per suggestion.

    TPE's cost per suggestion grows with the study (a Parzen estimator over every trial, for
    every candidate): ~0.6 s at 10,000 trials, on the single thread of Ray's driver loop. TPE
    splits the finished trials into a "good" group, the best ``gamma(n)`` of them (Optuna's
    default: ``min(ceil(0.1 n), 25)`` for one objective), which forms ``l(x)``, and a "bad" group,
    all the others, which forms ``g(x)``, with weights that already fade the oldest ones out.
    Once a study has more than ``max_history`` finished (complete or pruned) trials, this sampler
    shows TPE only:

    * the ``k = gamma(n)`` best trials of the *whole* study, chosen by Optuna's own split (for one
      objective: complete trials by value, then pruned ones by their last intermediate value;
      for several: non-dominated ones first, with Optuna's hypervolume tie-break), and
    * the most recent other trials, up to ``max_history`` trials in all,

    and makes TPE's gamma return that same ``k``. So for one objective ``l(x)`` is exactly plain
    TPE's, and ``g(x)`` is estimated from the latest ``max_history - k`` trials instead of all of
    them. With several objectives ``k`` grows as 10 % of the study (Optuna's default), so it is
    held to ``max_history // 2`` (from 5 x ``max_history`` trials on), and TPE re-ranks the kept
    trials itself, so ``l(x)`` matches plain TPE's closely rather than bit for bit.

    At or below ``max_history`` finished trials (and with ``max_history=None``) nothing is
    filtered: the proposals are plain ``TPESampler``'s, draw for draw, for the same seed.
    Running trials, which TPE's ``constant_liar`` (on by default in Optuna 5) adds to the bad
    group, always pass through, outside the cap: there are only as many as trials run at once.
    Like TPESampler's own per-ask state, this assumes one ``ask`` at a time per sampler.

    Args:
        max_history: most finished trials TPE models per suggestion, or ``None`` for all.
        **kwargs: passed to :class:`optuna.samplers.TPESampler`.
    """

    def __init__(self, *, max_history: int | None = 1000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if _split_trials is None and max_history is not None:  # pragma: no cover - a future Optuna
            warnings.warn("this Optuna has no TPE split helper: TPE's history is not capped", stacklevel=2)
            max_history = None
        self.max_history = max_history
        self._reset_caches()

    def _reset_caches(self) -> None:
        # (study, trial, trial count) -> (the trials TPE sees, k): an ask calls _sample once per
        # parameter (independent TPE) or per group, on the same trials.
        self._kept: tuple[tuple[Any, ...], list[FrozenTrial], int] | None = None
        # (study, pool size, the best `size` finished trials, numbers of every finished trial seen):
        # the good group of the whole study is always within the pool plus the newly finished.
        self._pool: tuple[tuple[Any, ...], int, list[FrozenTrial], set[int]] | None = None

    def __getstate__(self) -> dict[str, Any]:  # checkpoints: the caches are rebuilt from the study
        state = self.__dict__.copy()
        state["_kept"] = state["_pool"] = None
        return state

    def _sample(self, study: Any, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        if self.max_history is None:
            return super()._sample(study, trial, search_space)
        # The gamma TPESampler itself would use for this study (Optuna's default when none was given).
        saved = self._gamma
        base = saved or (default_gamma if len(study.directions) <= 1 else default_gamma_multiobjective)
        view = _HistoryView(study, self, trial, base)
        self._gamma = view.gamma  # TPE's split of the kept trials uses the k chosen from the whole study
        try:
            return super()._sample(view, trial, search_space)  # type: ignore[arg-type]
        finally:
            self._gamma = saved

    def keep(
        self, study: Any, trial: FrozenTrial, trials: Sequence[FrozenTrial], gamma: Callable[[int], int]
    ) -> tuple[list[FrozenTrial], int]:
        """The trials TPE sees when asked for ``trial`` (in their order), and its good-group size."""
        assert self.max_history is not None
        key = (id(study._storage), study._study_id, trial.number, len(trials))
        if self._kept is None or self._kept[0] != key:
            finished = [t for t in trials if t.state in _FINISHED]
            k = gamma(len(finished))
            if len(finished) <= self.max_history:
                kept = list(trials)
            else:
                k = min(k, self.max_history // 2)
                numbers = {t.number for t in self._best(study, finished, k)}
                for t in reversed(finished):  # then the most recent others
                    if len(numbers) >= self.max_history:
                        break
                    numbers.add(t.number)
                kept = [t for t in trials if t.number in numbers or t.state not in _FINISHED]
            self._kept = (key, kept, k)
        return list(self._kept[1]), self._kept[2]

    def _best(self, study: Any, finished: list[FrozenTrial], k: int) -> list[FrozenTrial]:
        """Optuna's good group of ``finished`` (``_split_trials(study, finished, k)[0]``), kept cheap.

        For one objective the split is a top-k under a fixed order (feasible complete trials by
        value, then pruned ones by step and last intermediate value, then infeasible ones; ties by
        trial number). So the top k of all finished trials are the top k of a pool, the previous
        top ``size >= k`` (50 for Optuna's default gamma), plus the trials finished since: an ask
        splits a few dozen trials, not the whole study. The pool is rebuilt from every trial when
        k outgrows it. (With several
        objectives the pool is a running Pareto-ranked selection, close to the whole study's.)
        """
        assert self.max_history is not None and _split_trials is not None
        study_key = (id(study._storage), study._study_id)
        size, pool, seen = 0, [], set()  # type: tuple[int, list[FrozenTrial], set[int]]
        if self._pool is not None and self._pool[0] == study_key and k <= self._pool[1]:
            _, size, pool, seen = self._pool
        new = [t for t in finished if t.number not in seen]
        if size == 0 or len(seen) + len(new) != len(finished):  # new study, k grew, or a trial vanished
            size, pool, seen, new = min(self.max_history // 2, max(2 * k, 50)), [], set(), finished
        pool, _ = _split_trials(study, sorted(pool + new, key=lambda t: t.number), size)
        seen.update(t.number for t in new)
        self._pool = (study_key, size, pool, seen)
        best, _ = _split_trials(study, pool, k)
        return best


class _HistoryView:
    """A study as CappedTPESampler's TPE sees it: the kept trials only, everything else delegated."""

    def __init__(self, study: Any, sampler: CappedTPESampler, trial: FrozenTrial, gamma: Callable[[int], int]) -> None:
        self._study, self._sampler, self._trial, self._gamma = study, sampler, trial, gamma
        self._k: int | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None, use_cache: bool = False
    ) -> list[FrozenTrial]:
        trials = self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        kept, self._k = self._sampler.keep(self._study, self._trial, trials, self._gamma)
        return kept

    def gamma(self, n: int) -> int:
        """TPE's good-group size: the k chosen from the whole study (``n`` counts the kept trials only)."""
        return self._k if self._k is not None else self._gamma(n)
