"""`hpo sync-mlflow` replays a search from Ray's storage into MLflow, idempotently."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import optuna
import pytest

import hpo
from hpo import Float
from hpo.study_file import STUDY_FILE
from hpo.sync import sync_mlflow
from tests import trainables
from tests.conftest import hpo_cli

pytestmark = pytest.mark.slow


def _counts(db_path, parent_run_id):
    db = sqlite3.connect(db_path)
    children = [r for (r,) in db.execute(
        "SELECT run_uuid FROM tags WHERE key='mlflow.parentRunId' AND value=?", (parent_run_id,))]
    points = {r: sorted(s for (s,) in db.execute(
        "SELECT step FROM metrics WHERE run_uuid=? AND key='loss'", (r,))) for r in children}
    statuses = {r: db.execute("SELECT value FROM tags WHERE run_uuid=? AND key='hpo.status'", (r,)).fetchone()[0]
                for r in children}
    runs = db.execute("SELECT count(*) FROM runs").fetchone()[0]
    return children, points, statuses, runs


def test_sync_mlflow_replays_an_untracked_search_once(tmp_path, ray_address):
    results = hpo.run(
        name="sync", trainable=trainables.fails_when_large, space={"x": Float(0.0, 1.0), "steps": 4},
        metric="loss", mode="min", strategy={"searcher": "random", "scheduler": "asha", "max_t": 4, "seed": 1},
        num_samples=8, max_concurrent=2, storage_path=str(tmp_path / "runs"), tracking={"enabled": False},
        address=ray_address,
    )
    assert results.parent_run_id is None
    db = tmp_path / "sync.db"
    (Path(results.storage_path) / STUDY_FILE).unlink()  # as a search that ran before hpo wrote its study
    synced = sync_mlflow(results.storage_path, tracking_uri=f"sqlite:///{db}")
    study = optuna.load_study(study_name="sync", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(Path(results.storage_path) / STUDY_FILE))))
    assert sorted(t.state.name for t in study.trials) == sorted(
        {"completed": "COMPLETE", "pruned": "PRUNED", "errored": "FAIL"}[t.status] for t in results.trials)
    children, points, statuses, runs = _counts(db, synced.parent_run_id)
    assert len(children) == 8 and runs == 9
    by_status = sorted(statuses.values())
    assert sum(s.startswith("errored: ValueError: x too large") for s in by_status) == results.count("errored")
    assert sum(s.startswith("pruned at epoch") for s in by_status) == results.count("pruned")
    assert sum(s == "completed" for s in by_status) == results.count("completed")
    expected_steps = sorted(sorted(range(1, t.steps + 1)) for t in results.trials)
    assert sorted(points.values()) == expected_steps
    # a second sync, through the CLI, adds nothing
    out = hpo_cli("sync-mlflow", results.storage_path, "--tracking-uri", f"sqlite:///{db}", "--json", cwd=tmp_path)
    again = json.loads(out.stdout.strip().splitlines()[-1])
    assert again["parent_run_id"] == synced.parent_run_id
    assert _counts(db, synced.parent_run_id) == (children, points, statuses, runs)
