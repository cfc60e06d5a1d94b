"""Registry of searchers, Optuna samplers and schedulers, with entry-point plug-ins."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal

from hpo.errors import HpoConfigError
from hpo.strategies._constraints import Rule, check_option_values

ENTRY_POINT_GROUP = "hpo.strategies"
Kind = Literal["sampler", "searcher", "scheduler"]

# Leading parameters each kind's factory receives from hpo; the rest are user options.
_RESERVED: dict[str, tuple[str, ...]] = {
    "sampler": ("seed",),
    "searcher": ("space", "metrics", "modes", "seed"),
    "scheduler": ("outcomes", "budget", "space"),  # `space` only when the factory takes it
}


@dataclass(frozen=True)
class StrategyContext:
    """What a strategy's cross-option check sees: the search space, the trial budget and where
    its options sit in the experiment file."""

    space: Any
    budget: int | None
    key: str


@dataclass(frozen=True)
class StrategyInfo:
    """One pluggable strategy, and the capabilities the runner decides by (never by its name).

    Attributes:
        name: the name used in experiment files (``searcher: tpe``).
        kind: ``"sampler"`` (factory returns an ``optuna.samplers.BaseSampler``; hpo drives it
            through an honest ask-and-tell searcher), ``"searcher"`` (returns a Ray Tune
            ``Searcher``) or ``"scheduler"`` (returns a Ray Tune ``TrialScheduler``; hpo wraps it
            so that its early STOP decisions are recorded as pruned trials).
        description: one line for ``hpo strategies``.
        factory: callable; its first parameters are ``_RESERVED[kind]`` (a scheduler's factory
            gets only those of ``outcomes``, ``budget``, ``space`` it names), the remaining keyword
            parameters are the options users may set. It builds the object and checks nothing:
            option values are checked before launch through ``constraints`` and ``relations``.
        multi_objective: whether it handles several metrics.
        grid_only: whether it only enumerates finite values (grid).
        grid_values: whether it can search ``grid`` parameters (as categorical choices).
        needs_budget: scheduler needs a maximum number of steps per trial (``max_t``).
        searchers: the only searchers a scheduler works with (empty: any).
        aliases: other accepted names; the experiment stores the canonical ``name``.
        learns_from_results: searcher: its next suggestions depend on finished trials' results
            (TPE, GP, CMA-ES; False for grid, random, Sobol), so packing keeps results flowing.
        decides_in_trial: scheduler: stops, pauses or changes trials between reports, so trials
            cannot be packed into one Ray trial (default True for schedulers, False for FIFO).
        decides_in_worker: scheduler: its only decisions are CONTINUE and STOP, each from one trial's
            own results at its decision steps, against a table of the others' (ASHA's rungs, the
            median rule's running means): a packed trial can then ask it from its worker
            (:mod:`hpo.decisions`, with no controller), so its trials are packed. Schedulers that
            pause and resume trials or copy them (HyperBand, PBT) do not.
        needs_checkpoints: scheduler: continues trials from checkpoints (HyperBand pauses and
            resumes, PBT copies), so the built-in task must save them.
        rewrites_configs: scheduler: changes a trial's configuration mid-trial (PBT); it then
            samples the space itself (Ray's variant generator) and keeps more checkpoints.
        checkpoint_every: the option whose value is how often (in steps) checkpoints are needed.
        milestones: ``(budget, options) -> steps`` the scheduler decides at (ASHA's rungs);
            unset: every step for a scheduler that decides in trials, none otherwise.
        constraints: option -> rules its value must satisfy (any one), checked before launch.
        relations: ``(options with defaults, StrategyContext) -> None`` raising
            :class:`HpoConfigError` for rules across options, the space or the budget.
    """

    name: str
    kind: Kind
    description: str
    factory: Callable[..., Any]
    multi_objective: bool = False
    grid_only: bool = False
    grid_values: bool = True
    needs_budget: bool = False
    searchers: tuple[str, ...] = field(default=())
    aliases: tuple[str, ...] = field(default=())
    learns_from_results: bool = True
    decides_in_trial: bool | None = None
    decides_in_worker: bool = False
    needs_checkpoints: bool = False
    rewrites_configs: bool = False
    checkpoint_every: str | None = None
    milestones: Callable[[int | None, Mapping[str, Any]], frozenset[int] | None] | None = field(
        default=None, compare=False)
    constraints: Mapping[str, Sequence[Rule]] = field(default_factory=dict, compare=False, hash=False)
    relations: Callable[[dict[str, Any], StrategyContext], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.decides_in_trial is None:
            object.__setattr__(self, "decides_in_trial", self.kind == "scheduler")

    def options(self) -> dict[str, Any]:
        """User-settable options and their defaults."""
        sig = inspect.signature(self.factory)
        return {
            n: (p.default if p.default is not inspect.Parameter.empty else None)
            for n, p in sig.parameters.items()
            if n not in _RESERVED[self.kind] and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        }

    def check_options(self, options: Mapping[str, Any], key: str, context: StrategyContext | None = None) -> None:
        """Check option names, then values against ``constraints``, then ``relations`` (given a context).

        Example:
            >>> get_strategy("asha", "scheduler", "s").check_options({"grace_period": 0}, "strategy.scheduler_options")
            Traceback (most recent call last):
            ...
            hpo.errors.HpoConfigError: strategy.scheduler_options.grace_period: must be an integer >= 1, but got 0. \
Its default is 1.
        """
        valid = self.options()
        if not isinstance(options, Mapping):
            raise HpoConfigError(key, "must be a mapping of option name to value", options)
        for opt in options:
            if opt not in valid:
                close = difflib.get_close_matches(str(opt), list(valid), n=1)
                raise HpoConfigError(
                    f"{key}.{opt}",
                    f"is not an option of {self.kind} {self.name!r}; valid options: {sorted(valid)}",
                    opt,
                    f"Did you mean {close[0]!r}?" if close else None,
                )
        check_option_values(options, self.constraints, key, valid)
        if context is not None and self.relations is not None:
            self.relations({**valid, **options}, context)

    def decision_steps(self, budget: int | None, options: Mapping[str, Any]) -> frozenset[int] | None:
        """The steps this scheduler decides at for a trial budget: ``None`` means every step, an
        empty set none (FIFO). A fractional milestone counts at the next whole step.

        Example:
            >>> sorted(get_strategy("asha", "scheduler", "s").decision_steps(9, {}))
            [1, 3, 9]
        """
        if not self.decides_in_trial:
            return frozenset()
        if self.milestones is None:
            return None
        return self.milestones(budget, {**self.options(), **options})

    def checkpoint_interval(self, options: Mapping[str, Any]) -> int | None:
        """How often (in steps) trials must save checkpoints for this scheduler; None: not needed."""
        if not self.needs_checkpoints:
            return None
        value = options.get(self.checkpoint_every) if self.checkpoint_every else None
        # Unset: every step (always safe; the option's own default may be coarser).
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1 else 1


_REGISTRY: dict[str, StrategyInfo] = {}
_ALIASES: dict[str, str] = {}
_plugins_loaded = False


def register(info: StrategyInfo) -> StrategyInfo:
    """Add a strategy (third parties usually use the ``hpo.strategies`` entry-point group).

    Example:
        >>> import optuna
        >>> register(StrategyInfo("my-random", "sampler", "Random, my way",
        ...     lambda seed: optuna.samplers.RandomSampler(seed=seed)))  # doctest: +ELLIPSIS
        StrategyInfo(name='my-random', ...)
    """
    if info.kind not in _RESERVED:
        raise HpoConfigError(f"strategies.{info.name}.kind", f"must be one of {sorted(_RESERVED)}", info.kind)
    _REGISTRY[info.name] = info
    for alias in info.aliases:
        _ALIASES[alias] = info.name
    return info


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        obj = ep.load()
        infos = obj() if callable(obj) and not isinstance(obj, StrategyInfo) else obj
        for info in infos if isinstance(infos, (list, tuple)) else [infos]:
            if not isinstance(info, StrategyInfo):
                raise TypeError(
                    f"entry point {ep.name!r} in group {ENTRY_POINT_GROUP!r} must provide a StrategyInfo "
                    f"(or a list of them), got {type(info).__name__}"
                )
            register(info)


def list_strategies(kind: Kind | None = None) -> list[StrategyInfo]:
    """All registered strategies (built-ins and plug-ins), optionally of one kind."""
    _load_plugins()
    infos = sorted(_REGISTRY.values(), key=lambda i: (i.kind != "searcher" and i.kind != "sampler", i.name))
    return [i for i in infos if kind is None or i.kind == kind or (kind == "searcher" and i.kind == "sampler")]


def get_strategy(name: str, role: Literal["searcher", "scheduler"], key: str | None = None) -> StrategyInfo:
    """Look a name (or alias) up for a role; searchers include Optuna samplers.

    Example:
        >>> info = get_strategy("pbt", "scheduler")
        >>> info.rewrites_configs, info.needs_checkpoints, info.decides_in_trial
        (True, True, True)
    """
    key = key or f"strategy.{role}"
    _load_plugins()
    info = _REGISTRY.get(_ALIASES.get(name, name))
    if info is None or (info.kind == "scheduler") != (role == "scheduler"):
        valid = sorted(i.name for i in list_strategies(role))
        close = difflib.get_close_matches(str(name), valid, n=1)
        raise HpoConfigError(key, f"must name a registered {role}; valid: {valid}", name,
                             f"Did you mean {close[0]!r}?" if close else None)
    return info


def canonical_name(name: str, role: Literal["searcher", "scheduler"], key: str) -> str:
    """The registered name behind ``name`` (aliases resolved), for storing in the experiment.

    Example:
        >>> canonical_name("none", "scheduler", "strategy.scheduler")
        'fifo'
    """
    return get_strategy(name, role, key).name
