"""Ray internals hpo's search start-up relies on (checked against Ray 2.60.0): a local Ray
without the head processes a search never uses, Ray Tune imported while Ray starts, trials in the
workers Ray starts as the driver connects, and Ray Tune's callback telemetry without the imports.
Each measured in README's Performance section; each puts Ray's own code back on exit."""

from __future__ import annotations

import os
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["import_meanwhile", "lean_callback_telemetry", "lean_local_start", "local_worker_env",
           "trainable_env_vars", "trainables_in_job_workers"]


# The integrations Ray Tune's callback telemetry compares a search's callbacks with, by class name
# (Ray 2.60.0: ray.air._internal.usage._count_callbacks), and Tune's default logger callbacks.
_INTEGRATION_CALLBACKS = ("WandbLoggerCallback", "MLflowLoggerCallback", "CometLoggerCallback", "AimLoggerCallback")


def _count_callbacks_by_name(callbacks: Any) -> dict[str, int]:
    """Ray's ``_count_callbacks``, deciding by class name instead of importing each integration."""
    from ray.tune import Callback
    from ray.tune.logger import LoggerCallback
    from ray.tune.utils.callback import DEFAULT_CALLBACK_CLASSES

    known = set(_INTEGRATION_CALLBACKS) | {c.__name__ for c in DEFAULT_CALLBACK_CLASSES}
    counts: dict[str, int] = {}
    for cb in callbacks or []:
        if not isinstance(cb, Callback):
            continue
        name = type(cb).__name__
        key = name if name in known else "CustomLoggerCallback" if isinstance(cb, LoggerCallback) else "CustomCallback"
        counts[key] = counts.get(key, 0) + 1
    return counts


@contextmanager
def lean_callback_telemetry() -> Iterator[None]:
    """Ray Tune's ``tune.run`` (Ray 2.60.0) records which callback classes a search uses
    (``ray.air._internal.usage.tag_callbacks``) by importing the MLflow, W&B, Comet and Aim
    integrations to compare with: MLflow's import alone is 0.4-0.9 s of the driver's CPU between
    ``Tuner.fit`` and the first trial's start. Within this context the same tag is recorded from
    the classes' names, without those imports. Ray's own function is put back on exit."""
    from ray.air._internal import usage

    original = usage.tag_callbacks

    def tag_callbacks(callbacks: Any) -> bool:
        if not callbacks:
            return False
        counts = _count_callbacks_by_name(callbacks)
        if counts:
            import json

            from ray._common.usage.usage_lib import TagKey, record_extra_usage_tag

            record_extra_usage_tag(TagKey.AIR_CALLBACKS, json.dumps(counts))
        return True

    usage.tag_callbacks = tag_callbacks
    try:
        yield
    finally:
        usage.tag_callbacks = original


@contextmanager
def lean_local_start() -> Iterator[None]:
    """A local Ray started by ``ray.init`` without the two head processes a search never uses.

    Ray 2.60.0's ``ray.init`` starting a local Ray (``Node.start_head_processes``) also starts
    (1) its API server with ``include_dashboard=False`` too, there only to report Ray's usage
    statistics, and waits until it has published its address: 1.5-1.7 s of start-up, all on the
    critical path (``python -m benchmarks.quickstart``); and (2) the autoscaler's monitor, which
    has nothing to scale on a Ray started for one search on one machine (``ray start
    --no-monitor`` is Ray's own way to leave it out). Within this context those two start
    nothing, so Ray sees the API server as one that failed to start (its ``webui_url`` stays
    None, as Ray handles it) and no monitor process. A ``ray.init`` that joins a running cluster
    starts no head processes, so it is unaffected. Ray's own methods are put back on exit.
    """
    from ray._private.node import Node

    start_api_server, start_monitor = Node.start_api_server, Node.start_monitor

    def no_api_server(self: Any, *, include_dashboard: bool | None, raise_on_failure: bool) -> None:
        if include_dashboard:  # asked for: Ray's own start
            start_api_server(self, include_dashboard=include_dashboard, raise_on_failure=raise_on_failure)

    def no_monitor(self: Any) -> None:
        return None

    Node.start_api_server, Node.start_monitor = no_api_server, no_monitor  # type: ignore[method-assign]
    try:
        yield
    finally:
        Node.start_api_server, Node.start_monitor = start_api_server, start_monitor  # type: ignore[method-assign]


# Modules both a local ``ray.init`` and ``import ray.tune`` import (Ray 2.60.0, measured with
# ``sys.modules`` before and after each): imported first, so the two then touch disjoint modules
# and never wait on each other's import locks.
_IMPORTED_BY_INIT_AND_TUNE = ("argparse", "gettext", "ray._common.usage.usage_lib", "ray.dashboard")


