"""Declared rules for strategy option values, checked in one place before anything starts.

Like scikit-learn's ``_parameter_constraints``: a strategy maps each option to the rules its
value may satisfy (any one of them), and :func:`check_option_values` checks them all, with an
error that names the option, the rules and the value.

Example:
    >>> rules = {"grace_period": [Interval(int, 1, None)]}
    >>> check_option_values({"grace_period": 2}, rules, "strategy.scheduler_options")
    >>> check_option_values({"grace_period": 0}, rules, "strategy.scheduler_options")
    Traceback (most recent call last):
    ...
    hpo.errors.HpoConfigError: strategy.scheduler_options.grace_period: must be an integer >= 1, but got 0
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hpo.errors import HpoConfigError

__all__ = ["Boolean", "Interval", "ListOf", "OneOf", "Rule", "check_option_values"]


class Rule:
    """One rule an option value may satisfy: ``accepts`` says whether it does, ``describe`` says the rule."""

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


def _is_number(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if kind is int:
        return isinstance(value, int)
    return isinstance(value, (int, float)) and math.isfinite(value)


@dataclass(frozen=True)
class Interval(Rule):
    """A number of ``kind`` (``int`` or ``float``; an int is a valid float) between ``low`` and ``high``.

    ``closed`` says which ends belong to the interval; ``None`` for a bound means unbounded.

    Example:
        >>> Interval(float, 0, 0.5).describe()
        'a number in [0, 0.5]'
        >>> Interval(float, 1, None, closed="neither").accepts(1)
        False
    """

    kind: type
    low: float | None = None
    high: float | None = None
    closed: Literal["both", "left", "right", "neither"] = "both"

    def accepts(self, value: Any) -> bool:
        if not _is_number(value, self.kind):
            return False
        if self.low is not None:
            if value < self.low or (value == self.low and self.closed in ("right", "neither")):
                return False
        if self.high is not None:
            if value > self.high or (value == self.high and self.closed in ("left", "neither")):
                return False
        return True

    def describe(self) -> str:
        noun = "an integer" if self.kind is int else "a number"
        low_in = self.closed in ("both", "left")
        high_in = self.closed in ("both", "right")
        if self.low is None and self.high is None:
            return noun
        if self.high is None:
            return f"{noun} {'>=' if low_in else '>'} {self.low:g}"
        if self.low is None:
            return f"{noun} {'<=' if high_in else '<'} {self.high:g}"
        return f"{noun} in {'[' if low_in else '('}{self.low:g}, {self.high:g}{']' if high_in else ')'}"


@dataclass(frozen=True)
class OneOf(Rule):
    """One of the listed values (``true`` is not ``1``; ``None`` is ``null``).

    Example:
        >>> OneOf((None, 0)).describe()
        'one of [null, 0]'
    """

    values: tuple[Any, ...]

    def accepts(self, value: Any) -> bool:
        return any(isinstance(value, bool) == isinstance(v, bool) and value == v and
                   (value is None) == (v is None) for v in self.values)

    def describe(self) -> str:
        shown = ", ".join("null" if v is None else repr(v) for v in self.values)
        return f"one of [{shown}]"


@dataclass(frozen=True)
class Boolean(Rule):
    """``true`` or ``false`` (a YAML boolean, not the string ``"false"``)."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)

    def describe(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class ListOf(Rule):
    """A list whose items are all of ``kind``; ``min_len`` items at least.

    Example:
        >>> ListOf(str, 1).accepts(["lr"]), ListOf(str, 1).accepts("lr")
        (True, False)
    """

    kind: type
    min_len: int = 0

    def accepts(self, value: Any) -> bool:
        return (isinstance(value, (list, tuple)) and len(value) >= self.min_len
                and all(isinstance(v, self.kind) and not isinstance(v, bool) for v in value))

    def describe(self) -> str:
        item = {str: "names", int: "integers", float: "numbers"}.get(self.kind, self.kind.__name__)
        return f"a list of {item}" + (f" ({self.min_len} at least)" if self.min_len else "")


def check_option_values(options: Mapping[str, Any], constraints: Mapping[str, Sequence[Rule]], key: str,
                        defaults: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`HpoConfigError` for the first option whose value satisfies none of its rules.

    Options without declared rules are not checked here (their names are checked elsewhere).
    """
    for name, value in options.items():
        rules = constraints.get(name)
        if not rules or any(rule.accepts(value) for rule in rules):
            continue
        rule = " or ".join(r.describe() for r in rules)
        fix = None
        if defaults is not None and name in defaults:
            default = defaults[name]
            fix = f"Its default is {'null' if default is None else repr(default)}."
        raise HpoConfigError(f"{key}.{name}", f"must be {rule}", value, fix)
