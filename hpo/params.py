"""Parameter types of a search space: float, int, categorical, grid, fixed, with conditions.

Bounds are inclusive at both ends. ``when={"optimizer": "sgd"}`` makes a parameter active only
when its parent takes one of the given values.

Example:
    >>> Float(1e-4, 1e-1, log=True).contains(0.1)
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from decimal import Decimal
from typing import Any

from hpo.errors import HpoConfigError, Shown

__all__ = ["Categorical", "Fixed", "Float", "Grid", "Int", "Param", "lattice_size", "lattice_value", "param_from_dict"]


def _conditions(when: Mapping[str, Any] | None, key: str) -> dict[str, tuple[Any, ...]]:
    if when is None:
        return {}
    if not isinstance(when, Mapping) or not when:
        raise HpoConfigError(f"{key}.when", "must be a non-empty mapping of parent name to value(s)", when)
    out: dict[str, tuple[Any, ...]] = {}
    for parent, values in when.items():
        vals = tuple(values) if isinstance(values, (list, tuple)) else (values,)
        if not vals:
            raise HpoConfigError(f"{key}.when.{parent}", "must list at least one parent value", values)
        out[str(parent)] = vals
    return out


@dataclass(frozen=True)
class Param:
    """Base of all parameter types. ``when`` makes it conditional on parent values."""

    when: dict[str, Any] = field(default_factory=dict, kw_only=True)  # parent -> tuple of values

    type_name = "param"

    def __post_init__(self) -> None:
        object.__setattr__(self, "when", _conditions(self.when or None, "param"))

    def check(self, key: str) -> None:
        """Raise HpoConfigError if the parameter breaks a rule."""

    def values(self) -> list[Any] | None:
        """The finite list of values, or None for continuous ranges."""
        return None

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a legal value of this parameter."""
        return False


