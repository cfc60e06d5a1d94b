"""Hyperparameter importances that survive early stopping.

With ASHA most trials are pruned, so importances over completed trials alone come from one or
two trials, or none. Here they come from the highest epoch that enough trials reached (every
trial's value at that epoch, pruned or not): the trials become COMPLETE trials of an Optuna
study in memory, with the search space's distributions (or ones inferred from the values), and
Optuna's evaluators rank the hyperparameters: fANOVA, and PED-ANOVA once there are enough
trials for its top quantile. Works for every searcher, Optuna-based or not.
"""

from __future__ import annotations

import math
import random
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hpo.results import Results
from hpo.trial_curves import Curve, curves, search_space

__all__ = ["MAX_TRIALS", "MIN_TRIALS", "PED_ANOVA_MIN_TRIALS", "RungImportances", "importance_epoch",
           "rung_importances"]

MIN_TRIALS = 8  # trials an epoch must have been reached by (all of them when fewer, but at least 4)
PED_ANOVA_MIN_TRIALS = 20  # its top quantile then holds at least 2 trials, what it needs per regime
MAX_TRIALS = 300  # more are sampled down to this (seeded): fANOVA takes ~1 s per 100 trials on a busy 2-core machine
_PRIMITIVES = (type(None), bool, int, float, str)


@dataclass
class RungImportances:
    """Importances of the hyperparameters for the value at ``epoch``, over the ``num_trials``
    trials that reached it (``num_completed`` of them completed; ``num_used`` of them, a seeded
    sample when there are over :data:`MAX_TRIALS`): evaluator name -> parameter -> importance
    (each evaluator's importances sum to 1)."""

    metric: str
    epoch: int
    num_trials: int
    num_completed: int
    importances: dict[str, dict[str, float]]
    num_used: int = 0


def importance_epoch(trial_curves: list[Curve], min_trials: int = MIN_TRIALS) -> tuple[int, list[Curve]] | None:
    """The highest epoch reached by at least ``min_trials`` trials (by all of them when fewer,
    but never by under 4), and those trials; None when there are fewer than 4.

    Example:
        >>> from hpo.results import TrialRecord
        >>> cs = [Curve(TrialRecord(str(i), {}, {}, "pruned"), list(range(1, n + 1)), [0.0] * n,
        ...       by_step=dict.fromkeys(range(1, n + 1), 0.0)) for i, n in enumerate([2, 2, 2, 6, 6, 6, 6, 20])]
        >>> epoch, reached = importance_epoch(cs, min_trials=4)
        >>> epoch, len(reached)
        (6, 5)
    """
    need = min(min_trials, len(trial_curves))
    if need < 4:
        return None
    counts = Counter(step for c in trial_curves for step in c.by_step)
    epochs = [e for e, n in counts.items() if n >= need]
    if not epochs:
        return None
    epoch = max(epochs)
    return epoch, [c for c in trial_curves if epoch in c.by_step]


