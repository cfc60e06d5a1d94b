"""The built-in task as a search runs it: its settings with what the strategy needs, the epochs
it reports at, and its data set, loaded and checked before anything is launched."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpo.config import Experiment
    from hpo.wire import ReportPlan

__all__ = ["builtin_task", "check_before_launch", "load_data", "load_data_meanwhile", "report_plan", "trainable_of"]


def check_before_launch(exp: Experiment, tracking_uri: str | None = None) -> Any:
    """Everything that can be checked without Ray: nothing is launched or written on failure.

    For the built-in task this loads the data set (once, on the driver) and returns it.
    """
    from hpo.validate import validate

    validate(exp, tracking_uri)
    return load_data(exp)


def load_data(exp: Experiment) -> Any:
    """The built-in task's data set, loaded and checked against the task (losses, models, metrics)."""
    if not exp.is_builtin:
        return None
    from hpo.train.task import load_task_data
    from hpo.validate import space_values

    return load_task_data(exp.task, space_values(exp), exp.metrics)


def load_data_meanwhile(exp: Experiment) -> Future:
    """Load the data in a thread while Ray starts (about a second of imports and parsing off
    the start-up path). A data error still comes before any trial, run directory or MLflow
    run exists; Ray, started meanwhile, is shut down again."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="hpo-data")
    try:
        return pool.submit(load_data, exp)
    finally:
        pool.shutdown(wait=False)


def builtin_task(exp: Experiment) -> dict[str, Any]:
    """The built-in task's fixed settings, with what the chosen scheduler needs (checkpoints for
    a scheduler that pauses or copies trials)."""
    from hpo.strategies import capabilities

    task = dict(exp.task)
    interval = capabilities(exp.strategy.spec(), exp.budget).checkpoint_interval
    if interval and not task.get("checkpoint_freq"):
        task["checkpoint_freq"] = interval
    return task


def report_plan(exp: Experiment, asked_in_worker: bool = False) -> ReportPlan:
    """The epochs the scheduler decides at, so the built-in task reports just those (and the
    others along with them): none without early stopping, ASHA its rungs, otherwise every epoch.
    None either when the trials ask the scheduler themselves (``asked_in_worker``, :mod:`hpo.decisions`)."""
    from hpo.strategies import capabilities
    from hpo.wire import ReportPlan

    steps = frozenset() if asked_in_worker else capabilities(exp.strategy.spec(), exp.budget).decision_steps
    if steps is None:
        return ReportPlan(None)
    return ReportPlan(frozenset(steps), exp.tracking.flush_interval_s / 2)  # live enough for the MLflow writer


def trainable_of(exp: Experiment, fn: Callable[..., Any] | None, data: Any, run_dir: str | None = None,
                 ask: Any = None) -> Any:
    """What Ray Tune runs per trial: the built-in task with its data (put in Ray's object store once),
    report plan and, given the search's ``run_dir``, where each completed trial keeps its final model
    (unless ``task.test_best`` is false: no best model is kept then) and, given ``ask``, the
    scheduler's decision table (:mod:`hpo.decisions`); or the user's function (``fn``, else the
    experiment's import path); with the trial's resources."""
    from ray import tune

    resources: dict[str, float] = {"cpu": exp.resources.cpu, "gpu": exp.resources.gpu}
    memory = exp.resources.memory_bytes
    if memory is not None:
        resources["memory"] = memory
    if exp.is_builtin:
        from hpo.train import train
        from hpo.wire import KeepModels

        task = builtin_task(exp)
        # Split once here (every fold too), put in Ray's object store once, read by every trial on every node.
        data.splits(int(task.get("cv_folds", 0)))
        threads = max(1, int(exp.resources.cpu))
        run = memory_capped(train, memory) if memory is not None else train
        keep = KeepModels(str(run_dir), exp.strategy.max_t) if run_dir and task.get("test_best", True) else None
        return tune.with_resources(tune.with_parameters(run, data=data, threads=threads, task=task,
                                                        plan=report_plan(exp, ask is not None), keep=keep,
                                                        ask=ask), resources)
    if fn is None:
        from hpo._imports import import_callable

        fn = exp.trainable if callable(exp.trainable) else import_callable(exp.trainable)
    return tune.with_resources(memory_capped(fn, memory) if memory is not None else fn, resources)


def memory_capped(fn: Callable[..., Any], extra_bytes: int) -> Callable[..., Any]:
    """``fn`` run with the worker process's data limit (``RLIMIT_DATA``: heap and private
    mappings, which numpy's and torch's CPU allocations are) set to what the process holds at the
    trial's start plus ``extra_bytes``: a trial that allocates more gets ``MemoryError`` (torch: a
    "can't allocate memory" error) and fails alone, instead of the machine's OOM killer picking a
    process. The limit is lifted again when the trial returns (a reused worker runs the next one)."""
    import functools

    @functools.wraps(fn)
    def capped(config: Any, **kwargs: Any) -> Any:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        limit = _data_bytes() + extra_bytes
        resource.setrlimit(resource.RLIMIT_DATA, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
        try:
            return fn(config, **kwargs)
        finally:
            resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))

    return capped


def _data_bytes() -> int:
    """The process's data segment now (``VmData`` of /proc/self/status), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0