def _check_range(p: Float | Int, key: str) -> None:
    for name in ("low", "high"):
        v = getattr(p, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise HpoConfigError(f"{key}.{name}", "must be a finite number", v)
    if not isinstance(p.log, bool):
        # YAML's `log: "false"` is a string, and any non-empty string would read as true.
        raise HpoConfigError(f"{key}.log", "must be true or false (a YAML boolean, unquoted)", p.log,
                             "Write `log: true` or `log: false` without quotes.")
    if p.low > p.high:
        raise HpoConfigError(key, "`low <= high` must hold", Shown(f"low={p.low}, high={p.high}"))
    if p.log and p.low <= 0:
        raise HpoConfigError(f"{key}.low", "must be > 0 when `log: true`", p.low,
                             "Use a positive low or `log: false`.")
    if p.step is not None:
        if isinstance(p.step, bool) or not isinstance(p.step, (int, float)) or not math.isfinite(p.step):
            raise HpoConfigError(f"{key}.step", "must be a finite number (unquoted)", p.step,
                                 "Write e.g. `step: 0.1`, without quotes.")
        if p.log:
            raise HpoConfigError(f"{key}.step", "cannot be combined with `log: true`", p.step)
        if p.step <= 0:
            raise HpoConfigError(f"{key}.step", "must be > 0", p.step)
        if p.high > p.low and p.step > p.high - p.low:
            raise HpoConfigError(
                f"{key}.step", f"must be <= high - low ({p.high - p.low:g}), or only `low` could ever be drawn",
                p.step, "Use a smaller step, widen the range, or make the parameter `type: fixed`.")


def lattice_size(low: float, high: float, step: float) -> int:
    """How many values the grid ``low + k * step`` has within ``[low, high]``.

    Counted in decimal, as Optuna does, so every backend draws exactly Optuna's values.

    Example:
        >>> lattice_size(0, 1, 0.3), lattice_size(1, 10, 4)
        (4, 3)
    """
    return int((Decimal(str(high)) - Decimal(str(low))) // Decimal(str(step))) + 1


def lattice_value(low: float, step: float, k: int) -> float | int:
    """``low + k * step`` without binary noise: ints stay ints, ``0 + 3 * 0.1`` is ``0.3``.

    Example:
        >>> [lattice_value(0, 0.3, k) for k in range(4)], lattice_value(1, 4, 2)
        ([0.0, 0.3, 0.6, 0.9], 9)
    """
    if isinstance(low, int) and isinstance(step, int) and not isinstance(step, bool):
        return low + int(k) * step
    return float(Decimal(str(low)) + int(k) * Decimal(str(step)))


@dataclass(frozen=True)
class Float(Param):
    """A real number in ``[low, high]``, optionally log-scaled or on a ``step`` grid."""

    low: float
    high: float
    log: bool = False
    step: float | None = None
    type_name = "float"

    def check(self, key: str) -> None:
        _check_range(self, key)

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not self.low <= value <= self.high:
            return False
        if self.step is None:
            return True
        k = (value - self.low) / self.step
        return abs(k - round(k)) <= 1e-9 * max(1.0, abs(k))


@dataclass(frozen=True)
class Int(Param):
    """An integer in ``[low, high]`` (both inclusive), optionally log-scaled or stepped."""

    low: int
    high: int
    log: bool = False
    step: int | None = None
    type_name = "int"

    def check(self, key: str) -> None:
        for name in ("low", "high", "step"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise HpoConfigError(f"{key}.{name}", "must be an integer", v)
        _check_range(self, key)

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int) or not self.low <= value <= self.high:
            return False
        return self.step is None or (value - self.low) % self.step == 0


@dataclass(frozen=True)
class Categorical(Param):
    """One of a list of choices, unordered."""

    choices: tuple[Any, ...]
    type_name = "categorical"

    def __init__(self, choices: Sequence[Any], *, when: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "choices", tuple(choices) if isinstance(choices, (list, tuple)) else choices)
        object.__setattr__(self, "when", _conditions(when or None, "param"))

    def check(self, key: str) -> None:
        if not isinstance(self.choices, tuple) or not self.choices:
            raise HpoConfigError(f"{key}.choices", "must be a non-empty list", self.choices)

    def values(self) -> list[Any]:
        return list(self.choices)

    def contains(self, value: Any) -> bool:
        return value in self.choices


@dataclass(frozen=True)
class Grid(Categorical):
    """Values searched exhaustively by the grid strategy; categorical under other searchers."""

    type_name = "grid"

    def __init__(self, values: Sequence[Any], *, when: Mapping[str, Any] | None = None) -> None:
        super().__init__(values, when=when)

    def check(self, key: str) -> None:
        if not isinstance(self.choices, tuple) or not self.choices:
            raise HpoConfigError(f"{key}.values", "must be a non-empty list", self.choices)


@dataclass(frozen=True)
class Fixed(Param):
    """A constant passed to every trial."""

    value: Any
    type_name = "fixed"

    def check(self, key: str) -> None:
        return None

    def values(self) -> list[Any]:
        return [self.value]

    def contains(self, value: Any) -> bool:
        return value == self.value


_TYPES: dict[str, type[Param]] = {"float": Float, "int": Int, "categorical": Categorical, "grid": Grid, "fixed": Fixed}
_KEYS = {
    "float": {"low", "high", "log", "step"},
    "int": {"low", "high", "log", "step"},
    "categorical": {"choices"},
    "grid": {"values"},
    "fixed": {"value"},
}


def param_from_dict(spec: Any, key: str) -> Param:
    """Build one parameter from its YAML form; a bare scalar or list is a fixed constant."""
    if not isinstance(spec, Mapping):
        return Fixed(spec)
    spec = dict(spec)
    if "type" not in spec:
        raise HpoConfigError(f"{key}.type", f"is required; valid types: {sorted(_TYPES)}", None)
    type_name = spec.pop("type")
    if not isinstance(type_name, str) or type_name not in _TYPES:  # `type: []` is no type either
        raise HpoConfigError(f"{key}.type", f"must be one of {sorted(_TYPES)}", type_name)
    when = _conditions(spec.pop("when", None), key)
    unknown = set(spec) - _KEYS[type_name]
    if unknown:
        raise HpoConfigError(
            f"{key}.{sorted(unknown)[0]}",
            f"is not a key of a {type_name} parameter; valid keys: {sorted(_KEYS[type_name] | {'type', 'when'})}",
            sorted(unknown)[0],
        )
    try:
        if type_name in ("categorical", "grid"):
            field_name = "choices" if type_name == "categorical" else "values"
            raw = spec.get(field_name)
            if not isinstance(raw, list) or not raw:
                raise HpoConfigError(f"{key}.{field_name}", "must be a non-empty list", raw)
            param: Param = _TYPES[type_name](raw, when=when)  # type: ignore[call-arg,misc,arg-type]
        else:
            param = _TYPES[type_name](**spec, when=when)  # type: ignore[call-arg,misc,arg-type]
    except TypeError as exc:
        required = [f.name for f in fields(_TYPES[type_name])  # type: ignore[arg-type]
                    if f.default is MISSING and f.default_factory is MISSING]
        missing = [name for name in required if name not in spec]
        if missing:  # `high` left out: name it, not the optional keys too
            raise HpoConfigError(f"{key}.{missing[0]}", f"is required in a {type_name} parameter", None) from exc
        raise HpoConfigError(key, f"a {type_name} parameter takes {sorted(_KEYS[type_name])}", spec) from exc
    param.check(key)
    return param
