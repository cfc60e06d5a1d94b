"""``hpo sync-mlflow``: replay a search from Ray's storage into MLflow, idempotently."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hpo.config import Experiment
from hpo.packing import split_result
from hpo.results import Results, TrialRecord
from hpo.session import PACK_KEY
from hpo.strategies import TrialOutcomes


def _trial_histories(run_dir: Path) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """trial id -> (config, results in order), from each trial directory's ``result.json``."""
    out: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for path in sorted(run_dir.glob("*/result.json")):
        lines = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
        if not lines:
            continue
        tid = lines[0]["trial_id"]
        params = path.with_name("params.json")
        config = json.loads(params.read_text()) if params.exists() else lines[0].get("config", {})
        if PACK_KEY not in config:
            out[tid] = (config, lines)
            continue
        for sid, sub_config in config[PACK_KEY]:  # a packed Ray trial: each trial it carries on its own
            out[sid] = (sub_config, [])
        for line in lines:
            for sid, sub in split_result(line):
                if sid in out:
                    out[sid][1].append(sub)
    return {tid: v for tid, v in out.items() if v[1]}  # a trial that never reported is in trials.json, if anywhere


def sync_mlflow(name_or_path: str, storage_path: str = "hpo_results", tracking_uri: str | None = None) -> Results:
    """Write every trial of a finished (or killed) search to MLflow.

    Runs and steps already in MLflow are found by their tags and skipped, so running it
    twice, or after a search that did log, adds nothing.
    """
    from hpo.runner import STATE_FILE, TRIALS_FILE, _tracker, find_run_dir

    run_dir = find_run_dir(name_or_path, storage_path)
    state = json.loads((run_dir / STATE_FILE).read_text())
    exp = Experiment.from_dict(state["experiment"])
    trials_file = run_dir / TRIALS_FILE
    saved = json.loads(trials_file.read_text())["trials"] if trials_file.exists() else []
    records = {r["trial_id"]: TrialRecord(**r) for r in saved}
    outcomes = TrialOutcomes()
    outcomes.update({tid: r.pruned_at for tid, r in records.items() if r.pruned_at is not None},
                    {tid: (r.rung, r.rung_epoch) for tid, r in records.items()
                     if r.rung is not None and r.rung_epoch is not None})
    tracker = _tracker(exp, run_dir, outcomes, tracking_uri or state.get("tracking_uri"))
    tracker.start()
    histories = _trial_histories(run_dir)
    for tid in sorted(histories.keys() | records.keys()):
        record = records.get(tid)
        config, history = histories.get(tid, (record.config if record else {}, []))  # errored before any report
        tracker.replay(tid, config, history, errored=record.error if record and record.status == "errored" else None)
    results = Results(exp.name, exp.metrics, exp.modes, list(records.values()), str(run_dir))
    tracker.finish(results)
    results.mlflow_experiment_id, results.parent_run_id = tracker.experiment_id, tracker.parent_run_id
    return results
