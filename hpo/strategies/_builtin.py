"""The built-in strategies: factories for searchers, Optuna samplers and schedulers."""

from __future__ import annotations

from typing import Any

from hpo.errors import HpoConfigError
from hpo.strategies._registry import StrategyInfo, register

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


def _max_history(value: Any, key: str) -> int | None:
    """``tpe``'s ``max_history``: an integer >= TPE_MIN_HISTORY; 0 or null for no cap."""
    if value is None or (value == 0 and not isinstance(value, bool)):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < TPE_MIN_HISTORY:
        raise HpoConfigError(key, f"must be an integer >= {TPE_MIN_HISTORY}, or 0 or null for no cap", value,
                             "It is the most finished trials TPE models per suggestion (default 1000).")
    return value


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

    cap = _max_history(max_history, "strategy.searcher_options.max_history")
    options: dict[str, Any] = dict(
        # multivariate None: Optuna's own default (Optuna 5: multivariate for one objective)
        seed=seed, n_startup_trials=n_startup_trials, multivariate=multivariate, group=bool(group and multivariate)
    )
    if cap is None:
        return optuna.samplers.TPESampler(**options)
    from hpo.strategies._optuna import CappedTPESampler

    return CappedTPESampler(max_history=cap, **options)


class _TPEInfo(StrategyInfo):
    """``tpe``'s registry entry: also checks ``max_history``'s value when the experiment is validated."""

    def check_options(self, options: dict[str, Any], key: str) -> None:
        super().check_options(options, key)
        if "max_history" in options:
            _max_history(options["max_history"], f"{key}.max_history")


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


def _fifo(outcomes: Any, budget: int | None) -> Any:
    from hpo.strategies._schedulers import FIFO

    return FIFO(outcomes, budget)


def _asha(
    outcomes: Any,
    budget: int | None,
    grace_period: int = 1,
    reduction_factor: float = 3,
    brackets: int = 1,
) -> Any:
    from hpo.strategies._schedulers import ASHA

    return ASHA(
        outcomes, budget, max_t=budget, grace_period=grace_period,
        reduction_factor=reduction_factor, brackets=brackets,
    )


def _hyperband(outcomes: Any, budget: int | None, reduction_factor: float = 3) -> Any:
    from hpo.strategies._schedulers import HyperBand

    return HyperBand(outcomes, budget, max_t=budget, reduction_factor=reduction_factor)


def _median(
    outcomes: Any,
    budget: int | None,
    grace_period: int = 1,
    min_samples_required: int = 3,
) -> Any:
    from hpo.strategies._schedulers import MedianStopping

    return MedianStopping(
        outcomes, budget, grace_period=grace_period, min_samples_required=min_samples_required
    )


def _pbt(
    outcomes: Any,
    budget: int | None,
    space: Any,
    perturbation_interval: int = 2,
    quantile_fraction: float = 0.25,
    resample_probability: float = 0.25,
    mutate: list[str] | None = None,
) -> Any:
    from hpo.strategies._schedulers import PBT

    return PBT(outcomes, budget, space, perturbation_interval=perturbation_interval,
               quantile_fraction=quantile_fraction, resample_probability=resample_probability, mutate=mutate)


BUILTINS = [
    StrategyInfo("grid", "searcher", "Every combination of grid/categorical/fixed values, in order", _grid,
                 multi_objective=True, grid_only=True),
    StrategyInfo("random", "sampler", "Independent uniform (or log-uniform) random sampling", _random,
                 multi_objective=True),
    StrategyInfo("sobol", "sampler", "Quasi-random scrambled Sobol sequence: even coverage of the space", _sobol,
                 multi_objective=True, aliases=("qmc",)),
    _TPEInfo("tpe", "sampler", "Optuna's Tree-structured Parzen Estimator (default Bayesian search)", _tpe,
             multi_objective=True, aliases=("optuna",)),
    StrategyInfo("cmaes", "sampler", "Optuna's CMA-ES evolution strategy for continuous spaces", _cmaes),
    StrategyInfo("gp", "sampler", "Optuna's Gaussian-process Bayesian optimization", _gp, multi_objective=True),
    StrategyInfo("nsga2", "sampler", "Optuna's NSGA-II genetic algorithm for multi-objective Pareto fronts", _nsga2,
                 multi_objective=True),
    StrategyInfo("fifo", "scheduler", "Run every trial to its full budget (no early stopping)", _fifo,
                 multi_objective=True, aliases=("none",)),
    StrategyInfo("asha", "scheduler", "Asynchronous successive halving: stop the worst trials at each rung", _asha,
                 needs_budget=True),
    StrategyInfo("hyperband", "scheduler", "Synchronous HyperBand brackets (pauses and resumes via checkpoints)",
                 _hyperband, needs_budget=True),
    StrategyInfo("pbt", "scheduler", "Population-based training: copy the best trials' weights, mutate lr/decay",
                 _pbt, needs_budget=True, searchers=("random",)),
    StrategyInfo("median", "scheduler", "Median stopping rule: stop trials below the median of earlier trials",
                 _median),
]

for _info in BUILTINS:
    register(_info)