def rung_importances(results: Results, min_trials: int = MIN_TRIALS, seed: int = 0) -> RungImportances | None:
    """Importances of the searched hyperparameters for the search's first metric at
    :func:`importance_epoch`; None when fewer than 4 trials reported it or no hyperparameter
    took two values among them.

    Example:
        >>> imp = rung_importances(results)  # doctest: +SKIP
        >>> imp.epoch, imp.num_trials, sorted(imp.importances)  # doctest: +SKIP
        (6, 9, ['PED-ANOVA', 'fANOVA'])
    """
    found = importance_epoch(curves(results), min_trials)
    if found is None:
        return None
    epoch, reached = found
    used = reached if len(reached) <= MAX_TRIALS else random.Random(seed).sample(reached, MAX_TRIALS)
    trials = _study_trials(results, used, epoch)
    if trials is None:
        return None
    import optuna
    from optuna.importance import (
        FanovaImportanceEvaluator,
        MeanDecreaseImpurityImportanceEvaluator,
        PedAnovaImportanceEvaluator,
        get_param_importances,
    )

    maximize = results.modes[0] == "max"
    with _quiet_optuna():
        study = optuna.create_study(direction="maximize" if maximize else "minimize")
        study.add_trials(trials)
        out: dict[str, dict[str, float]] = {}
        try:
            out["fANOVA"] = _floats(get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed)))
        except (RuntimeError, ValueError):  # fANOVA's forest could not be fitted on these trials
            out["mean decrease impurity"] = _floats(get_param_importances(
                study, evaluator=MeanDecreaseImpurityImportanceEvaluator(seed=seed)))
        if len(trials) >= PED_ANOVA_MIN_TRIALS:
            # its "top" is the lowest values: negate a maximised metric; 5 trials in the top where it can
            quantile = min(0.25, max(0.1, 5 / len(trials)))
            sign = -1.0 if maximize else 1.0
            ped = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator(target_quantile=quantile),
                                        target=lambda t: sign * float(t.value or 0.0))
            if any(v > 0 for v in ped.values()):
                out["PED-ANOVA"] = _floats(ped)
    return RungImportances(results.metric, epoch, len(reached), sum(c.status == "completed" for c in reached), out,
                           num_used=len(trials))


def _study_trials(results: Results, reached: list[Curve], epoch: int) -> list[Any] | None:
    """The trials that reached ``epoch`` as COMPLETE Optuna trials valued at that epoch, with the
    recorded space's distributions (values mapped as the Optuna searchers store them), or with
    distributions inferred from the values when there is no space or a value falls outside it
    (PBT's mutations, an edited space)."""
    from optuna.trial import TrialState, create_trial

    configs = [c.trial.config for c in reached]
    space = search_space(results)
    for dists, encode in (_space_distributions(space, configs), _inferred_distributions(configs)):
        if dists is None:
            continue
        try:
            return [create_trial(params={k: encode(k, cfg[k]) for k in dists if k in cfg},
                                 distributions={k: dists[k] for k in dists if k in cfg},
                                 value=c.by_step[epoch], state=TrialState.COMPLETE)
                    for c, cfg in zip(reached, configs)]
        except ValueError:
            continue  # a value the space's distributions do not hold: infer them from the values
    return None


def _floats(importances: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in importances.items()}


def _varying(configs: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for cfg in configs:
        names += [k for k in cfg if k not in names]
    return [k for k in names if len({repr(cfg[k]) for cfg in configs if k in cfg}) > 1]


def _space_distributions(space: Any, configs: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, Any]:
    if space is None:
        return None, None
    dists = space.to_optuna()
    varying = set(_varying(configs))
    dists = {k: d for k, d in dists.items() if k in varying}

    def encode(name: str, value: Any) -> Any:
        choices = getattr(space.params[name], "choices", None)
        if choices is not None and not all(isinstance(c, _PRIMITIVES) for c in choices):
            return list(choices).index(value)  # Optuna holds non-primitive choices by index
        return value

    return (dists or None), encode


def _inferred_distributions(configs: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, Any]:
    import optuna.distributions as od

    dists: dict[str, Any] = {}
    text: set[str] = set()
    for name in _varying(configs):
        values = [cfg[name] for cfg in configs if name in cfg]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            if not all(math.isfinite(v) for v in values):
                continue
            lo, hi = min(values), max(values)
            log = lo > 0 and hi / lo >= 100
            dists[name] = (od.IntDistribution(int(lo), int(hi), log=log) if all(isinstance(v, int) for v in values)
                           else od.FloatDistribution(float(lo), float(hi), log=log))
        elif all(isinstance(v, _PRIMITIVES) for v in values):
            dists[name] = od.CategoricalDistribution(sorted(set(values), key=lambda v: (type(v).__name__, repr(v))))
        else:
            text.add(name)
            dists[name] = od.CategoricalDistribution(sorted({repr(v) for v in values}))

    def encode(name: str, value: Any) -> Any:
        return repr(value) if name in text else value

    return (dists or None), encode


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """No "A new study created in memory" line, no experimental or small-sample warnings."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna.logging.set_verbosity(level)
