"""Declarative search spaces: parameter types, YAML loading, conditionals and conversions.

A space maps parameter names to parameters. Bounds are inclusive at both ends for every
type and every backend (Ray, Optuna, grid). A parameter may be *conditional*: active only
when a parent parameter takes one of the given values (``when: {optimizer: sgd}``); an
inactive parameter is absent from the trial's config.

Example:
    >>> space = SearchSpace({
    ...     "optimizer": Categorical(["sgd", "adam"]),
    ...     "lr": Float(1e-4, 1e-1, log=True),
    ...     "momentum": Float(0.0, 0.99, when={"optimizer": "sgd"}),
    ... })
    >>> sorted(space.names)
    ['lr', 'momentum', 'optimizer']
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpo.errors import HpoConfigError, Shown
from hpo.params import Categorical, Fixed, Float, Grid, Int, Param, param_from_dict

__all__ = [
    "Categorical",
    "Fixed",
    "Float",
    "Grid",
    "Int",
    "Param",
    "SearchSpace",
    "load_space",
]

SEARCH_SPACES_DIR = Path(__file__).resolve().parent / "search_spaces"  # shipped in the wheel


class SearchSpace:
    """An ordered, validated mapping of parameter names to parameters.

    Parents always come before their conditional children, so any searcher that walks
    :attr:`names` in order can decide which parameters are active.
    """

    def __init__(self, params: Mapping[str, Param | Any], *, key: str = "space") -> None:
        raw = {str(k): (v if isinstance(v, Param) else Fixed(v)) for k, v in params.items()}
        for name, p in raw.items():
            p.check(f"{key}.{name}")
            for parent, vals in p.when.items():
                if parent not in raw:
                    raise HpoConfigError(
                        f"{key}.{name}.when.{parent}",
                        f"names a parent parameter that does not exist; parameters: {sorted(raw)}",
                        parent,
                    )
                if parent == name:
                    raise HpoConfigError(f"{key}.{name}.when", "a parameter cannot depend on itself", parent)
                parent_vals = raw[parent].values()
                if parent_vals is None:
                    # A float is never exactly a listed value, and an int range's conditions are
                    # easy to get half right: conditions name parents with listed values only.
                    raise HpoConfigError(
                        f"{key}.{name}.when.{parent}",
                        "must name a parent with listed values (categorical, grid or fixed), not a "
                        f"{raw[parent].type_name} range",
                        Shown(f"{parent}: a {raw[parent].type_name} range"),
                        f"Make {parent!r} `type: categorical` with the values to condition on.",
                    )
                bad = [v for v in vals if v not in parent_vals]
                if bad:
                    raise HpoConfigError(
                        f"{key}.{name}.when.{parent}",
                        f"values must be among the parent's values {parent_vals}",
                        bad,
                    )
        self.params: dict[str, Param] = self._ordered(raw, key)

    @staticmethod
    def _ordered(raw: dict[str, Param], key: str) -> dict[str, Param]:
        ordered: dict[str, Param] = {}
        pending = dict(raw)
        while pending:
            ready = [n for n, p in pending.items() if all(parent in ordered for parent in p.when)]
            if not ready:
                raise HpoConfigError(key, "conditions must not form a cycle", sorted(pending))
            for n in ready:
                ordered[n] = pending.pop(n)
        return ordered

    # -- construction -----------------------------------------------------------------

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], *, base_dir: Path | None = None, key: str = "space") -> SearchSpace:
        """Build a space from its YAML form: ``{include: [...], params: {...}}`` or a bare params mapping.

        Included files are merged first, in order; parameters defined here override them.
        """
        return cls(_resolve(spec, base_dir or Path.cwd(), key, ()), key=key)

    def merge(self, other: SearchSpace) -> SearchSpace:
        """A new space with ``other``'s parameters added or overriding these."""
        return SearchSpace({**self.params, **other.params})

    # -- queries ------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def __contains__(self, name: object) -> bool:
        return name in self.params

    def __repr__(self) -> str:
        return f"SearchSpace({self.params!r})"

    def is_active(self, name: str, config: Mapping[str, Any]) -> bool:
        """Whether ``name`` is active given the (partial) config of its parents."""
        return all(parent in config and config[parent] in vals for parent, vals in self.params[name].when.items())

    def contains(self, config: Mapping[str, Any]) -> bool:
        """Whether ``config`` holds exactly the active parameters, each within bounds."""
        for name, p in self.params.items():
            active = self.is_active(name, config)
            if active != (name in config) or (active and not p.contains(config[name])):
                return False
        return set(config) <= set(self.params)

    def inactive_names(self, config: Mapping[str, Any]) -> list[str]:
        """The space's parameters present in ``config`` although their conditions do not hold
        (Ray's variant generator fills them with ``None``: it cannot leave a key out).

        Example:
            >>> space = SearchSpace({"opt": Categorical(["sgd", "adam"]),
            ...                      "momentum": Float(0.0, 0.9, when={"opt": "sgd"})})
            >>> space.inactive_names({"opt": "adam", "momentum": None})
            ['momentum']
        """
        active: dict[str, Any] = {}
        out = []
        for name in self.params:
            if name not in config:
                continue
            if self.is_active(name, active):
                active[name] = config[name]
            else:
                out.append(name)
        return out

    def numeric_names(self) -> list[str]:
        """The unconditional float and int parameters (what PBT may mutate)."""
        return [n for n, p in self.params.items() if isinstance(p, (Float, Int)) and not p.when]

    def non_grid_params(self) -> list[str]:
        """Parameters the grid strategy cannot enumerate (continuous ranges)."""
        return [n for n, p in self.params.items() if p.values() is None]

    # -- conversions ----------------------------------------------------------------------

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Sample a config define-by-run from an ``optuna.Trial`` (conditionals honoured)."""
        from hpo._optuna_space import suggest

        return suggest(self, trial)

    def to_optuna(self) -> dict[str, Any]:
        """Optuna distributions for every non-fixed parameter (conditionals included)."""
        from hpo._optuna_space import distributions

        return distributions(self)

    def to_ray(self) -> dict[str, Any]:
        """A Ray Tune ``param_space`` with inclusive bounds; conditionals become ``sample_from``.

        Stepped ranges draw exactly Optuna's values, ``low + k * step``. Ray cannot leave a key
        out, so an inactive conditional parameter is drawn as ``None``; hpo's scheduler wrapper
        removes it from the trial's config before the trial starts (:meth:`inactive_names`).

        Example:
            >>> dom = SearchSpace({"n": Int(1, 10, step=4)}).to_ray()["n"]
            >>> sorted({dom.sample() for _ in range(200)})
            [1, 5, 9]
        """
        from hpo._ray_domains import param_space

        return param_space(self)

    def grid(self, key: str = "space") -> list[dict[str, Any]]:
        """Every combination of grid/categorical/fixed values; inactive parameters are left out."""
        bad = self.non_grid_params()
        if bad:
            p = self.params[bad[0]]
            raise HpoConfigError(
                f"{key}.{bad[0]}",
                "the grid strategy enumerates only grid, categorical and fixed parameters",
                Shown(f"a {p.type_name} range"),
                "Give it `type: grid` with explicit `values`, or pick a sampling strategy (random, tpe, ...).",
            )
        configs: list[dict[str, Any]] = [{}]
        for name, p in self.params.items():
            nxt: list[dict[str, Any]] = []
            for cfg in configs:
                if self.is_active(name, cfg):
                    nxt.extend({**cfg, name: v} for v in p.values() or [])
                else:
                    nxt.append(cfg)
            configs = nxt
        return configs

    def to_dict(self) -> dict[str, Any]:
        """The YAML form of this space (no includes), for records and artifacts."""
        out: dict[str, Any] = {}
        for name, p in self.params.items():
            d: dict[str, Any] = {"type": p.type_name}
            if isinstance(p, (Float, Int)):
                d.update(low=p.low, high=p.high)
                if p.log:
                    d["log"] = True
                if p.step is not None:
                    d["step"] = p.step
            elif isinstance(p, Grid):
                d["values"] = list(p.choices)
            elif isinstance(p, Categorical):
                d["choices"] = list(p.choices)
            elif isinstance(p, Fixed):
                d["value"] = p.value
            if p.when:
                d["when"] = {k: list(v) for k, v in p.when.items()}
            out[name] = d
        return out


def _resolve(spec: Any, base_dir: Path, key: str, seen: tuple[Path, ...]) -> dict[str, Param]:
    if not isinstance(spec, Mapping):
        raise HpoConfigError(key, "must be a mapping with `params` (and optionally `include`)", type(spec).__name__)
    if "params" in spec or "include" in spec:
        unknown = set(spec) - {"params", "include"}
        if unknown:
            raise HpoConfigError(
                f"{key}.{sorted(unknown)[0]}", "is not a key of a search space; valid keys: ['include', 'params']",
                sorted(unknown)[0],
            )
        includes = spec.get("include") or []
        params = spec.get("params") or {}
    else:
        includes, params = [], spec
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list):
        raise HpoConfigError(f"{key}.include", "must be a space file name or a list of them", includes)
    if not isinstance(params, Mapping):
        raise HpoConfigError(f"{key}.params", "must be a mapping of parameter name to definition", params)
    merged: dict[str, Param] = {}
    for i, inc in enumerate(includes):
        path = _find_include(str(inc), base_dir, f"{key}.include[{i}]")
        if path in seen:
            raise HpoConfigError(f"{key}.include[{i}]", "includes must not form a cycle", str(path))
        merged.update(_resolve(_read_yaml(path, f"{key}.include[{i}]"), path.parent, f"{path.name}", (*seen, path)))
    for name, p in params.items():
        merged[str(name)] = p if isinstance(p, Param) else param_from_dict(p, f"{key}.params.{name}")
    return merged


def _find_include(ref: str, base_dir: Path, key: str) -> Path:
    candidates = [base_dir / ref, SEARCH_SPACES_DIR / ref]
    if not ref.endswith((".yaml", ".yml")):
        candidates += [SEARCH_SPACES_DIR / f"{ref}.yaml"]
    for c in candidates:
        try:
            if c.is_file():
                return c.resolve()
        except OSError:  # a name too long for the file system, say: no such file either
            continue
    raise HpoConfigError(key, f"must name an existing space file (looked in {base_dir} and {SEARCH_SPACES_DIR})", ref)


def _read_yaml(path: Path, key: str) -> Any:
    from hpo._yaml import read_yaml

    return read_yaml(path, key) or {}  # UTF-8, no repeated keys, no absurd nesting


def load_space(path: str | Path) -> SearchSpace:
    """Load a search-space YAML file, resolving its includes.

    Example:
        >>> space = load_space("mlp")  # search_spaces/mlp.yaml
        >>> "lr" in space
        True
    """
    p = _find_include(str(path), Path.cwd(), "space")
    return SearchSpace.from_dict(_read_yaml(p, "space"), base_dir=p.parent, key=p.name)
