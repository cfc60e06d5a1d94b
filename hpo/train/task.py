"""The built-in task's settings: names, defaults, and validation before launch."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from typing import Any

from hpo.errors import HpoConfigError

DATASETS = ("digits", "breast_cancer", "wine", "iris", "diabetes", "synthetic_classification", "synthetic_regression")
REGRESSION_DATASETS = ("diabetes", "synthetic_regression")
BINARY_DATASETS = ("breast_cancer",)
MODELS = ("mlp", "cnn", "linear", "logistic")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
ACTIVATIONS = ("relu", "tanh", "gelu", "sigmoid")
SCHEDULES = ("constant", "step", "exponential", "cosine", "onecycle", "plateau")
LOSSES = ("auto", "cross_entropy", "mse", "mae", "huber")
_NAMED = {"dataset": DATASETS, "model": MODELS, "optimizer": OPTIMIZERS, "activation": ACTIVATIONS,
          "schedule": SCHEDULES, "loss": LOSSES}


@dataclass
class TaskConfig:
    """Everything the built-in trainable reads from a trial's config (task defaults + sampled values)."""

    dataset: str = "digits"
    model: str = "mlp"
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    l1: float = 0.0
    schedule: str = "constant"
    step_size: int = 10
    gamma: float = 0.5
    warmup_epochs: int = 0
    min_lr: float = 0.0
    loss: str = "auto"
    patience: int = 0
    momentum: float = 0.9
    nesterov: bool = False
    hidden: int = 128
    depth: int = 2
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = False
    channels: int = 16
    grad_clip: float | None = None
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0
    checkpoint_freq: int = 0

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TaskConfig:
        known = set(cls.keys())
        return cls(**{k: v for k, v in config.items() if k in known})


def _check_name(key: str, field: str, value: Any) -> None:
    valid = _NAMED[field]
    if value not in valid:
        close = difflib.get_close_matches(str(value), valid, n=1)
        hint = f"Did you mean {close[0]!r}?" if close else None
        raise HpoConfigError(key, f"must be one of {list(valid)}", value, hint)


def validate_task(task: dict[str, Any], space_values: dict[str, list[Any] | None]) -> None:
    """Check the built-in task's keys and names, including every value the space can take.

    Args:
        task: the experiment's ``task`` mapping.
        space_values: parameter name -> its finite values (None for numeric ranges).
    """
    known = TaskConfig.keys()
    for where, keys in (("task", list(task)), ("space", list(space_values))):
        for k in keys:
            if k not in known:
                close = difflib.get_close_matches(k, known, n=1)
                raise HpoConfigError(
                    f"{where}.{k}", f"is not a setting of the built-in task; valid: {known}", k,
                    f"Did you mean {close[0]!r}?" if close else None,
                )
    for field in _NAMED:
        if field in task:
            _check_name(f"task.{field}", field, task[field])
        for v in space_values.get(field) or []:
            _check_name(f"space.{field}", field, v)
    datasets = {task.get("dataset", TaskConfig.dataset), *(space_values.get("dataset") or [])}
    losses = {task.get("loss", "auto"), *(space_values.get("loss") or [])}
    regression = datasets & set(REGRESSION_DATASETS)
    if regression and "cross_entropy" in losses:
        raise HpoConfigError("task.loss", "cross_entropy needs a classification data set", "cross_entropy",
                             f"Regression data sets here: {sorted(regression)}; use mse, mae or huber.")
    if datasets - set(REGRESSION_DATASETS) and losses & {"mse", "mae", "huber"}:
        raise HpoConfigError("task.loss", "mse, mae and huber need a regression data set",
                             sorted(losses & {"mse", "mae", "huber"}), "Classification uses cross_entropy (auto).")
    epochs = task.get("epochs", TaskConfig.epochs)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise HpoConfigError("task.epochs", "must be an integer >= 1", epochs)
