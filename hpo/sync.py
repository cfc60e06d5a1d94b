"""``hpo sync-mlflow``: replay a search from Ray's storage into MLflow, idempotently.

Each trial's terminal state comes from what the search saved (``trials.json`` once it ended,
else the ``outcomes.json`` it keeps while it runs), never from "the trial has a last result":
a killed search's pruned, cut and errored trials stay so, and its unfinished trials stay open
(``hpo resume`` continues them). Synced to another tracking store, the search gets a parent
run of its own there, and a second sync adds nothing. The search's Optuna study file
(``optuna.journal``, :mod:`hpo.study_file`) is rewritten from the same records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpo.config import Experiment
from hpo.plots import write_search_files
from hpo.results import Results, TrialRecord
from hpo.rundir import (
    OUTCOMES_FILE,
    find_run_dir,
    read_json,
    read_state,
    recorded_tracking_uri,
    saved_records,
    trial_histories,
)
from hpo.strategies import TrialOutcomes
from hpo.study_file import export_study
from hpo.tracking.search_record import search_tracker

__all__ = ["sync_mlflow"]


def _saved_ends(run_dir: Path, records: dict[str, TrialRecord]) -> tuple[TrialOutcomes, dict[str, tuple[str, Any]]]:
    """The search's outcomes and each ended trial's (terminal state, error text), as it saved them."""
    outcomes = TrialOutcomes()
    if records:
        outcomes.update({tid: r.pruned_at for tid, r in records.items() if r.pruned_at is not None},
                        {tid: (r.rung, r.rung_epoch) for tid, r in records.items()
                         if r.rung is not None and r.rung_epoch is not None},
                        {tid: (r.cut_at, r.cut_reason or "search stopped") for tid, r in records.items()
                         if r.cut_at is not None})
        return outcomes, {tid: (r.status, r.error) for tid, r in records.items()}
    saved = read_json(run_dir / OUTCOMES_FILE, {}) or {}
    outcomes.load(saved.get("outcomes", {}))
    return outcomes, {tid: (status, None) for tid, status in (saved.get("ended") or {}).items()}


def sync_mlflow(name_or_path: str, storage_path: str = "hpo_results", tracking_uri: str | None = None) -> Results:
    """Write every trial of a finished (or killed) search to MLflow.

    Runs and steps already in MLflow are found by their tags and skipped, so running it
    twice, or after a search that did log, adds nothing.
    """
    run_dir = find_run_dir(name_or_path, storage_path)
    state = read_state(run_dir)
    exp = Experiment.from_dict(state["experiment"])
    records = {r["trial_id"]: TrialRecord(**r) for r in saved_records(run_dir)}
    outcomes, ends = _saved_ends(run_dir, records)
    export_study(run_dir, exp, list(records.values()) or None)  # optuna.journal; a killed search's too
    tracker = search_tracker(exp, run_dir, outcomes, tracking_uri or recorded_tracking_uri(state, None),
                             write_files=write_search_files)
    tracker.start()
    histories = trial_histories(run_dir)
    for tid in sorted(histories.keys() | records.keys() | ends.keys()):
        record = records.get(tid)
        config, history = histories.get(tid, (record.config if record else {}, []))  # errored before any report
        tracker.replay(tid, config, history, end=ends.get(tid))
    results = Results(exp.name, exp.metrics, exp.modes, list(records.values()), str(run_dir))
    tracker.finish(results)
    results.mlflow_experiment_id, results.parent_run_id = tracker.experiment_id, tracker.parent_run_id
    return results
