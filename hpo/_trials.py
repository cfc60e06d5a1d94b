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


def status_text(status: str, error: str | None = None, pruned_at: int | None = None,
                cut: tuple[int, str] | None = None) -> str:
    """A trial's terminal state as hpo writes it for people: MLflow's ``hpo.status`` tag and the
    ``hpo.status`` user attribute of the run directory's Optuna study.

    Example:
        >>> status_text("pruned", pruned_at=3), status_text("cut", cut=(2, "SIGINT"))
        ('pruned at epoch 3', 'cut at epoch 2 (SIGINT)')
    """
    if status == "errored":
        return f"errored: {error}"[:5000]
    if status == "pruned":
        return f"pruned at epoch {pruned_at}"
    if status == "cut":
        step, reason = cut or (0, "search stopped")
        return f"cut at epoch {step} ({reason})"
    return status
