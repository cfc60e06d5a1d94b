"""Optimizers and learning-rate schedules of the built-in task."""

from __future__ import annotations

import math
from typing import Any

import torch

from hpo.train.task import TaskConfig


def build_optimizer(cfg: TaskConfig, params: Any) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.optimizer`` with its learning rate and weight decay (L2)."""
    kw: dict[str, Any] = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0, **kw)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop,
           "adagrad": torch.optim.Adagrad}[cfg.optimizer]
    return cls(params, **kw)


class Schedule:
    """The learning-rate schedule named by ``cfg.schedule``, stepped per batch or per epoch.

    - ``constant``; ``step`` (x ``gamma`` every ``step_size`` epochs); ``exponential``
      (x ``gamma`` each epoch); ``cosine`` (linear warm-up over ``warmup_epochs``, then cosine
      decay to ``min_lr``); ``onecycle`` (per batch, peak ``lr``); ``plateau`` (x ``gamma`` when
      ``val_loss`` has not improved for ``step_size`` epochs).
    """

    def __init__(self, cfg: TaskConfig, optimizer: torch.optim.Optimizer, batches_per_epoch: int) -> None:
        from torch.optim import lr_scheduler as ls

        self.name = cfg.schedule
        self.per_batch = cfg.schedule == "onecycle"
        epochs = cfg.epochs
        sched: Any = None
        if cfg.schedule == "step":
            sched = ls.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
        elif cfg.schedule == "exponential":
            sched = ls.ExponentialLR(optimizer, gamma=cfg.gamma)
        elif cfg.schedule == "cosine":
            warm, floor = cfg.warmup_epochs, cfg.min_lr / cfg.lr

            def factor(e: int) -> float:
                if e < warm:
                    return (e + 1) / (warm + 1)
                progress = (e - warm) / max(1, epochs - warm)
                return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

            sched = ls.LambdaLR(optimizer, factor)
        elif cfg.schedule == "onecycle":
            sched = ls.OneCycleLR(optimizer, max_lr=cfg.lr, epochs=epochs, steps_per_epoch=max(1, batches_per_epoch))
        elif cfg.schedule == "plateau":
            sched = ls.ReduceLROnPlateau(optimizer, factor=cfg.gamma, patience=cfg.step_size, min_lr=cfg.min_lr)
        self.sched = sched

    def after_batch(self) -> None:
        if self.per_batch and self.sched is not None:
            self.sched.step()

    def after_epoch(self, val_loss: float) -> None:
        if self.sched is None or self.per_batch:
            return
        if self.name == "plateau":
            self.sched.step(val_loss)
        else:
            self.sched.step()

    def state_dict(self) -> dict[str, Any]:
        return self.sched.state_dict() if self.sched is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.sched is not None and state:
            self.sched.load_state_dict(state)
