"""Driver-side MLflow tracking: one parent run per search, one child run per trial, batched.

Ray's ``MLflowLoggerCallback`` makes one request per metric key per result, in Tune's loop, and
opens a new run for every restored trial. This callback only turns Tune's events into small
messages for a writer process (:mod:`hpo.tracking._writer`), which batches them into MLflow at
a lower CPU priority, off the driver's GIL. On resume the writer finds the existing parent and
child runs by their tags and skips steps already logged, so nothing is duplicated.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from ray.tune import Callback

from hpo._trials import error_text, trial_metrics
from hpo.session import NODE_KEY
from hpo.strategies import TrialOutcomes
from hpo.tracking._writer import flatten_params, receive, send

__all__ = ["MlflowTracker", "default_tracking_uri", "flatten_params"]

log = logging.getLogger("hpo.tracking")


def default_tracking_uri() -> str:
    """``sqlite:///<cwd>/mlflow.db``: MLflow 3 refuses its plain file store unless forced."""
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


class MlflowTracker(Callback):
    """A Tune callback that records the search in MLflow through a writer process.

    Args:
        tracking_uri: MLflow tracking URI (SQLite file or ``http://`` server).
        experiment_name: MLflow experiment (one per search name).
        run_name: name of the parent run.
        state_path: JSON file in the search's storage directory where the parent run id is kept,
            so a resumed search continues the same parent run.
        outcomes: shared record of pruned trials (for status tags).
        parent_params: params of the parent run (strategy, seed, ...).
        parent_tags: tags of the parent run (versions, git commit, ...).
        artifacts: file name -> text, logged on the parent run.
        flush_interval_s: seconds between batched writes.
        flush_timeout_s: how long the end of the search waits for a slow or absent server.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        run_name: str,
        state_path: str,
        outcomes: TrialOutcomes,
        parent_params: dict[str, Any] | None = None,
        parent_tags: dict[str, str] | None = None,
        artifacts: dict[str, str] | None = None,
        flush_interval_s: float = 2.0,
        flush_timeout_s: float = 120.0,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.state_path = state_path
        self.outcomes = outcomes
        self.parent_params = parent_params or {}
        self.parent_tags = parent_tags or {}
        self.artifacts = artifacts or {}
        self.flush_interval_s = flush_interval_s
        self.flush_timeout_s = flush_timeout_s
        self._reset()

    _CONFIG = ("tracking_uri", "experiment_name", "run_name", "state_path", "parent_params", "parent_tags",
               "artifacts", "flush_interval_s")

    def _reset(self) -> None:
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.unlogged: list[str] = []
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._reconciled = False

    def __getstate__(self) -> dict[str, Any]:
        return {k: self.__dict__[k] for k in (*self._CONFIG, "outcomes", "flush_timeout_s")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    # -- writer process ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer process; it opens (or, on resume, reopens) the parent run first.

        Nothing here waits on the tracking server: if it is down, events queue up in the writer,
        which retries with backoff, so the search itself never waits for MLflow.
        """
        if self._proc is not None:
            return
        self._proc = subprocess.Popen([sys.executable, "-m", "hpo.tracking._writer"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE)
        self._send({k: getattr(self, k) for k in self._CONFIG})

    def _send(self, message: Any) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        with self._lock:
            try:
                send(self._proc.stdin, message)  # type: ignore[arg-type]
            except (BrokenPipeError, OSError):
                pass  # the writer died: finish() reports what was not recorded

    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        self.start()

    # -- Tune events: small messages only ----------------------------------------------------------

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if not self._reconciled:
            self._reconciled = True
            self._send(("reconcile", "", [t.trial_id for t in trials]))

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._send(("start", trial.trial_id, dict(trial.config)))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._send(("result", trial.trial_id, self._result(result)))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._send(("end", trial.trial_id, self._status(trial.trial_id, None)))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._send(("end", trial.trial_id, self._status(trial.trial_id, error_text(trial))))

    @staticmethod
    def _result(result: dict[str, Any]) -> tuple[int, int, str, dict[str, float]]:
        step = int(result.get("training_iteration", 0))
        ts = int(float(result.get("timestamp", 0)) * 1000)
        return step, ts, str(result.get(NODE_KEY) or result.get("node_ip")), trial_metrics(result)

    def _status(self, trial_id: str, error: str | None) -> tuple[str, str]:
        """(hpo.status tag, MLflow run status) of a trial that ended."""
        pruned_at = self.outcomes.pruned_at(trial_id)
        if error is not None:
            return f"errored: {error}"[:5000], "FAILED"
        if pruned_at is not None:
            return f"pruned at epoch {pruned_at}", "KILLED"
        return "completed", "FINISHED"

    def replay(self, trial_id: str, config: dict[str, Any], results: list[dict[str, Any]],
               errored: str | None = None) -> None:
        """Send a whole trial read back from Ray's storage (``hpo sync-mlflow``)."""
        self._send(("start", trial_id, config))
        for result in results:
            self._send(("result", trial_id, self._result(result)))
        self._send(("end", trial_id, self._status(trial_id, errored)))

    # -- end -------------------------------------------------------------------------------------

    def finish(self, results: Any, failed: bool = False) -> None:
        """Flush everything, record the search's outcome on the parent run and close it.

        Waits at most ``flush_timeout_s`` for a slow or absent server; what could not be written
        is named in a warning.
        """
        proc = self._proc
        if proc is None:
            return
        self._send(("finish", "", {"results": results, "failed": failed, "flush_timeout_s": self.flush_timeout_s}))
        reply: dict[str, Any] = {}
        result: list[Any] = []

        def read() -> None:
            try:
                result.append(receive(proc.stdout))  # type: ignore[arg-type]
            except (EOFError, OSError):
                pass  # the writer died: reported below

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(self.flush_timeout_s + 60)
        if result:
            reply = result[0]
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        self.experiment_id = reply.get("experiment_id")
        self.parent_run_id = reply.get("parent_run_id")
        self.unlogged = reply.get("unlogged", ["the search"]) if reply else ["the search"]
        if self.unlogged or self.parent_run_id is None:
            log.warning("MLflow at %s did not record %s", self.tracking_uri, ", ".join(self.unlogged or ["the search"]))
