"""The built-in task's settings: names, defaults, and validation before launch."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from typing import Any

from hpo.errors import HpoConfigError

MODELS = ("mlp", "cnn", "linear", "logistic")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
ACTIVATIONS = ("relu", "tanh", "gelu", "sigmoid")
SCHEDULES = ("constant", "step", "exponential", "cosine", "onecycle", "plateau")
LOSSES = ("auto", "cross_entropy", "mse", "mae", "huber")
PROBLEMS = ("auto", "classification", "regression")
PRECISIONS = ("fp32", "bf16", "fp16")
_NAMED = {"model": MODELS, "optimizer": OPTIMIZERS, "activation": ACTIVATIONS, "schedule": SCHEDULES,
          "loss": LOSSES, "problem": PROBLEMS, "precision": PRECISIONS}
_IMPORTABLE = ("model", "train_step")  # may name 'package.module:function' instead of a built-in


@dataclass
class TaskConfig:
    """Everything the built-in trainable reads from a trial's config (task defaults + sampled values)."""

    dataset: str = "digits"
    target: str | None = None
    problem: str = "auto"
    image_shape: list[int] | None = None
    model: str = "mlp"
    train_step: str | None = None
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
    cv_folds: int = 0
    augment_shift: float = 0.0
    augment_rotate: float = 0.0
    precision: str = "fp32"
    test_best: bool = True

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TaskConfig:
        known = set(cls.keys())
        return cls(**{k: v for k, v in config.items() if k in known})


def _check_name(key: str, field: str, value: Any) -> None:
    if field in _IMPORTABLE and isinstance(value, str) and ":" in value:
        from hpo._imports import import_callable

        import_callable(value, key)
        return
    if field == "train_step":
        if value is not None:
            raise HpoConfigError(key, "must be an import path 'package.module:function'", value)
        return
    valid = _NAMED[field]
    if value not in valid:
        close = difflib.get_close_matches(str(value), valid, n=1)
        hint = f"Did you mean {close[0]!r}?" if close else None
        more = " or an import path 'package.module:function'" if field in _IMPORTABLE else ""
        raise HpoConfigError(key, f"must be one of {list(valid)}{more}", value, hint)


def _check_dataset(key: str, value: Any) -> None:
    """A data set's name, before anything is loaded: a built-in one, a file that exists, or a loader's
    import path (what :func:`hpo.train.data.load_dataset` accepts)."""
    from pathlib import Path

    from hpo.train.data import BUILTIN_DATASETS, FILE_SUFFIXES

    rule = (f"must be one of {list(BUILTIN_DATASETS)}, a file ending in {list(FILE_SUFFIXES)}, "
            "or a 'module:function' loader")
    if not isinstance(value, str) or not value.strip():
        raise HpoConfigError(key, rule, value)
    if value in BUILTIN_DATASETS:
        return
    if value.lower().endswith(FILE_SUFFIXES):
        try:
            exists = Path(value).is_file()
        except OSError:  # e.g. a name too long for the file system
            exists = False
        if not exists:
            raise HpoConfigError(key, "must be an existing file", value, f"Looked at {Path(value).resolve()}")
    elif ":" in value:
        from hpo._imports import import_callable

        import_callable(value, key)
    else:
        close = difflib.get_close_matches(value, BUILTIN_DATASETS, n=1)
        raise HpoConfigError(key, rule, value, f"Did you mean {close[0]!r}?" if close else None)


def _int_setting(task: dict[str, Any], key: str, low: int, default: int) -> int:
    v = task.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise HpoConfigError(f"task.{key}", f"must be an integer >= {low}", v)
    return v


