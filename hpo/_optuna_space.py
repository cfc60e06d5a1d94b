"""Search spaces as Optuna sees them: define-by-run suggestions and distributions (the Optuna
side of :class:`hpo.space.SearchSpace`)."""

from __future__ import annotations

from typing import Any

from hpo.params import Categorical, Fixed, Float, Int, Param

__all__ = ["distributions", "suggest", "suggest_value"]

_PRIMITIVES = (type(None), bool, int, float, str)


def suggest_value(trial: Any, name: str, p: Param) -> Any:
    if isinstance(p, Fixed):
        return p.value
    if isinstance(p, Float):
        return trial.suggest_float(name, p.low, p.high, log=p.log, step=p.step)
    if isinstance(p, Int):
        return trial.suggest_int(name, p.low, p.high, step=p.step or 1, log=p.log)
    assert isinstance(p, Categorical)
    if all(isinstance(c, _PRIMITIVES) for c in p.choices):
        return trial.suggest_categorical(name, list(p.choices))
    # Optuna stores only primitives: search the index, hand the trial the real value.
    idx = trial.suggest_categorical(name, list(range(len(p.choices))))
    return p.choices[idx]


def suggest(space: Any, trial: Any) -> dict[str, Any]:
    """Sample a config of ``space`` define-by-run from an ``optuna.Trial`` (conditionals honoured:
    an inactive parameter is not asked for and not in the config)."""
    config: dict[str, Any] = {}
    for name, p in space.params.items():
        if space.is_active(name, config):
            config[name] = suggest_value(trial, name, p)
    return config


def distributions(space: Any) -> dict[str, Any]:
    """Optuna distributions for every non-fixed parameter of ``space`` (conditionals included)."""
    import optuna.distributions as od

    out: dict[str, Any] = {}
    for name, p in space.params.items():
        if isinstance(p, Float):
            out[name] = od.FloatDistribution(p.low, p.high, log=p.log, step=p.step)
        elif isinstance(p, Int):
            out[name] = od.IntDistribution(p.low, p.high, log=p.log, step=p.step or 1)
        elif isinstance(p, Categorical):
            prim = all(isinstance(c, _PRIMITIVES) for c in p.choices)
            out[name] = od.CategoricalDistribution(list(p.choices) if prim else list(range(len(p.choices))))
    return out
