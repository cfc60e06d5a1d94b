"""Two searches at once on one machine, sharing one MLflow SQLite store and one storage path:
both complete with exact counts and no cross-talk ("database is locked" never reaches the user)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hpo.rundir import find_run_dir
from tests.conftest import _env, start_hpo
from tests.test_lifecycle_search import check_records


@pytest.mark.slow  # processes that import MLflow and torch: ~16 s
def test_a_process_killed_while_mlflow_creates_a_new_sqlite_store_leaves_none_behind(tmp_path, monkeypatch):
    """MLflow creates and migrates a new SQLite store in place: a search killed then left a
    half-migrated file that no later process could open ("table logged_models already exists").
    hpo migrates once per MLflow version, into a template in its cache directory, in a temporary
    file renamed into place; a new store is a copy of it. A process killed during that migration
    leaves neither a store nor a template; the next one makes both."""
    import sqlite3

    from mlflow.tracking import MlflowClient

    from hpo.tracking.mlflow import sqlite_init_lock

    monkeypatch.chdir(tmp_path)  # where MLflow puts the Default experiment's artifacts (./mlruns)
    db, cache = tmp_path / "mlflow.db", tmp_path / "cache"
    code = ("from hpo.tracking.mlflow import sqlite_init_lock\n"
            f"with sqlite_init_lock('sqlite:///{db}'):\n    pass\n")
    env = {**_env(), "XDG_CACHE_HOME": str(cache)}  # no template yet: this process migrates one
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.time() + 60
    while not list(cache.glob("hpo/*.creating")):  # MLflow is migrating the template now
        assert proc.poll() is None and time.time() < deadline, "no store was being created"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not db.exists() and not [p for p in cache.glob("hpo/*") if ".creating" not in p.name]
    elsewhere = tmp_path / "elsewhere"  # the template is made from another working directory
    elsewhere.mkdir()
    made = subprocess.run([sys.executable, "-c", code.replace(str(db), str(elsewhere / "first.db"))], env=env,
                          capture_output=True, text=True, timeout=120, cwd=elsewhere)
    assert made.returncode == 0, made.stderr[-2000:]
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    with sqlite_init_lock(f"sqlite:///{db}"):  # a copy of the template
        client = MlflowClient(f"sqlite:///{db}")
        assert [e.name for e in client.search_experiments()] == ["Default"]
        assert client.get_experiment("0").artifact_location == str(tmp_path / "mlruns" / "0")  # as MLflow makes it
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".creating")) == [
        "cache", "elsewhere", "mlflow.db", "mlflow.db.hpo-lock"]
    template = next(cache.glob("hpo/mlflow-*-empty.db"))
    # the copy holds what MLflow's own migrations make: every table, its columns and its rows
    direct = tmp_path / "direct.db"
    MlflowClient(f"sqlite:///{direct}").search_experiments()

    def contents(path: Path) -> dict[str, Any]:
        con = sqlite3.connect(path)
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        # columns and rows (the CREATE text is no measure: constraints come in a per-process hash order)
        out = {t: (con.execute(f'PRAGMA table_info("{t}")').fetchall(), con.execute(f'SELECT * FROM "{t}"').fetchall())
               for t in tables if t != "experiments"}
        out["experiments"] = con.execute("SELECT experiment_id, name, artifact_location, lifecycle_stage, workspace "
                                         "FROM experiments").fetchall()
        con.close()
        return out

    assert contents(db) == contents(direct)
    assert contents(template)["alembic_version"] == contents(direct)["alembic_version"]


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