def validate_task(task: dict[str, Any], space_values: dict[str, list[Any] | None], metrics: list[str] | None = None,
                  gpu: float = 0.0) -> Any:
    """Check the built-in task before launch and load its data set; returns the loaded ``Dataset``.

    Checks every key and name (including every value the space can take), that the data loads
    (files exist, the target column is there, features are numeric, import paths resolve),
    that losses, models and augmentation fit the data, and that ``metrics`` are reported.

    Args:
        task: the experiment's ``task`` mapping.
        space_values: parameter name -> its finite values (None for numeric ranges).
        metrics: the metrics the search optimizes.
        gpu: the GPU share each trial reserves.
    """
    check_task_settings(task, space_values, gpu)
    return load_task_data(task, space_values, metrics)


def _number_rules() -> dict[str, list[Any]]:
    """The values each numeric or boolean setting of the built-in task accepts (any one rule)."""
    from hpo.strategies import Boolean, Interval, OneOf

    count, positive_int = [Interval(int, 0, None)], [Interval(int, 1, None)]
    non_negative = [Interval(float, 0, None)]
    positive = [Interval(float, 0, None, closed="neither")]
    return {
        "epochs": positive_int, "batch_size": positive_int, "lr": positive, "weight_decay": non_negative,
        "l1": non_negative, "step_size": positive_int, "gamma": positive, "warmup_epochs": count,
        "min_lr": non_negative, "patience": count, "momentum": [Interval(float, 0, 1)],
        "hidden": positive_int, "depth": count, "dropout": [Interval(float, 0, 1, closed="left")],
        "channels": positive_int, "grad_clip": [*positive, OneOf((None,))], "seed": [Interval(int)],
        "checkpoint_freq": count, "cv_folds": count, "augment_shift": non_negative, "augment_rotate": non_negative,
        "val_fraction": [Interval(float, 0, 0.5, closed="neither")],
        "test_fraction": [Interval(float, 0, 0.5, closed="neither")],
        "nesterov": [Boolean()], "batch_norm": [Boolean()], "test_best": [Boolean()],
    }


def _check_number(key: str, rules: list[Any], value: Any) -> None:
    if not any(r.accepts(value) for r in rules):
        fix = "Write it without quotes." if isinstance(value, str) else None
        raise HpoConfigError(key, f"must be {' or '.join(r.describe() for r in rules)}", value, fix)


def check_task_settings(task: dict[str, Any], space_values: dict[str, list[Any] | None], gpu: float = 0.0,
                        space_bounds: dict[str, tuple[float, float]] | None = None) -> None:
    """The checks of :func:`validate_task` that need no data: keys, names, numbers (milliseconds).

    Numbers are checked wherever a trial can get them: the task's fixed settings, every value
    of a listed (fixed, categorical, grid) space parameter, and both bounds of a range.

    Example:
        >>> check_task_settings({"batch_size": 0}, {})
        Traceback (most recent call last):
        ...
        hpo.errors.HpoConfigError: task.batch_size: must be an integer >= 1, but got 0
    """
    known = TaskConfig.keys()
    # Keys the built-in task does not know are for the user's model or training step, if there is one.
    user_code = any(":" in str(v) for f in _IMPORTABLE for v in [task.get(f), *(space_values.get(f) or [])])
    for where, keys in (("task", list(task)), ("space", list(space_values))):
        for k in keys:
            if k not in known and not user_code:
                close = difflib.get_close_matches(k, known, n=1)
                raise HpoConfigError(
                    f"{where}.{k}", f"is not a setting of the built-in task; valid: {known}", k,
                    f"Did you mean {close[0]!r}?" if close else None,
                )
    _check_dataset("task.dataset", task.get("dataset", TaskConfig.dataset))
    for v in space_values.get("dataset") or []:
        _check_dataset("space.dataset", v)
    for field in (*_NAMED, "train_step"):
        if field in task:
            _check_name(f"task.{field}", field, task[field])
        for v in space_values.get(field) or []:
            _check_name(f"space.{field}", field, v)
    for field, rules in _number_rules().items():
        if field in task:
            _check_number(f"task.{field}", rules, task[field])
        for v in space_values.get(field) or []:
            _check_number(f"space.{field}", rules, v)
        for bound, v in zip(("low", "high"), (space_bounds or {}).get(field, ())):
            _check_number(f"space.{field}.{bound}", rules, v)
    folds = _int_setting(task, "cv_folds", 0, 0)
    if folds == 1:
        raise HpoConfigError("task.cv_folds", "must be 0 (a single validation split) or at least 2", 1)
    precisions = {task.get("precision", "fp32"), *(space_values.get("precision") or [])}
    if gpu <= 0 and "fp16" in precisions:
        raise HpoConfigError("task.precision", "fp16 needs a GPU (resources.gpu > 0)", "fp16",
                             "Use bf16 on CPU, or give each trial a GPU share.")


