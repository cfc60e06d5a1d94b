"""Helpers over Ray Tune results and trials, shared by results, tracking and progress."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpo.session import (
    END_KEY,
    ERROR_KEY,
    GPU_KEY,
    HISTORY_KEY,
    NODE_KEY,
    STARTED_KEY,
    STEP_KEY,
    SUB_KEY,
    TIME_KEY,
)

# Ray's bookkeeping fields (ray.tune.result.AUTO_RESULT_KEYS, DEBUG_METRICS and friends):
# listed here so importing this module does not import Ray.
NOT_METRICS = frozenset({
    "training_iteration", "time_total_s", "episodes_total", "timesteps_total", "node_ip", "hostname", "pid",
    "time_this_iter_s", "timestamp", "date", "time_since_restore", "timesteps_since_restore",
    "iterations_since_restore", "config", "checkpoint_dir_name", "trial_id", "experiment_id", "done",
    "should_checkpoint", "experiment_tag", NODE_KEY, TIME_KEY, GPU_KEY, STEP_KEY, HISTORY_KEY, STARTED_KEY,
    SUB_KEY, END_KEY, ERROR_KEY,
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


def error_text(trial: Any) -> str:
    """The last line of a failed trial's traceback (exception type and message)."""
    message = getattr(trial, "error_msg", None)  # a packed trial's own error (hpo.packing.SubTrial)
    if message:
        return str(message)[:500]
    try:
        path = trial.error_file
        if path and Path(path).exists():
            lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
            if lines:
                return lines[-1][:500]
    except OSError:
        pass
    return "trial raised an exception"
