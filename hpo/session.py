"""Helpers called inside a trial: report metrics (with the node that produced them)."""

from __future__ import annotations

from typing import Any

__all__ = ["NODE_KEY", "report"]

NODE_KEY = "hpo_node"
_node_id: str | None = None


def node_id() -> str:
    """The Ray node this process runs on (cached; distinguishes nodes that share an IP)."""
    global _node_id
    if _node_id is None:
        import ray

        _node_id = ray.get_runtime_context().get_node_id()
    return _node_id


def report(metrics: dict[str, Any], checkpoint: Any = None) -> None:
    """Report one step of a trial: like ``ray.tune.report``, plus the node id for hpo's summary.

    Example (inside a trainable)::

        for epoch in range(epochs):
            hpo.report({"val_loss": loss})
    """
    from ray import tune

    tune.report({**metrics, NODE_KEY: node_id()}, checkpoint=checkpoint)
