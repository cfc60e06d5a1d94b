"""Errors raised by hpo (bad user input, a stopped search), and how hpo recognises a full disk."""

from __future__ import annotations

import errno
import re
from typing import Any

__all__ = ["DISK_FULL_ERRNOS", "HpoConfigError", "MetricNotReportedError", "SearchInterrupted", "Shown",
           "is_disk_full", "mentions_disk_full"]

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)  # no space left on the device; disk quota exceeded
# How such an error reads in text (a trial's traceback, pyarrow's messages): "[Errno 28]", strerror
_DISK_FULL_TEXT = re.compile(r"\[errno (?:" + "|".join(str(n) for n in DISK_FULL_ERRNOS) + r")\]"
                             r"|No space left on device|Disk quota exceeded", re.IGNORECASE)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is a write that failed for lack of space (``ENOSPC``) or quota (``EDQUOT``).

    Example:
        >>> import errno
        >>> is_disk_full(OSError(errno.ENOSPC, "No space left on device")), is_disk_full(OSError(errno.EACCES, "no"))
        (True, False)
    """
    return isinstance(exc, OSError) and (exc.errno in DISK_FULL_ERRNOS or mentions_disk_full(str(exc)))


def mentions_disk_full(text: str | None) -> bool:
    """Whether an error's text says the disk was full (``[Errno 28] No space left on device``)."""
    return bool(text) and _DISK_FULL_TEXT.search(str(text)) is not None


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
    """A signal (SIGINT, SIGTERM) or a full disk stopped the search: its running trials were cut
    and every record that could be written was; ``resume_command`` continues it. The ``hpo``
    command exits with ``exit_code`` (130 for SIGINT, 143 for SIGTERM, 75 for a full disk);
    ``message`` says what happened, when there is more to say than the signal's name."""

    def __init__(self, signal_name: str, exit_code: int, results: Any, resume_command: str,
                 message: str | None = None) -> None:
        super().__init__(message or f"search interrupted by {signal_name}; continue it with: {resume_command}")
        self.signal_name = signal_name
        self.exit_code = exit_code
        self.results = results
        self.resume_command = resume_command
        self.message = message
