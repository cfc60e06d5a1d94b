"""Two searches at once on one machine, sharing one MLflow SQLite store and one storage path:
both complete with exact counts and no cross-talk ("database is locked" never reaches the user)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hpo.rundir import find_run_dir
from tests.conftest import _env, start_hpo
from tests.test_lifecycle_search import check_records


def test_a_process_killed_while_mlflow_creates_a_new_sqlite_store_leaves_none_behind(tmp_path):
    """MLflow creates and migrates a new SQLite store in place: a search killed then left a
    half-migrated file that no later process could open ("table logged_models already exists").
    hpo builds a new store in a temporary file and renames it into place."""
    from mlflow.tracking import MlflowClient

    from hpo.tracking.mlflow import sqlite_init_lock

    db = tmp_path / "mlflow.db"
    code = ("from hpo.tracking.mlflow import sqlite_init_lock\n"
            f"with sqlite_init_lock('sqlite:///{db}'):\n    pass\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=_env(), stderr=subprocess.DEVNULL)
    creating = tmp_path / f"mlflow.db.{proc.pid}.creating"
    deadline = time.time() + 60
    while not creating.exists():  # MLflow is migrating it now
        assert proc.poll() is None and time.time() < deadline, "no store was being created"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not db.exists()
    with sqlite_init_lock(f"sqlite:///{db}"):
        client = MlflowClient(f"sqlite:///{db}")
        assert [e.name for e in client.search_experiments()] == ["Default"]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".creating")) == [
        "mlflow.db", "mlflow.db.hpo-lock"]


@pytest.mark.slow
def test_two_searches_share_one_sqlite_store_and_one_storage_path(tmp_path, ray_address):
    db = tmp_path / "mlflow.db"
    procs = []
    for name, n in (("left", 10), ("right", 12)):
        exp = tmp_path / f"{name}.yaml"
        exp.write_text(json.dumps({
            "name": name, "trainable": "tests.trainables:quadratic", "metric": "loss", "mode": "min",
            "space": {"x": {"type": "float", "low": 0, "high": 1}, "steps": 3}, "num_samples": n,
            "strategy": {"searcher": "tpe", "seed": 1}, "max_concurrent": 1,
            "tracking": {"tracking_uri": f"sqlite:///{db}", "flush_interval_s": 0.2}}))
        procs.append((name, n, start_hpo(tmp_path, "run", str(exp), "--address", ray_address, "--json")))
    # both must have ended before either is checked: check_records finds no run still RUNNING in the store
    ended = [(name, n, proc, *proc.communicate(timeout=300)) for name, n, proc in procs]
    for name, n, proc, out, err in ended:
        assert proc.returncode == 0, err[-3000:]
        assert "database is locked" not in err
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["num_trials"] == n
        run_dir = find_run_dir(name, str(tmp_path / "hpo_results"))
        statuses = check_records(run_dir, db, "loss", total=n)
        assert set(statuses.values()) == {"completed"}