def load_task_data(task: dict[str, Any], space_values: dict[str, list[Any] | None],
                   metrics: list[str] | None = None) -> Any:
    """The checks of :func:`validate_task` that need the data (it is loaded here); returns the first data set."""
    from hpo.train.data import DataSpec, load_dataset

    known = TaskConfig.keys()
    folds = _int_setting(task, "cv_folds", 0, 0)
    base = {k: v for k, v in task.items() if k in known}
    names = [task.get("dataset", TaskConfig.dataset), *(space_values.get("dataset") or [])]
    loaded = {}
    for name in dict.fromkeys(names):
        loaded[name] = load_dataset(DataSpec.from_config({**base, "dataset": name}))
    first = loaded[names[0]]

    losses = {task.get("loss", "auto"), *(space_values.get("loss") or [])}
    regression = sorted(n for n, d in loaded.items() if d.task == "regression")
    if regression and "cross_entropy" in losses:
        raise HpoConfigError("task.loss", "cross_entropy needs a classification data set", "cross_entropy",
                             f"Regression data sets here: {regression}; use mse, mae or huber.")
    if len(regression) < len(loaded) and losses & {"mse", "mae", "huber"}:
        raise HpoConfigError("task.loss", "mse, mae and huber need a regression data set",
                             sorted(losses & {"mse", "mae", "huber"}), "Classification uses cross_entropy (auto).")
    models = {task.get("model", "mlp"), *(space_values.get("model") or [])}
    flat = sorted(n for n, d in loaded.items() if d.image_shape is None)
    if flat and "cnn" in models:
        raise HpoConfigError("task.model", "cnn needs image data (digits, or task.image_shape for your own data)",
                             "cnn", f"Data sets without an image shape: {flat}")
    augments = [k for k in ("augment_shift", "augment_rotate") if task.get(k) or k in space_values]
    if flat and augments:
        raise HpoConfigError(f"task.{augments[0]}", "augmentation needs image data (digits, or task.image_shape)",
                             task.get(augments[0]), f"Data sets without an image shape: {flat}")
    if metrics:
        allowed = reported_metrics(list(loaded.values()), folds)
        for m in metrics:
            if m not in allowed:
                close = difflib.get_close_matches(m, sorted(allowed), n=1)
                raise HpoConfigError("metric", f"the built-in task reports only {sorted(allowed)}", m,
                                     f"Did you mean {close[0]!r}?" if close else None)
    return first


COST_METRICS = ("param_count", "train_time_s", "latency_us")


def reported_metrics(datasets: list[Any], cv_folds: int = 0) -> set[str]:
    """The metric names the built-in task reports on every trial for these data sets."""
    per_set = []
    for ds in datasets:
        if ds.task == "regression":
            per_set.append({"loss", "mse", "mae", "r2"})
        else:
            per_set.append({"loss", "accuracy", "f1", "precision", "recall"} | ({"roc_auc"} if ds.num_classes == 2
                                                                                else set()))
    val = set.intersection(*per_set) if per_set else {"loss"}
    out = {"train_loss", "epoch_time_s", "lr", *COST_METRICS} | {f"val_{m}" for m in val}
    if cv_folds >= 2:
        out |= {f"val_{m}_std" for m in val}
        out |= {f"val_{m}_fold{i}" for m in val for i in range(cv_folds)}
    return out
