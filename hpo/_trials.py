"""A failed trial's error text, read from a Ray ``Trial`` (or a packed trial's own record)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def error_text(trial: Any) -> str:
    """The last line of a failed trial's traceback (exception type and message), or the reason hpo
    ended it (``hpo_error``: e.g. ``trial_timeout_s``)."""
    message = getattr(trial, "hpo_error", None) or getattr(trial, "error_msg", None)  # (a packed trial's own)
    if message:
        return str(message)[:500]
    try:
        path = trial.error_file
        if path and Path(path).exists():
            lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
            if lines:
                return lines[-1][:500]
    except OSError:
        pass
    return "trial raised an exception"
