"""Shared, driver-side record of which trials a scheduler stopped early (and at which step),
and the highest ASHA rung each trial reached."""

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
        self._rungs: dict[str, tuple[int, int]] = {}  # trial id -> (rung index, its epoch)
        self._lock = threading.Lock()

    def record_pruned(self, trial_id: str, step: int) -> None:
        with self._lock:
            self._pruned.setdefault(trial_id, int(step))

    def record_rung(self, trial_id: str, index: int, epoch: int) -> None:
        with self._lock:
            if index >= self._rungs.get(trial_id, (-1, 0))[0]:
                self._rungs[trial_id] = (int(index), int(epoch))

    def rung_of(self, trial_id: str) -> tuple[int, int] | None:
        """(rung index from 0, the rung's epoch) of the highest rung the trial was recorded at."""
        return self._rungs.get(trial_id)

    def rungs(self) -> dict[str, tuple[int, int]]:
        with self._lock:
            return dict(self._rungs)

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

    def update(self, pruned: dict[str, int], rungs: dict[str, tuple[int, int]] | None = None) -> None:
        """Merge a saved record back in place (shared references stay valid after restore)."""
        with self._lock:
            self._pruned.update(pruned)
            self._rungs.update({k: (int(v[0]), int(v[1])) for k, v in (rungs or {}).items()})

    def __getstate__(self) -> dict[str, Any]:
        return {"pruned": self.as_dict(), "rungs": self.rungs()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._pruned = dict(state["pruned"])
        self._rungs = dict(state.get("rungs", {}))
        self._lock = threading.Lock()