def import_meanwhile(names: Collection[str]) -> threading.Thread | None:
    """Import ``names`` in a thread while this one goes on (e.g. into ``ray.init``, which mostly
    waits for Ray's processes to start): ``import ray.tune`` alone is 1.3-1.8 s of the driver's
    CPU on a 2-core machine. A later ``import`` of the same module in another thread waits for
    this one to finish it (Python's import locks); a failure here is left for that import to
    raise. Returns the thread, or None when there is nothing to import."""
    import importlib
    import sys

    names = [n for n in names if n not in sys.modules]
    if not names:
        return None
    for name in _IMPORTED_BY_INIT_AND_TUNE:
        try:
            importlib.import_module(name)
        except ImportError:
            pass

    def run() -> None:
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001  (the caller's own import raises it)
                return

    thread = threading.Thread(target=run, name="hpo-imports", daemon=True)
    thread.start()
    return thread


# What Ray Tune 2.60.0 puts in every trainable actor's runtime_env
# (ray.tune.execution.class_cache._ActorClassCache.get: DEFAULT_ENV_VARS, and those of
# ENV_VARS_TO_PROPAGATE set in the driver's environment). Copied: importing that module imports
# all of Ray Tune (1.5 s), which must not come before ray.init. tests/test_compat_ray.py compares
# them with Ray's.
_TRAINABLE_ENV_DEFAULTS = {"PL_DISABLE_FORK": "1"}
_TRAINABLE_ENV_PROPAGATED = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN", "NCCL_RAS_ADDR",
    "RAY_CHDIR_TO_TRIAL_DIR", "RAY_TRAIN_CHECKPOINT_UPLOAD_WARN_INTERVAL_S", "RAY_TRAIN_COLLECTIVE_TIMEOUT_S",
    "RAY_TRAIN_COLLECTIVE_WARN_INTERVAL_S", "RAY_TRAIN_ENABLE_CONTROLLER_STRUCTURED_LOGGING",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "RAY_TRAIN_ENABLE_PRINT_PATCH",
    "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION", "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS",
    "RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
    "RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S", "RAY_TRAIN_STATE_ACTOR_RECONCILIATION_INTERVAL_S", "RAY_TRAIN_V2_ENABLED",
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "RAY_TRAIN_WORKER_HEALTH_CHECK_TIMEOUT_S",
    "RAY_WARN_BLOCKING_GET_INSIDE_ASYNC", "TORCHFT_LIGHTHOUSE", "TRAIN_COPY_DIRECTORY_CHECKPOINTS_INSTEAD_OF_MOVING",
)


def trainable_env_vars() -> dict[str, str]:
    """The ``env_vars`` of the runtime environment Ray Tune gives every trainable actor (those
    of :data:`_TRAINABLE_ENV_PROPAGATED` from this process's environment).

    Example:
        >>> trainable_env_vars()["PL_DISABLE_FORK"]
        '1'
    """
    return {**_TRAINABLE_ENV_DEFAULTS, **{k: os.environ[k] for k in _TRAINABLE_ENV_PROPAGATED if k in os.environ}}


@contextmanager
def local_worker_env() -> Iterator[dict[str, str]]:
    """Around a ``ray.init`` that starts a local Ray: Ray Tune's trainable ``env_vars`` are put in
    this process's environment (and taken out again afterwards), so the raylet started meanwhile
    and every worker it starts inherit them. Yields what the workers have."""
    added = {k: v for k, v in _TRAINABLE_ENV_DEFAULTS.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield trainable_env_vars()
    finally:
        for k in added:
            os.environ.pop(k, None)


@contextmanager
def trainables_in_job_workers(worker_env: dict[str, str]) -> Iterator[None]:
    """Ray Tune's trainable actors without a runtime environment of their own, while every
    ``env_vars`` Ray Tune would give them is already in the workers' environment (``worker_env``,
    from :func:`local_worker_env`).

    Ray's worker pool hands an actor only a worker started for the same runtime environment. Ray
    starts one worker per CPU as a driver connects, with none; Ray Tune 2.60's trainable actors
    (``_ActorClassCache.get``) ask for ``env_vars`` on top, so no trial ever ran in those workers:
    each trial's actor waited for a worker process of its own, and Ray stopped the first ones
    unused (two process starts and their Ray imports wasted on a 2-core machine, on the
    start-up's critical path). Within this context the trainable class is registered without
    that runtime environment, which changes nothing the trial sees (the variables are there
    already), unless the environment changed since Ray started: then Ray Tune's own way."""
    from ray.tune.execution import class_cache

    original = class_cache._ActorClassCache.get

    def get(self: Any, trainable_cls: Any) -> Any:
        if trainable_env_vars() != worker_env:
            return original(self, trainable_cls)
        if trainable_cls not in self._cache:
            import ray

            self._cache[trainable_cls] = ray.remote(trainable_cls)
        return self._cache[trainable_cls]

    class_cache._ActorClassCache.get = get  # type: ignore[method-assign]
    try:
        yield
    finally:
        class_cache._ActorClassCache.get = original  # type: ignore[method-assign]
