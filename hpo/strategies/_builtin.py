"""The built-in strategies: factories for searchers, Optuna samplers and schedulers."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from hpo.errors import HpoConfigError
from hpo.strategies._constraints import Boolean, Interval, ListOf, OneOf
from hpo.strategies._registry import StrategyContext, StrategyInfo, register

# Fewest finished trials `tpe`'s max_history may keep: TPE's good group (up to 25 trials for one
# objective) plus a bad group of at least 75 recent ones.
TPE_MIN_HISTORY = 100


def _random(seed: int | None) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _sobol(seed: int | None, scramble: bool = True) -> Any:
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, message="QMCSampler")
    return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=scramble, seed=seed, warn_independent_sampling=False)


def _tpe(
    seed: int | None,
    n_startup_trials: int = 10,
    multivariate: bool | None = None,
    group: bool = False,
    max_history: int | None = 1000,
) -> Any:
    """TPE; past ``max_history`` finished trials it models the best ones (its whole "good" group)
    plus the most recent others, up to ``max_history``, so a suggestion's cost stops growing with
    the study (see ``hpo.strategies._optuna.CappedTPESampler``). 0 or None: every trial."""
    import optuna

    cap = max_history or None  # 0 or None: no cap (values were checked before launch)
    options: dict[str, Any] = dict(
        # multivariate None: Optuna's own default (Optuna 5: multivariate for one objective)
        seed=seed, n_startup_trials=n_startup_trials, multivariate=multivariate, group=bool(group and multivariate)
    )
    if cap is None:
        return optuna.samplers.TPESampler(**options)
    from hpo.strategies._optuna import CappedTPESampler

    return CappedTPESampler(max_history=cap, **options)


def _cmaes(
    seed: int | None, n_startup_trials: int = 1, sigma0: float | None = None, restart_strategy: str | None = None
) -> Any:
    import optuna

    return optuna.samplers.CmaEsSampler(
        seed=seed,
        n_startup_trials=n_startup_trials,
        sigma0=sigma0,
        restart_strategy=restart_strategy,
        warn_independent_sampling=False,
    )


def _gp(seed: int | None, n_startup_trials: int = 10, deterministic_objective: bool = False) -> Any:
    import optuna

    return optuna.samplers.GPSampler(
        seed=seed, n_startup_trials=n_startup_trials, deterministic_objective=deterministic_objective
    )


def _nsga2(
    seed: int | None, population_size: int = 50, mutation_prob: float | None = None, crossover_prob: float = 0.9
) -> Any:
    import optuna

    return optuna.samplers.NSGAIISampler(
        seed=seed, population_size=population_size, mutation_prob=mutation_prob, crossover_prob=crossover_prob
    )


def _grid(space: Any, metrics: list[str], modes: list[str], seed: int | None) -> Any:
    from hpo.strategies._grid import GridSearcher

    return GridSearcher(space)


def _fifo() -> Any:
    from hpo.strategies._schedulers import FIFO

    return FIFO()


def _asha(outcomes: Any, budget: int | None, grace_period: int = 1, reduction_factor: float = 3,
          brackets: int = 1) -> Any:
    from hpo.strategies._schedulers import ASHA

    # `outcomes`: ASHA also records the highest rung each trial reaches
    return ASHA(outcomes, max_t=budget, grace_period=grace_period, reduction_factor=reduction_factor,
                brackets=brackets)


def _asha_milestones(budget: int | None, options: Mapping[str, Any]) -> frozenset[int]:
    """ASHA's rung epochs, computed as Ray's ``AsyncHyperBandScheduler`` lays out its brackets
    (``_Bracket.__init__``, Ray 2.60): bracket ``s`` has rungs ``grace * rf**(k + s)`` for ``k`` below
    ``int(log(max_t / grace) / log(rf) - s + 1)``. A rung at a fractional epoch (reduction factor
    2.5) is decided at the next whole one."""
    import numpy as np  # np.log, as Ray uses, so the rung count rounds exactly as Ray's does

    if not budget:
        return frozenset()
    grace, rf = options["grace_period"], options["reduction_factor"]
    steps: set[int] = set()
    for s in range(int(options["brackets"])):
        rungs = int(np.log(budget / grace) / np.log(rf) - s + 1)
        steps.update(math.ceil(grace * rf ** (k + s)) for k in range(max(rungs, 0)))
    return frozenset(steps)


def _hyperband(budget: int | None, reduction_factor: float = 3) -> Any:
    from hpo.strategies._schedulers import HyperBand

    return HyperBand(max_t=budget, reduction_factor=reduction_factor)


def _median(grace_period: int = 1, min_samples_required: int = 3) -> Any:
    from hpo.strategies._schedulers import MedianStopping

    return MedianStopping(grace_period=grace_period, min_samples_required=min_samples_required)


def _pbt(
    space: Any,
    perturbation_interval: int = 2,
    quantile_fraction: float = 0.25,
    resample_probability: float = 0.25,
    mutate: list[str] | None = None,
) -> Any:
    from hpo.strategies._schedulers import PBT

    return PBT(space, perturbation_interval=perturbation_interval, quantile_fraction=quantile_fraction,
               resample_probability=resample_probability, mutate=mutate)


# -- rules across options, the space and the budget (checked before launch) -----------------------


def _within_budget(option: str) -> Callable[[dict[str, Any], StrategyContext], None]:
    def check(options: dict[str, Any], ctx: StrategyContext) -> None:
        value = options[option]
        if ctx.budget is not None and value > ctx.budget:
            raise HpoConfigError(
                f"{ctx.key}.{option}", f"must be <= the trial budget max_t ({ctx.budget}): no trial runs longer",
                value, "Lower it, or raise `task.epochs` (or `strategy.max_t`).")
    return check


def _hyperband_relations(options: dict[str, Any], ctx: StrategyContext) -> None:
    import numpy as np  # as Ray's HyperBandScheduler computes its brackets (Ray 2.60)

    rf, budget = options["reduction_factor"], ctx.budget
    if not budget:
        return
    s_max = int(np.round(np.log(budget) / np.log(rf)))
    if int(budget * rf ** (-s_max)) < 1:
        raise HpoConfigError(
            f"{ctx.key}.reduction_factor",
            f"must leave HyperBand's smallest bracket at least one step of the budget max_t ({budget})",
            rf, f"Use a reduction_factor <= {budget}, or raise `task.epochs` (or `strategy.max_t`).")


def _pbt_relations(options: dict[str, Any], ctx: StrategyContext) -> None:
    numeric = ctx.space.numeric_names()
    mutate = options["mutate"]
    for name in mutate if mutate is not None else []:
        if name not in numeric:
            raise HpoConfigError(f"{ctx.key}.mutate", f"must list unconditional float/int parameters of the "
                                 f"space; those are {numeric}", name)
    if not (mutate if mutate is not None else numeric):
        raise HpoConfigError("space" if mutate is None else f"{ctx.key}.mutate",
                             "PBT needs at least one float or int parameter to mutate",
                             list(ctx.space.params) if mutate is None else mutate,
                             "Add a `type: float` or `type: int` parameter without `when`.")
    interval = options["perturbation_interval"]
    if ctx.budget is not None and interval >= ctx.budget:
        raise HpoConfigError(
            f"{ctx.key}.perturbation_interval",
            f"must be < the trial budget max_t ({ctx.budget}), or PBT never copies a trial before it ends",
            interval, "Lower it, or raise `task.epochs` (or `strategy.max_t`).")


_COUNT = [Interval(int, 0, None)]
_FRACTION = [Interval(float, 0, 1)]


BUILTINS = [
    StrategyInfo("grid", "searcher", "Every combination of grid/categorical/fixed values, in order", _grid,
                 multi_objective=True, grid_only=True, learns_from_results=False),
    StrategyInfo("random", "sampler", "Independent uniform (or log-uniform) random sampling", _random,
                 multi_objective=True, learns_from_results=False),
    StrategyInfo("sobol", "sampler", "Quasi-random scrambled Sobol sequence: even coverage of the space", _sobol,
                 multi_objective=True, aliases=("qmc",), learns_from_results=False,
                 constraints={"scramble": [Boolean()]}),
    StrategyInfo("tpe", "sampler", "Optuna's Tree-structured Parzen Estimator (default Bayesian search)", _tpe,
                 multi_objective=True, aliases=("optuna",),
                 constraints={"n_startup_trials": _COUNT, "multivariate": [Boolean(), OneOf((None,))],
                              "group": [Boolean()],
                              # the most finished trials TPE models per suggestion; 0 or null: no cap
                              "max_history": [Interval(int, TPE_MIN_HISTORY, None), OneOf((0, None))]}),
    StrategyInfo("cmaes", "sampler", "Optuna's CMA-ES evolution strategy for continuous spaces", _cmaes,
                 constraints={"n_startup_trials": _COUNT,
                              "sigma0": [Interval(float, 0, None, closed="neither"), OneOf((None,))],
                              "restart_strategy": [OneOf((None, "ipop", "bipop"))]}),
    StrategyInfo("gp", "sampler", "Optuna's Gaussian-process Bayesian optimization", _gp, multi_objective=True,
                 constraints={"n_startup_trials": _COUNT, "deterministic_objective": [Boolean()]}),
    StrategyInfo("nsga2", "sampler", "Optuna's NSGA-II genetic algorithm for multi-objective Pareto fronts", _nsga2,
                 multi_objective=True,
                 constraints={"population_size": [Interval(int, 2, None)],
                              "mutation_prob": [*_FRACTION, OneOf((None,))], "crossover_prob": _FRACTION}),
    StrategyInfo("fifo", "scheduler", "Run every trial to its full budget (no early stopping)", _fifo,
                 multi_objective=True, aliases=("none",), decides_in_trial=False),
    StrategyInfo("asha", "scheduler", "Asynchronous successive halving: stop the worst trials at each rung", _asha,
                 needs_budget=True, milestones=_asha_milestones, decides_in_worker=True,
                 constraints={"grace_period": [Interval(int, 1, None)],
                              "reduction_factor": [Interval(float, 1, None, closed="neither")],
                              "brackets": [Interval(int, 1, None)]},
                 relations=_within_budget("grace_period")),
    StrategyInfo("hyperband", "scheduler", "Synchronous HyperBand brackets (pauses and resumes via checkpoints)",
                 _hyperband, needs_budget=True, needs_checkpoints=True,
                 constraints={"reduction_factor": [Interval(float, 1, None, closed="neither")]},
                 relations=_hyperband_relations),
    StrategyInfo("pbt", "scheduler", "Population-based training: copy the best trials' weights, mutate lr/decay",
                 _pbt, needs_budget=True, searchers=("random",), needs_checkpoints=True, rewrites_configs=True,
                 checkpoint_every="perturbation_interval",
                 constraints={"perturbation_interval": [Interval(int, 1, None)],
                              "quantile_fraction": [Interval(float, 0, 0.5)],
                              "resample_probability": _FRACTION, "mutate": [ListOf(str, 1), OneOf((None,))]},
                 relations=_pbt_relations),
    StrategyInfo("median", "scheduler", "Median stopping rule: stop trials below the median of earlier trials",
                 _median, decides_in_worker=True,
                 constraints={"grace_period": [Interval(int, 0, None)],
                              "min_samples_required": [Interval(int, 1, None)]},
                 relations=_within_budget("grace_period")),
]

for _info in BUILTINS:
    register(_info)
