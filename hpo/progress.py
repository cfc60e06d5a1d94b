"""Live progress instead of Ray's tables: a bar on a terminal, plain lines otherwise (stderr)."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from ray.tune import Callback

from hpo.strategies import TrialOutcomes


class Progress(Callback):
    """Counts trials done/running/pruned/errored and the best value so far."""

    def __init__(self, total: int, metric: str, mode: str, outcomes: TrialOutcomes) -> None:
        self.total, self.metric, self.mode, self.outcomes = total, metric, mode, outcomes
        self._init()

    def _init(self) -> None:
        self.start = time.monotonic()
        self.running: set[str] = set()
        self.done = self.errored = 0
        self.best: float | None = None
        self._last: dict[str, float] = {}
        self._live: Any = None
        self._tty = sys.stderr.isatty()

    def __getstate__(self) -> dict[str, Any]:
        return {"total": self.total, "metric": self.metric, "mode": self.mode, "outcomes": self.outcomes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init()

    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        self._init()
        if self._tty:
            from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bar

            self._live = Bar(TextColumn("[bold]hpo"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                             TextColumn("{task.description}"), TimeElapsedColumn(), transient=False,
                             console=_stderr_console())
            self._task = self._live.add_task("", total=self.total)
            self._live.start()

    def _status(self) -> str:
        best = "-" if self.best is None else f"{self.best:.4g}"
        return (f"running {len(self.running)} | pruned {self.outcomes.num_pruned} | errored {self.errored} | "
                f"best {self.metric} {best}")

    def _emit(self, line: str | None) -> None:
        if self._live is not None:
            self._live.update(self._task, completed=self.done, description=self._status())
        elif line:
            elapsed = time.monotonic() - self.start
            print(f"[hpo {elapsed:6.1f}s] {line} | done {self.done}/{self.total} | {self._status()}",
                  file=sys.stderr, flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.add(trial.trial_id)
        self._emit(None)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            self._last[trial.trial_id] = float(value)
        if self._live is not None:
            self._emit(None)

    def _finish(self, trial: Any, what: str) -> None:
        self.running.discard(trial.trial_id)
        self.done += 1
        value = self._last.pop(trial.trial_id, None)
        pruned, cut = self.outcomes.pruned_at(trial.trial_id), self.outcomes.cut_of(trial.trial_id)
        if what == "completed" and pruned is not None:
            what = f"pruned at step {pruned}"
        elif what == "completed" and cut is not None:
            what = f"cut at step {cut[0]} ({cut[1]})"
        elif what == "completed" and value is not None:
            better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
            self.best = value if better else self.best
        shown = "" if value is None else f" {self.metric}={value:.4g}"
        self._emit(f"trial {trial.trial_id} {what}{shown}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "completed")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.errored += 1
        self._finish(trial, "errored")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._live is not None:
            self._emit(None)
            self._live.stop()
            self._live = None


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)
