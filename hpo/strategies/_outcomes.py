"""Shared, driver-side record of how trials were stopped: pruned by a scheduler or cut by the
search (time budget, epoch budget, interrupt), with the step; the highest ASHA rung each
trial reached; and the one function that decides a trial's terminal state from them."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from typing import Any

# A trial's terminal state, the same in Results, trials.json, the Optuna study and MLflow.
COMPLETED, PRUNED, CUT, ERRORED, DIVERGED = "completed", "pruned", "cut", "errored", "diverged"
STATUSES = (COMPLETED, PRUNED, CUT, ERRORED, DIVERGED)
CUT_REASONS = ("time budget", "epoch budget", "SIGINT", "SIGTERM", "metric check")


class TrialOutcomes:
    """Trial id -> step at which the scheduler pruned it.

    One instance is shared by the scheduler (which writes), the searcher (which tells Optuna
    the trial was pruned instead of completed) and the driver callbacks (progress, MLflow tags).
    It lives in the driver process only and is saved with the searcher's state on checkpoints.
    """

    def __init__(self) -> None:
        self._pruned: dict[str, int] = {}
        self._cut: dict[str, tuple[int, str]] = {}  # trial id -> (its last step, why the search stopped)
        self._rungs: dict[str, tuple[int, int]] = {}  # trial id -> (rung index, its epoch)
        self._lock = threading.Lock()

    def record_cut(self, trial_id: str, step: int, reason: str) -> None:
        """The search stopped this trial (not a scheduler's judgement): it never counts as completed."""
        with self._lock:
            if trial_id not in self._pruned:
                self._cut.setdefault(trial_id, (int(step), str(reason)))

    def cut_of(self, trial_id: str) -> tuple[int, str] | None:
        """(last step, reason) if the search cut this trial short."""
        return self._cut.get(trial_id)

    def is_stopped(self, trial_id: str) -> bool:
        """Pruned by a scheduler or cut by the search: told to Optuna as PRUNED, never the best."""
        return trial_id in self._pruned or trial_id in self._cut

    def cuts(self) -> dict[str, tuple[int, str]]:
        with self._lock:
            return dict(self._cut)

    def record_pruned(self, trial_id: str, step: int) -> None:
        """A scheduler stopped this trial early (a trial the search already cut stays cut)."""
        with self._lock:
            if trial_id not in self._cut:
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

    def update(self, pruned: dict[str, int], rungs: dict[str, tuple[int, int]] | None = None,
               cut: dict[str, tuple[int, str]] | None = None) -> None:
        """Merge a saved record back in place (shared references stay valid after restore)."""
        with self._lock:
            self._pruned.update({k: int(v) for k, v in pruned.items()})
            self._rungs.update({k: (int(v[0]), int(v[1])) for k, v in (rungs or {}).items()})
            self._cut.update({k: (int(v[0]), str(v[1])) for k, v in (cut or {}).items() if k not in self._pruned})

    def status_of(self, trial_id: str, *, errored: bool, last: dict[str, Any] | None, metrics: Iterable[str]) -> str:
        """The one place a trial's terminal state is decided.

        ``errored``: it raised (Ray's ERROR, or a packed trial's own error). ``last``: its last
        result. A NaN/inf metric (or the task's ``diverged`` flag) is ``diverged``; a scheduler's
        early stop ``pruned``; the search's time/epoch budget or an interrupt ``cut``.
        """
        if errored:
            return ERRORED
        last = last or {}
        if last.get("diverged") or any(isinstance(last.get(m), float) and not math.isfinite(last[m])
                                       for m in metrics):
            return DIVERGED
        if trial_id in self._pruned:
            return PRUNED
        if trial_id in self._cut:
            return CUT
        return COMPLETED

    def state(self) -> dict[str, Any]:
        """A JSON-able copy (what ``outcomes.json`` and Ray's callback state keep)."""
        with self._lock:
            return {"pruned": dict(self._pruned), "rungs": {k: list(v) for k, v in self._rungs.items()},
                    "cut": {k: list(v) for k, v in self._cut.items()}}

    def load(self, state: dict[str, Any]) -> None:
        """Merge a :meth:`state` back in place."""
        self.update(state.get("pruned", {}), state.get("rungs"), state.get("cut"))

    def __getstate__(self) -> dict[str, Any]:
        return self.state()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._pruned, self._rungs, self._cut = {}, {}, {}
        self._lock = threading.Lock()
        self.load(state)
