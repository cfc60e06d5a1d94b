"""Helpers called inside a trial: report metrics (with the node that produced them)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

__all__ = ["GPU_KEY", "HISTORY_KEY", "NODE_KEY", "STARTED_KEY", "STEP_KEY", "TIME_KEY", "ReportPlan", "Reporter",
           "report"]

NODE_KEY = "hpo_node"
TIME_KEY = "hpo_time"  # wall-clock time of the report (Ray's own timestamp is whole seconds)
GPU_KEY = "hpo_gpu"  # the GPU(s) Ray gave the trial, "none" on CPU
STEP_KEY = "hpo_step"  # the trial's own step (epoch), when it is not Ray's count of reports
HISTORY_KEY = "hpo_history"  # earlier steps sent along with a result
STARTED_KEY = "hpo_started"  # wall-clock time the trial's own work began (after Ray handed it over)
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
    from ray import tune

    tune.report({**metrics, NODE_KEY: node_id(), GPU_KEY: gpu(), TIME_KEY: time.time()}, checkpoint=checkpoint)


@dataclass(frozen=True)
class ReportPlan:
    """Which of a trial's steps the scheduler needs to see as they happen.

    Attributes:
        steps: the steps a decision is made at (ASHA's rungs); ``None``: every step (HyperBand,
            median stopping, PBT, plug-ins); empty: none (FIFO).
        interval_s: the longest a finished step waits before it is sent anyway, so progress,
            MLflow curves and time budgets stay live on long trials.
    """

    steps: frozenset[int] | None = None
    interval_s: float = 1.0


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

    def __call__(self, step: int, metrics: dict[str, Any], checkpoint: Any = None) -> None:
        self._pending.append({**metrics, STEP_KEY: int(step), TIME_KEY: time.time()})
        plan = self.plan
        if (plan is None or plan.steps is None or checkpoint is not None or step in plan.steps
                or time.monotonic() - self._last >= plan.interval_s):
            self.flush(checkpoint)

    def flush(self, checkpoint: Any = None) -> None:
        """Send what is pending (call once more when the trial ends)."""
        if not self._pending:
            return
        from ray import tune

        *earlier, last = self._pending
        payload = {**last, NODE_KEY: node_id(), GPU_KEY: gpu(), STARTED_KEY: self.started}
        if earlier:
            payload[HISTORY_KEY] = earlier
        self._pending = []
        self._last = time.monotonic()
        tune.report(payload, checkpoint=checkpoint)
