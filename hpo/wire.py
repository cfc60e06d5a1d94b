"""The driver <-> worker wire protocol: the keys hpo adds to Ray Tune results and configs, and how
the driver reads them back (a result's steps, a packed trial's results, a trial's own metrics).

Nothing here imports Ray, so every layer may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DISK_FULL_KEY", "DONE_KEY", "END_KEY", "ERROR_KEY", "GPU_KEY", "HISTORY_KEY", "NODE_KEY", "NOT_METRICS",
           "PACK_KEY", "PRUNED_KEY", "RUNG_KEY", "STARTED_KEY", "STEP_KEY", "SUB_KEY", "TIME_KEY", "KeepModels",
           "ReportPlan", "is_packed", "result_steps", "split_result", "trial_metrics", "with_epoch_step"]

NODE_KEY = "hpo_node"
TIME_KEY = "hpo_time"  # wall-clock time of the report (Ray's own timestamp is whole seconds)
GPU_KEY = "hpo_gpu"  # the GPU(s) Ray gave the trial, "none" on CPU
STEP_KEY = "hpo_step"  # the trial's own step (epoch), when it is not Ray's count of reports
HISTORY_KEY = "hpo_history"  # earlier steps sent along with a result
STARTED_KEY = "hpo_started"  # wall-clock time the trial's own work began (after Ray handed it over)
PACK_KEY = "hpo_pack"  # a packed Ray trial's config: [[trial id, config], ...] (hpo.packing)
DONE_KEY = "hpo_pack_done"  # its trials that have ended: id -> status, last result (the driver keeps it current)
SUB_KEY = "hpo_sub"  # in each step of a packed trial: the id of the trial it belongs to
END_KEY = "hpo_sub_end"  # the step is its trial's last
ERROR_KEY = "hpo_sub_error"  # the trial raised: the last line of its traceback
DISK_FULL_KEY = "hpo_disk_full"  # the step's checkpoint could not be written: the storage path is full
PRUNED_KEY = "hpo_pruned"  # the scheduler asked from the worker stopped the trial at this step (hpo.decisions)
RUNG_KEY = "hpo_rung"  # [rung index, its step]: the highest rung the trial is recorded at (hpo.decisions)

# Ray's bookkeeping fields (ray.tune.result.AUTO_RESULT_KEYS, DEBUG_METRICS and friends):
# listed here so importing this module does not import Ray.
NOT_METRICS = frozenset({
    "training_iteration", "time_total_s", "episodes_total", "timesteps_total", "node_ip", "hostname", "pid",
    "time_this_iter_s", "timestamp", "date", "time_since_restore", "timesteps_since_restore",
    "iterations_since_restore", "config", "checkpoint_dir_name", "trial_id", "experiment_id", "done",
    "should_checkpoint", "experiment_tag", NODE_KEY, TIME_KEY, GPU_KEY, STEP_KEY, HISTORY_KEY, STARTED_KEY,
    SUB_KEY, END_KEY, ERROR_KEY, DISK_FULL_KEY, PRUNED_KEY, RUNG_KEY,
})


def result_steps(result: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(step, metrics) for every step one Ray result carries, oldest first.

    The built-in task sends the epochs between two scheduler decisions in one result (the
    earlier ones under ``hpo_history``); other trainables send one step per result.
    """
    entries = [*result.get(HISTORY_KEY, []), result]
    return [(int(e.get(STEP_KEY, result.get("training_iteration", 0))), e) for e in entries]


def with_epoch_step(result: dict[str, Any]) -> dict[str, Any]:
    """The result as schedulers must see it: ``training_iteration`` = the trial's own step."""
    return {**result, "training_iteration": result[STEP_KEY]} if STEP_KEY in result else result


def trial_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics a trial itself reported, without Ray's bookkeeping fields."""
    return {
        k: float(v)
        for k, v in result.items()
        if k not in NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def is_packed(config: dict[str, Any] | None) -> bool:
    """Whether a Ray trial's config carries several trials (:mod:`hpo.packing`)."""
    return bool(config) and PACK_KEY in config  # type: ignore[operator]


def split_result(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A packed trial's result as (trial id, result) pairs, one per trial it carries, in order.

    Each pair's result looks like an unpacked trial's: its last step at the top level, the
    earlier ones under ``hpo_history``, the node and GPU of the report.
    """
    entries = [*result.get(HISTORY_KEY, []), {k: v for k, v in result.items() if k != HISTORY_KEY}]
    groups: list[tuple[str, list[dict[str, Any]]]] = []
    for e in entries:
        sid = e.get(SUB_KEY)
        if sid is None:
            continue
        if not groups or groups[-1][0] != sid:
            groups.append((sid, []))
        groups[-1][1].append(e)
    out = []
    for sid, steps in groups:
        last = {k: v for k, v in steps[-1].items() if k in _STEP_FIELDS or not _is_ray_field(k)}
        for k in (NODE_KEY, GPU_KEY):
            if k in result:
                last[k] = result[k]
        last["trial_id"] = sid
        if len(steps) > 1:
            last[HISTORY_KEY] = [{k: v for k, v in s.items() if not _is_ray_field(k)} for s in steps[:-1]]
        out.append((sid, last))
    return out


_STEP_FIELDS = frozenset({STEP_KEY, TIME_KEY, STARTED_KEY, SUB_KEY, END_KEY, ERROR_KEY, PRUNED_KEY, RUNG_KEY})
# Ray's bookkeeping of the packed trial's report: not a property of any one trial in it
_RAY_FIELDS = frozenset({"training_iteration", "time_total_s", "time_this_iter_s", "time_since_restore",
                         "iterations_since_restore", "timestamp", "date", "done", "trial_id", "experiment_tag",
                         "config", "checkpoint_dir_name", "should_checkpoint", "timesteps_total", "episodes_total",
                         "timesteps_since_restore", "pid", "hostname", "node_ip", "experiment_id"})


def _is_ray_field(key: str) -> bool:
    return key in _RAY_FIELDS


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


@dataclass(frozen=True)
class KeepModels:
    """Where the built-in task keeps each trial's final model, so the search's end loads the best
    one instead of training it again (:func:`hpo.train.model_file.trial_model_files`).

    Attributes:
        run_dir: the search's run directory (shared storage on a cluster of several hosts: every
            node writes there, as Ray writes checkpoints).
        max_t: the step a scheduler ends every trial at (``strategy.max_t``) when that comes before
            the trial's last epoch: a trial reaching it has completed its budget.
    """

    run_dir: str
    max_t: int | None = None
