"""Helpers called inside a trial: report metrics (with the node that produced them)."""

from __future__ import annotations

from typing import Any

__all__ = ["GPU_KEY", "NODE_KEY", "TIME_KEY", "report"]

NODE_KEY = "hpo_node"
TIME_KEY = "hpo_time"  # wall-clock time of the report (Ray's own timestamp is whole seconds)
GPU_KEY = "hpo_gpu"  # the GPU(s) Ray gave the trial, "none" on CPU
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
    import time

    from ray import tune

    tune.report({**metrics, NODE_KEY: node_id(), GPU_KEY: gpu(), TIME_KEY: time.time()}, checkpoint=checkpoint)
