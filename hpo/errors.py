"""Errors raised by hpo for bad user input."""

from __future__ import annotations

from typing import Any

__all__ = ["HpoConfigError", "MetricNotReportedError", "SearchInterrupted", "Shown"]


class Shown(str):
    """A value description shown as is in an error (plain values are shown with ``repr``)."""

    def __repr__(self) -> str:
        return str(self)


MAX_SHOWN = 200  # characters of a value shown in a message (a 5 MB string must not flood the terminal)


def _short(value: Any) -> str:
    shown = repr(value)
    if len(shown) <= MAX_SHOWN:
        return shown
    return f"{shown[:MAX_SHOWN - 40]}...{shown[-20:]} ({len(shown)} characters)"


class HpoConfigError(ValueError):
    """A configuration value breaks a rule; raised before anything is launched.

    The message names the key path, the rule and the offending value, and says how to fix it.

    Example:
        >>> err = HpoConfigError("space.lr.low", "`low <= high` must hold", "low=1, high=0")
        >>> "space.lr.low" in str(err)
        True
    """

    def __init__(self, key: str, rule: str, value: Any = None, fix: str | None = None) -> None:
        self.key = key
        self.rule = rule
        self.value = value
        self.fix = fix
        msg = f"{key}: {rule}"
        if value is not None:
            msg += f", but got {_short(value)}"
        if fix:
            msg += f". {fix}"
        super().__init__(msg)


class MetricNotReportedError(HpoConfigError):
    """The trainable never reported the metric the search optimizes."""

    def __init__(self, metric: str, reported: list[str]) -> None:
        super().__init__(
            "metric",
            f"the trainable must report metric {metric!r}",
            Shown(f"a result with only {sorted(reported)}"),
            "Set `metric` to one of the reported metrics or report it from the trainable.",
        )
        self.metric = metric
        self.reported = sorted(reported)


class SearchInterrupted(KeyboardInterrupt):
    """A signal (SIGINT, SIGTERM) stopped the search: its running trials were cut and every
    record written; ``resume_command`` continues it. The ``hpo`` command exits with ``exit_code``
    (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signal_name: str, exit_code: int, results: Any, resume_command: str) -> None:
        super().__init__(f"search interrupted by {signal_name}; continue it with: {resume_command}")
        self.signal_name = signal_name
        self.exit_code = exit_code
        self.results = results
        self.resume_command = resume_command
