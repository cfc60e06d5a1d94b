"""Registry of searchers, Optuna samplers and schedulers, with entry-point plug-ins."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal

from hpo.errors import HpoConfigError

ENTRY_POINT_GROUP = "hpo.strategies"
Kind = Literal["sampler", "searcher", "scheduler"]

# Leading parameters each kind's factory receives from hpo; the rest are user options.
_RESERVED: dict[str, tuple[str, ...]] = {
    "sampler": ("seed",),
    "searcher": ("space", "metrics", "modes", "seed"),
    "scheduler": ("outcomes", "budget", "space"),  # `space` only when the factory takes it
}


@dataclass(frozen=True)
class StrategyInfo:
    """One pluggable strategy.

    Attributes:
        name: the name used in experiment files (``searcher: tpe``).
        kind: ``"sampler"`` (factory returns an ``optuna.samplers.BaseSampler``; hpo drives it
            through an honest ask-and-tell searcher), ``"searcher"`` (returns a Ray Tune
            ``Searcher``) or ``"scheduler"`` (returns a Ray Tune ``TrialScheduler``).
        description: one line for ``hpo strategies``.
        factory: callable; its first parameters are ``_RESERVED[kind]``, the remaining keyword
            parameters are the options users may set.
        multi_objective: whether it handles several metrics.
        grid_only: whether it only enumerates finite values (grid).
        grid_values: whether it can search ``grid`` parameters (as categorical choices).
        needs_budget: scheduler needs a maximum number of steps per trial (``max_t``).
        searchers: the only searchers a scheduler works with (empty: any).
        aliases: other accepted names.
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

    def options(self) -> dict[str, Any]:
        """User-settable options and their defaults."""
        sig = inspect.signature(self.factory)
        return {
            n: (p.default if p.default is not inspect.Parameter.empty else None)
            for n, p in sig.parameters.items()
            if n not in _RESERVED[self.kind] and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        }

    def check_options(self, options: dict[str, Any], key: str) -> None:
        valid = self.options()
        for opt in options:
            if opt not in valid:
                raise HpoConfigError(
                    f"{key}.{opt}",
                    f"is not an option of {self.kind} {self.name!r}; valid options: {sorted(valid)}",
                    opt,
                )


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


def get_strategy(name: str, role: Literal["searcher", "scheduler"], key: str) -> StrategyInfo:
    """Look a name up for a role; searchers include Optuna samplers."""
    _load_plugins()
    info = _REGISTRY.get(_ALIASES.get(name, name))
    ok = info is not None and (info.kind == "scheduler") == (role == "scheduler")
    if not ok:
        valid = sorted(i.name for i in list_strategies(role))
        raise HpoConfigError(key, f"must name a registered {role}; valid: {valid}", name)
    assert info is not None
    return info
