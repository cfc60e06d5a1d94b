"""Called inside a trial: report metrics (with the node that produced them), batched by a report plan.

The keys these reports carry are defined in :mod:`hpo.wire`."""

from __future__ import annotations

import time
from typing import Any

from hpo.errors import is_disk_full
from hpo.wire import (
    DISK_FULL_KEY,
    END_KEY,
    ERROR_KEY,
    GPU_KEY,
    HISTORY_KEY,
    NODE_KEY,
    STARTED_KEY,
    STEP_KEY,
    SUB_KEY,
    TIME_KEY,
    ReportPlan,
)

__all__ = ["Reporter", "report"]

_node_id: str | None = None
_gpu: str | None = None


def node_id() -> str:
    """The Ray node this process runs on (cached; distinguishes nodes that share an IP)."""
    global _node_id
    if _node_id is None:
        import ray

        _node_id = ray.get_runtime_context().get_node_id()
    return _node_id


def gpu() -> str:
    """The GPU ids Ray assigned to this worker with the device name (``"0: NVIDIA H100"``), or ``"none"``."""
    global _gpu
    if _gpu is None:
        import sys

        import ray

        ids = [str(i) for i in ray.get_gpu_ids()]
        name = ""
        torch = sys.modules.get("torch")  # named only if the trial already uses torch
        if ids and torch is not None and torch.cuda.is_available():
            name = f": {torch.cuda.get_device_name(0)}"
        _gpu = ",".join(ids) + name if ids else "none"
    return _gpu


def report(metrics: dict[str, Any], checkpoint: Any = None) -> None:
    """Report one step of a trial: like ``ray.tune.report``, plus the node id for hpo's summary.

    Example (inside a trainable)::

        for epoch in range(epochs):
            hpo.report({"val_loss": loss})
    """
    _send({**metrics, NODE_KEY: node_id(), GPU_KEY: gpu(), TIME_KEY: time.time()}, checkpoint)


def _send(payload: dict[str, Any], checkpoint: Any) -> None:
    """``ray.tune.report``; a checkpoint the full storage path cannot take (``ENOSPC``/``EDQUOT``)
    is dropped and the step reported without it, flagged, so the driver stops the search and
    ends this trial as cut (not as an error of the trainable's, retried from an old checkpoint)."""
    from ray import tune

    try:
        tune.report(payload, checkpoint=checkpoint)
    except OSError as exc:
        if checkpoint is None or not is_disk_full(exc):
            raise
        tune.report({**payload, DISK_FULL_KEY: str(exc)[:300]}, checkpoint=None)


class Reporter:
    """Sends a trial's steps to Ray Tune when the plan needs them, the others in between along
    with the next one (``hpo_history``).

    Every round trip through Ray Tune costs driver and worker CPU; on short epochs that cost
    rivals the training itself. Schedulers see each step they decide on exactly as if every
    step had been reported, and MLflow still gets every step with its own time.

    Example (inside a trainable)::

        report = Reporter(plan)
        for epoch in range(1, epochs + 1):
            report(epoch, {"val_loss": loss})
        report.flush()
    """

    def __init__(self, plan: ReportPlan | None, started: float | None = None) -> None:
        self.plan = plan
        self.started = started if started is not None else time.time()
        self._pending: list[dict[str, Any]] = []
        self._last = time.monotonic()
        self.sub: str | None = None  # packed Ray trial: the trial the next steps belong to
        self.final = True  # the current trial's last step ends the Ray trial
        self.step = 0  # the current trial's latest step

    def begin(self, trial_id: str, final: bool) -> None:
        """Packed Ray trial: the next steps belong to trial ``trial_id`` (``final``: the pack's last)."""
        self.sub, self.final, self.started, self.step = trial_id, final, time.time(), 0

    def __call__(self, step: int, metrics: dict[str, Any], checkpoint: Any = None, last: bool = False) -> None:
        """Queue one step; ``last``: the trial ends with it."""
        entry = {**metrics, STEP_KEY: int(step), TIME_KEY: time.time()}
        self.step = int(step)
        if self.sub is not None:
            entry.update({SUB_KEY: self.sub, STARTED_KEY: self.started})
            if last:
                entry[END_KEY] = True
        self._pending.append(entry)
        plan = self.plan
        decided = plan is None or plan.steps is None or step in plan.steps
        if last and self.final and not decided:
            # Nothing is decided at this step, so the report can say the trial is done: Ray
            # Tune then ends the trial on it instead of asking the trainable once more for a
            # result (one round trip through the driver less per trial).
            self.flush(checkpoint, done=True)
        elif decided or checkpoint is not None or time.monotonic() - self._last >= plan.interval_s:  # type: ignore[union-attr]
            self.flush(checkpoint)

    def fail(self, error: str) -> None:
        """Packed Ray trial: the current trial raised; the pack goes on with the next."""
        self._pending.append({STEP_KEY: self.step, TIME_KEY: time.time(), SUB_KEY: self.sub,
                              STARTED_KEY: self.started, END_KEY: True, ERROR_KEY: error})
        if self.final:
            self.flush(done=True)

    def flush(self, checkpoint: Any = None, done: bool = False) -> None:
        """Send what is pending (call once more when the trial ends)."""
        if not self._pending:
            return
        *earlier, last = self._pending
        payload = {**last, NODE_KEY: node_id(), GPU_KEY: gpu(), STARTED_KEY: self.started}
        if earlier:
            payload[HISTORY_KEY] = earlier
        if done:
            payload["done"] = True
        self._pending = []
        self._last = time.monotonic()
        _send(payload, checkpoint)
