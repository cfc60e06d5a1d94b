"""Shared, driver-side record of which trials a scheduler stopped early, and at which step."""

from __future__ import annotations

import threading
from typing import Any


class TrialOutcomes:
    """Trial id -> step at which the scheduler pruned it.

    One instance is shared by the scheduler (which writes), the searcher (which tells Optuna
    the trial was pruned instead of completed) and the driver callbacks (progress, MLflow tags).
    It lives in the driver process only and is saved with the searcher's state on checkpoints.
    """

    def __init__(self) -> None:
        self._pruned: dict[str, int] = {}
        self._lock = threading.Lock()

    def record_pruned(self, trial_id: str, step: int) -> None:
        with self._lock:
            self._pruned.setdefault(trial_id, int(step))

    def pruned_at(self, trial_id: str) -> int | None:
        return self._pruned.get(trial_id)

    def is_pruned(self, trial_id: str) -> bool:
        return trial_id in self._pruned

    @property
    def num_pruned(self) -> int:
        return len(self._pruned)

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return dict(self._pruned)

    def update(self, pruned: dict[str, int]) -> None:
        """Merge a saved record back in place (shared references stay valid after restore)."""
        with self._lock:
            self._pruned.update(pruned)

    def __getstate__(self) -> dict[str, Any]:
        return {"pruned": self.as_dict()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._pruned = dict(state["pruned"])
        self._lock = threading.Lock()
