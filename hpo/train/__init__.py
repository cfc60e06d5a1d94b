"""The built-in PyTorch training engine used by trials (``trainable: hpo.train:train``)."""

from __future__ import annotations

from typing import Any

__all__ = ["TaskConfig", "train", "validate_task"]

from hpo.train.task import TaskConfig, validate_task


def train(config: dict[str, Any], data: Any = None, threads: int = 1, task: dict[str, Any] | None = None,
          plan: Any = None, keep: Any = None, ask: Any = None) -> None:
    """Ray Tune function trainable for the built-in task (torch is imported on first call).

    ``task`` holds the experiment's fixed settings; the trial's sampled ``config`` overrides them.
    ``keep`` (:class:`hpo.wire.KeepModels`) says where a trial that completes keeps its final model;
    ``ask`` (:class:`hpo.decisions.AskScheduler`), when the scheduler is asked from the worker.
    """
    from hpo.wire import PACK_KEY

    if PACK_KEY in config:  # several configurations in one Ray trial (hpo.packing)
        from hpo.train.trial import train_pack

        train_pack(config, task or {}, data, threads, plan, keep, ask)
    else:
        from hpo.train.trial import train as _train

        _train({**(task or {}), **config}, data, threads, plan, keep, ask)
