"""Pluggable search strategies: a searcher (what to try) plus a scheduler (when to stop).

The runner decides by declared capabilities (:func:`capabilities`), never by a strategy's name.

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
from hpo.strategies._constraints import Boolean, Interval, ListOf, OneOf, Rule
from hpo.strategies._outcomes import TrialOutcomes
from hpo.strategies._registry import (
    ENTRY_POINT_GROUP,
    StrategyContext,
    StrategyInfo,
    canonical_name,
    get_strategy,
    list_strategies,
    register,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Boolean",
    "Capabilities",
    "Interval",
    "ListOf",
    "OneOf",
    "Rule",
    "StrategyContext",
    "StrategyInfo",
    "StrategySpec",
    "TaggedStudy",
    "TrialOutcomes",
    "build_scheduler",
    "build_strategy",
    "canonical_name",
    "capabilities",
    "check_strategy",
    "get_strategy",
    "list_strategies",
    "register",
    "wrap_scheduler",
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


@dataclass(frozen=True)
class Capabilities:
    """What the runner must know about a searcher + scheduler pair, from their declarations.

    Attributes:
        searcher, scheduler: the canonical names (aliases resolved).
        learns_from_results: the searcher's suggestions depend on finished trials.
        decides_in_trial: the scheduler stops, pauses or changes trials between reports.
        decides_in_worker: its decisions can be asked from inside a packed trial's worker
            (:mod:`hpo.decisions`): trials are packed even though it decides inside them.
        needs_checkpoints: trials continue from checkpoints (HyperBand pauses, PBT copies).
        rewrites_configs: the scheduler changes configs mid-trial (PBT): Ray samples the space
            (``space.to_ray()``), MLflow logs each hyperparameter's schedule.
        checkpoint_interval: how often (steps) trials must checkpoint; None: not needed.
        decision_steps: the steps the scheduler decides at for the budget; None: every step;
            empty: none (FIFO).
        keep_checkpoints: checkpoints to keep per trial by default (PBT copies need more).
    """

    searcher: str
    scheduler: str
    learns_from_results: bool
    decides_in_trial: bool
    decides_in_worker: bool
    needs_checkpoints: bool
    rewrites_configs: bool
    checkpoint_interval: int | None
    decision_steps: frozenset[int] | None
    keep_checkpoints: int


def capabilities(spec: StrategySpec, budget: int | None = None) -> Capabilities:
    """The declared capabilities of ``spec``'s searcher and scheduler, for a trial budget.

    Example:
        >>> caps = capabilities(StrategySpec("tpe", "asha", scheduler_options={"grace_period": 1}), budget=9)
        >>> caps.learns_from_results, caps.decides_in_trial, sorted(caps.decision_steps)
        (True, True, [1, 3, 9])
        >>> capabilities(StrategySpec("random", "none")).decides_in_trial
        False
    """
    searcher = get_strategy(spec.searcher, "searcher", "strategy.searcher")
    scheduler = get_strategy(spec.scheduler, "scheduler", "strategy.scheduler")
    return Capabilities(
        searcher=searcher.name,
        scheduler=scheduler.name,
        learns_from_results=searcher.learns_from_results,
        decides_in_trial=bool(scheduler.decides_in_trial),
        decides_in_worker=scheduler.decides_in_worker,
        needs_checkpoints=scheduler.needs_checkpoints,
        rewrites_configs=scheduler.rewrites_configs,
        checkpoint_interval=scheduler.checkpoint_interval(spec.scheduler_options),
        decision_steps=scheduler.decision_steps(budget, spec.scheduler_options),
        keep_checkpoints=4 if scheduler.rewrites_configs else 2,
    )


def check_strategy(
    spec: StrategySpec, space: SearchSpace, metrics: list[str], budget: int | None, key: str = "strategy"
) -> tuple[StrategyInfo, StrategyInfo]:
    """Validate a strategy against the space, objectives and budget, before anything is launched:
    names, option names, option values (declared constraints) and rules across them."""
    searcher = get_strategy(spec.searcher, "searcher", f"{key}.searcher")
    scheduler = get_strategy(spec.scheduler, "scheduler", f"{key}.scheduler")
    if spec.seed is not None and (isinstance(spec.seed, bool) or not isinstance(spec.seed, int)
                                  or not 0 <= spec.seed < 2**32):  # numpy's range: Optuna and Ray fail beyond it
        raise HpoConfigError(f"{key}.seed", "must be an integer from 0 to 2**32 - 1, or null", spec.seed)
    if scheduler.needs_budget and not budget:
        raise HpoConfigError(
            f"{key}.max_t",
            f"scheduler {scheduler.name!r} needs the maximum number of reports per trial",
            None,
            "Set `strategy.max_t` (the built-in task uses its `epochs`).",
        )
    searcher.check_options(spec.searcher_options, f"{key}.searcher_options",
                           StrategyContext(space, budget, f"{key}.searcher_options"))
    scheduler.check_options(spec.scheduler_options, f"{key}.scheduler_options",
                            StrategyContext(space, budget, f"{key}.scheduler_options"))
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
    return searcher, scheduler


_SCHEDULER_INPUTS = ("outcomes", "budget", "space")  # what hpo hands a scheduler factory that names it


def wrap_scheduler(scheduler: Any, outcomes: TrialOutcomes, budget: int | None, space: SearchSpace | None = None
                   ) -> Any:
    """Wrap a Ray ``TrialScheduler`` so that its early stops are recorded in ``outcomes``
    (what :func:`build_strategy` does to every scheduler, built-in or plug-in).

    Example:
        >>> from ray.tune.schedulers import FIFOScheduler
        >>> wrap_scheduler(FIFOScheduler(), TrialOutcomes(), 3).budget
        3
    """
    from hpo.strategies._schedulers import RecordingScheduler

    return RecordingScheduler(scheduler, outcomes, budget, space)


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
    """Build the (Ray searcher, Ray scheduler) pair for a spec, checking it first.

    The scheduler comes wrapped in one recording wrapper (:func:`wrap_scheduler`): a STOP
    before ``budget`` is recorded as a pruned trial, whatever scheduler made it.
    """
    searcher_info, scheduler_info = check_strategy(spec, space, metrics, budget)
    if scheduler_info.rewrites_configs:
        # A scheduler that rewrites configs mid-trial (Ray's PBT) accepts only Ray's own variant
        # generator; the runner hands it the space as Ray domains. Random sampling, seeded.
        from ray.tune.search import BasicVariantGenerator

        searcher: Any = BasicVariantGenerator(random_state=spec.seed)
    elif searcher_info.kind == "sampler":
        from hpo.strategies._optuna import OptunaSearcher

        sampler = searcher_info.factory(spec.seed, **spec.searcher_options)
        searcher = OptunaSearcher(space, sampler, metrics, modes, outcomes, storage=storage, study_name=study_name)
    else:
        searcher = searcher_info.factory(space, metrics, modes, spec.seed, **spec.searcher_options)
    return searcher, build_scheduler(spec, space, budget, outcomes, scheduler_info)


def build_scheduler(spec: StrategySpec, space: SearchSpace | None, budget: int | None, outcomes: TrialOutcomes,
                    info: StrategyInfo | None = None) -> Any:
    """The spec's Ray scheduler, wrapped so that its early stops are recorded in ``outcomes``
    (metric and mode are set later, as Ray Tune sets them). The spec is assumed checked.

    Example:
        >>> build_scheduler(StrategySpec("random", "asha"), None, 9, TrialOutcomes()).inner.__class__.__name__
        'ASHA'
    """
    info = info or get_strategy(spec.scheduler, "scheduler", "strategy.scheduler")
    given = {"outcomes": outcomes, "budget": budget, "space": space}
    takes = inspect.signature(info.factory).parameters
    inputs = {name: given[name] for name in _SCHEDULER_INPUTS if name in takes}
    scheduler = info.factory(**inputs, **spec.scheduler_options)
    return wrap_scheduler(scheduler, outcomes, budget, space)


def __getattr__(name: str) -> Any:
    # Optuna-backed classes load on first use: `hpo --help` and `hpo validate` import no Optuna or Ray.
    if name == "TaggedStudy":
        from hpo.strategies._optuna import TaggedStudy

        return TaggedStudy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
