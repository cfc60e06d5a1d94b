"""The built-in task as a search runs it: its settings with what the strategy needs, the epochs
it reports at, and its data set, loaded and checked before anything is launched."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpo.config import Experiment
    from hpo.wire import ReportPlan

__all__ = ["builtin_task", "check_before_launch", "load_data", "load_data_meanwhile", "report_plan"]


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


def report_plan(exp: Experiment) -> ReportPlan:
    """The epochs the scheduler decides at, so the built-in task reports just those (and the
    others along with them): none without early stopping, ASHA its rungs, otherwise every epoch."""
    from hpo.strategies import capabilities
    from hpo.wire import ReportPlan

    steps = capabilities(exp.strategy.spec(), exp.budget).decision_steps
    if steps is None:
        return ReportPlan(None)
    return ReportPlan(frozenset(steps), exp.tracking.flush_interval_s / 2)  # live enough for the MLflow writer
