"""Pluggable search strategies: a searcher (what to try) plus a scheduler (when to stop).

Example:
    >>> from hpo.strategies import list_strategies
    >>> "tpe" in [s.name for s in list_strategies()]
    True
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from hpo.errors import HpoConfigError, Shown
from hpo.space import Grid, SearchSpace
from hpo.strategies import _builtin  # noqa: F401  (registers the built-ins)
from hpo.strategies._outcomes import TrialOutcomes
from hpo.strategies._registry import ENTRY_POINT_GROUP, StrategyInfo, get_strategy, list_strategies, register

__all__ = [
    "ENTRY_POINT_GROUP",
    "StrategyInfo",
    "StrategySpec",
    "TrialOutcomes",
    "build_strategy",
    "check_strategy",
    "list_strategies",
    "register",
]


@dataclass(frozen=True)
class StrategySpec:
    """Which searcher and scheduler to use, with their options and the seed."""

    searcher: str = "tpe"
    scheduler: str = "fifo"
    searcher_options: dict[str, Any] = field(default_factory=dict)
    scheduler_options: dict[str, Any] = field(default_factory=dict)
    seed: int | None = 0

    @classmethod
    def parse(cls, text: str, seed: int | None = 0) -> StrategySpec:
        """``"tpe+asha"`` -> searcher tpe, scheduler asha; ``"random"`` -> random + fifo."""
        searcher, _, scheduler = text.partition("+")
        return cls(searcher=searcher.strip(), scheduler=scheduler.strip() or "fifo", seed=seed)


def check_strategy(
    spec: StrategySpec, space: SearchSpace, metrics: list[str], budget: int | None, key: str = "strategy"
) -> tuple[StrategyInfo, StrategyInfo]:
    """Validate a strategy against the space and objectives, before anything is launched."""
    searcher = get_strategy(spec.searcher, "searcher", f"{key}.searcher")
    scheduler = get_strategy(spec.scheduler, "scheduler", f"{key}.scheduler")
    searcher.check_options(spec.searcher_options, f"{key}.searcher_options")
    scheduler.check_options(spec.scheduler_options, f"{key}.scheduler_options")
    if scheduler.searchers and searcher.name not in scheduler.searchers:
        raise HpoConfigError(
            f"{key}.searcher",
            f"scheduler {scheduler.name!r} works only with searchers {list(scheduler.searchers)} (it changes "
            "configurations mid-trial, which a model-based searcher would misread)",
            spec.searcher,
        )
    if searcher.grid_only:
        space.grid(key="space")  # raises naming the first parameter grid cannot enumerate
    grids = [n for n, p in space.params.items() if isinstance(p, Grid)]
    if grids and not searcher.grid_values:
        raise HpoConfigError(
            f"space.{grids[0]}",
            f"searcher {searcher.name!r} cannot search grid values",
            Shown("type: grid"),
            "Use `searcher: grid`, or make it `type: categorical`.",
        )
    multi = len(metrics) > 1
    if multi and not searcher.multi_objective:
        raise HpoConfigError(
            f"{key}.searcher",
            "must support several objectives when `metric` is a list; multi-objective searchers: "
            f"{sorted(i.name for i in list_strategies('searcher') if i.multi_objective)}",
            spec.searcher,
        )
    if multi and not scheduler.multi_objective:
        raise HpoConfigError(
            f"{key}.scheduler",
            "early stopping needs a single metric; use `scheduler: fifo` with several objectives",
            spec.scheduler,
        )
    if scheduler.needs_budget and not budget:
        raise HpoConfigError(
            f"{key}.max_t",
            f"scheduler {scheduler.name!r} needs the maximum number of reports per trial",
            None,
            "Set `strategy.max_t` (the built-in task uses its `epochs`).",
        )
    return searcher, scheduler


def build_strategy(
    spec: StrategySpec,
    space: SearchSpace,
    metrics: list[str],
    modes: list[str],
    budget: int | None,
    outcomes: TrialOutcomes,
    storage: str | None = None,
    study_name: str | None = None,
) -> tuple[Any, Any]:
    """Build the (Ray searcher, Ray scheduler) pair for a validated spec."""
    searcher_info, scheduler_info = check_strategy(spec, space, metrics, budget)
    if scheduler_info.name == "pbt":
        # Ray's PBT accepts only its own variant generator (it rewrites configs mid-trial); the
        # runner hands it the space as Ray domains. Random sampling, seeded.
        from ray.tune.search import BasicVariantGenerator

        searcher: Any = BasicVariantGenerator(random_state=spec.seed)
    elif searcher_info.kind == "sampler":
        from hpo.strategies._optuna import OptunaSearcher

        sampler = searcher_info.factory(spec.seed, **spec.searcher_options)
        searcher = OptunaSearcher(space, sampler, metrics, modes, outcomes, storage=storage, study_name=study_name)
    else:
        searcher = searcher_info.factory(space, metrics, modes, spec.seed, **spec.searcher_options)
    # Ray hands metric and mode to the scheduler from TuneConfig.
    extra = {"space": space} if "space" in inspect.signature(scheduler_info.factory).parameters else {}
    scheduler = scheduler_info.factory(outcomes, budget, **extra, **spec.scheduler_options)
    return searcher, scheduler
